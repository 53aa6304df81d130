package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/levee-mail/levee/store"
)

// TestMailboxesJSONIsEncodingJSONs: the hand-written folder list is what
// encoding/json makes of it (as writeJSON encodes, without HTML escaping),
// for addresses that need escaping and for every kind of time.
func TestMailboxesJSONIsEncodingJSONs(t *testing.T) {
	at := time.Date(2026, 12, 7, 3, 22, 10, 123456000, time.UTC)
	cases := [][]store.Mailbox{
		nil,
		{},
		{{Address: "customer1@example.com", Messages: 3, LatestAt: at}},
		{
			{Address: "plain@example.com", Messages: 0},
			{Address: `"quoted\"local"@example.com`, Messages: 1, LatestAt: at.Truncate(time.Second)},
			{Address: "tab\there@example.com", Messages: 2, LatestAt: at.Truncate(time.Millisecond)},
			{Address: "<html&>@example.com", Messages: 3, LatestAt: at.In(time.FixedZone("x", 3600))},
			{Address: "jörg@bücher.example", Messages: 1 << 40, LatestAt: time.UnixMicro(1)},
			{Address: "bad\xffutf8@example.com\u2028", Messages: -1, LatestAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
			{Address: "", Messages: 5, LatestAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
	}
	for i, mbs := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			want := mbs
			if want == nil {
				want = []store.Mailbox{}
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(struct {
				Mailboxes []store.Mailbox `json:"mailboxes"`
			}{want}); err != nil {
				// encoding/json refuses a year past 9999; so must we not
				// write garbage: the output must still be valid JSON.
				got := appendMailboxesJSON(nil, mbs)
				if !json.Valid(got) {
					t.Fatalf("invalid JSON for a time encoding/json refuses: %s", got)
				}
				return
			}
			if got := appendMailboxesJSON(nil, mbs); !bytes.Equal(got, buf.Bytes()) {
				t.Fatalf("hand-written:\n%s\nencoding/json:\n%s", got, buf.Bytes())
			}
		})
	}
}

// BenchmarkMailboxesJSON: 500 mailboxes, as in make surge, by hand and by
// encoding/json.
func BenchmarkMailboxesJSON(b *testing.B) {
	var mbs []store.Mailbox
	for i := range 500 {
		mbs = append(mbs, store.Mailbox{Address: fmt.Sprintf("customer%d@example.com", i), Messages: int64(i * 37), LatestAt: time.UnixMicro(1765000000123456 + int64(i)).UTC()})
	}
	b.Run("by=hand", func(b *testing.B) {
		for b.Loop() {
			_ = appendMailboxesJSON(nil, mbs)
		}
	})
	b.Run("by=encoding/json", func(b *testing.B) {
		for b.Loop() {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(struct {
				Mailboxes []store.Mailbox `json:"mailboxes"`
			}{mbs})
		}
	})
}
