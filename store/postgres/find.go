package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/levee-mail/levee/store"
)

// messageIDPrefix is how many characters of a Message-ID the
// messages_by_message_id index holds (see the first migration).
const messageIDPrefix = 500

// findSQL narrows by the indexed prefix ($1), then compares whole values ($2).
const findSQL = `SELECT stored_at, id, from_header, subject, date, message_id, size, attachment_count, received_at
	FROM messages
	WHERE substr(message_id, 1, 500) = ANY($1::text[]) AND message_id = ANY($2::text[])
	ORDER BY stored_at, id`

// FindByMessageID reads every message whose Message-ID header is one of
// ids. Values are cleaned as stored headers were, and results are keyed by
// the values as given.
func (s *Store) FindByMessageID(ctx context.Context, ids []string) (map[string][]store.Summary, error) {
	if len(ids) > store.MaxLookup {
		return nil, fmt.Errorf("postgres: find by message-id: %d values, at most %d: %w", len(ids), store.MaxLookup, store.ErrInvalid)
	}
	out := map[string][]store.Summary{}
	if len(ids) == 0 {
		return out, nil
	}
	asked := make(map[string][]string, len(ids)) // stored form -> values given
	var values, prefixes []string
	for _, id := range ids {
		v := clean(id)
		if _, ok := asked[v]; !ok {
			values = append(values, v)
			prefixes = append(prefixes, prefix(v, messageIDPrefix))
		}
		if !slices.Contains(asked[v], id) {
			asked[v] = append(asked[v], id)
		}
	}
	rows, err := s.read.Query(ctx, findSQL, prefixes, values)
	if err != nil {
		return nil, wrap(ctx, "find by message-id", err)
	}
	defer rows.Close()
	for rows.Next() {
		sum, err := scanSummary(rows)
		if err != nil {
			return nil, wrap(ctx, "find by message-id", err)
		}
		for _, id := range asked[sum.MessageID] {
			out[id] = append(out[id], sum)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, "find by message-id", err)
	}
	return out, nil
}

// prefix is PostgreSQL's substr(s, 1, n) for valid UTF-8: the first n
// characters.
func prefix(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
