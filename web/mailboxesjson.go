package web

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/levee-mail/levee/store"
)

// appendMailboxesJSON is the body of GET /api/v1/mailboxes, the same bytes
// writeJSON would make of {"mailboxes": mbs}, written by hand: the folder
// list comes with every page a mailbox UI shows, and encoding/json took
// about 2 µs a mailbox (reflection and time.Time's MarshalJSON), as long
// as reading them from SQLite. TestMailboxesJSONIsEncodingJSONs holds it
// to encoding/json's output.
func appendMailboxesJSON(b []byte, mbs []store.Mailbox) []byte {
	b = append(b, `{"mailboxes":[`...)
	for i, m := range mbs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"address":`...)
		b = appendJSONString(b, m.Address)
		b = append(b, `,"messages":`...)
		b = strconv.AppendInt(b, m.Messages, 10)
		b = append(b, `,"latest_at":`...)
		b = appendJSONTime(b, m.LatestAt)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendJSONString quotes s as encoding/json does without HTML escaping:
// printable ASCII other than '"' and '\' as is; anything else (control
// bytes, non-ASCII, invalid UTF-8) is left to encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime is time.Time's MarshalJSON (RFC 3339 with the fraction's
// trailing zeros cut) for the years it can encode; any other is left to it.
func appendJSONTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		out, err := t.MarshalJSON()
		if err != nil {
			return append(b, "null"...)
		}
		return append(b, out...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
