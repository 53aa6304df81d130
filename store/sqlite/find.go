package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/levee-mail/levee/store"
)

// FindByMessageID reads every message whose Message-ID header is one of ids,
// through the messages_by_message_id index.
func (s *Store) FindByMessageID(ctx context.Context, ids []string) (map[string][]store.Summary, error) {
	if len(ids) > store.MaxLookup {
		return nil, fmt.Errorf("sqlite: find by message-id: %d values, at most %d: %w", len(ids), store.MaxLookup, store.ErrInvalid)
	}
	out := map[string][]store.Summary{}
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := `SELECT stored_at, id, from_header, subject, date, message_id, size, attachment_count, received_at
		FROM messages WHERE message_id IN (?` + strings.Repeat(",?", len(ids)-1) + `) ORDER BY stored_at, id`
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap(ctx, "find by message-id", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sum store.Summary
		var stored int64
		var date, received sql.NullInt64
		if err := rows.Scan(&stored, &sum.ID, &sum.From, &sum.Subject, &date, &sum.MessageID, &sum.Size,
			&sum.Attachments, &received); err != nil {
			return nil, wrap(ctx, "find by message-id", err)
		}
		sum.Date, sum.ReceivedAt = fromMicros(date), fromMicros(received)
		sum.StoredAt = fromMicros(sql.NullInt64{Int64: stored, Valid: true})
		out[sum.MessageID] = append(out[sum.MessageID], sum)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, "find by message-id", err)
	}
	return out, nil
}
