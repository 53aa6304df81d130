package queue

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-mail/levee/mail"
)

// Wire format of a queued message: the body is the raw message exactly as
// received; the envelope travels in headers, so a consumer (or an operator
// with the nats CLI) can read it without parsing the body.
const (
	HeaderMsgID = jetstream.MsgIDHeader // m.ID: JetStream's duplicate detection
	// HeaderID carries m.ID when Nats-Msg-Id had to differ from it: a
	// replayed dead letter gets a Nats-Msg-Id of its own, or JetStream
	// would drop it as a duplicate of the original within the window.
	HeaderID         = "Levee-Id"
	HeaderMailFrom   = "Levee-Mail-From"
	HeaderRcptTo     = "Levee-Rcpt-To" // one value per recipient
	HeaderRemoteAddr = "Levee-Remote-Addr"
	HeaderHelo       = "Levee-Helo"
	HeaderReceivedAt = "Levee-Received-At" // RFC 3339 with nanoseconds

	// Added by a dead letter (Delivery.GiveUp).
	HeaderDeadReason     = "Levee-Dead-Reason"
	HeaderDeadAt         = "Levee-Dead-At"
	HeaderDeadStream     = "Levee-Dead-Stream"
	HeaderDeadSeq        = "Levee-Dead-Stream-Seq"
	HeaderDeadSubject    = "Levee-Dead-Subject"
	HeaderDeadDeliveries = "Levee-Dead-Deliveries"

	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
	headerExpStream   = jetstream.ExpectedStreamHeader
)

// maxDomainSubject bounds the domain part of a subject; real domains are at
// most 253 characters.
const maxDomainSubject = 255

// subjectFor is "<prefix>.<domain of the first recipient>", the domain made
// into valid subject tokens: lower case, dots stay separators, anything a
// subject cannot hold becomes '_', empty tokens become "_".
func subjectFor(prefix string, to []string) string {
	d := ""
	if len(to) > 0 {
		d = mail.Domain(to[0])
	}
	return prefix + "." + subjectTokens(d)
}

func subjectTokens(domain string) string {
	domain = strings.ToLower(domain)
	if len(domain) > maxDomainSubject {
		domain = domain[:maxDomainSubject]
	}
	var b strings.Builder
	b.Grow(len(domain) + 2)
	tokenLen := 0
	for i := 0; i < len(domain); i++ {
		c := domain[i]
		switch {
		case c == '.':
			if tokenLen == 0 {
				b.WriteByte('_')
			}
			b.WriteByte('.')
			tokenLen = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			// Wildcards, whitespace, controls and any non-ASCII byte: the
			// subject only routes mail, so a lossy token is fine.
			b.WriteByte('_')
		}
		tokenLen++
	}
	if tokenLen == 0 {
		b.WriteByte('_')
	}
	return b.String()
}

// headerValue keeps a value on one header line: the NATS protocol has no
// escaping, so CR, LF and NUL would corrupt the frame.
func headerValue(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// encode builds the NATS message for m on partition p (without batch
// headers).
func encode(p Partition, m *mail.Message) *nats.Msg {
	h := nats.Header{}
	h.Set(HeaderMsgID, headerValue(m.ID))
	h.Set(headerExpStream, p.Stream)
	h.Set(HeaderMailFrom, headerValue(m.Envelope.From))
	for _, r := range m.Envelope.To {
		h.Add(HeaderRcptTo, headerValue(r))
	}
	if m.Envelope.RemoteAddr != "" {
		h.Set(HeaderRemoteAddr, headerValue(m.Envelope.RemoteAddr))
	}
	if m.Envelope.Helo != "" {
		h.Set(HeaderHelo, headerValue(m.Envelope.Helo))
	}
	at := m.Envelope.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	h.Set(HeaderReceivedAt, at.UTC().Format(time.RFC3339Nano))
	return &nats.Msg{Subject: subjectFor(p.Prefix, m.Envelope.To), Header: h, Data: m.Raw}
}

// decode reads a consumed message back into a mail.Message (ID, Envelope,
// Raw, Size). Raw aliases the message's data. A message without Levee's
// headers yields an error wrapping ErrMalformed; the worker gives it up.
func decode(m jetstream.Msg) (*mail.Message, error) {
	h := m.Headers()
	id := h.Get(HeaderID)
	if id == "" {
		id = h.Get(HeaderMsgID)
	}
	if id == "" {
		return nil, malformed("", "no "+HeaderMsgID+" header")
	}
	if _, ok := h[HeaderMailFrom]; !ok {
		return nil, malformed(id, "no "+HeaderMailFrom+" header")
	}
	to := h.Values(HeaderRcptTo)
	if len(to) == 0 {
		return nil, malformed(id, "no "+HeaderRcptTo+" header")
	}
	at, err := time.Parse(time.RFC3339Nano, h.Get(HeaderReceivedAt))
	if err != nil {
		return nil, malformed(id, fmt.Sprintf("bad %s header: %v", HeaderReceivedAt, err))
	}
	raw := m.Data()
	return &mail.Message{
		ID: id,
		Envelope: mail.Envelope{
			From:       h.Get(HeaderMailFrom),
			To:         append([]string(nil), to...),
			RemoteAddr: h.Get(HeaderRemoteAddr),
			Helo:       h.Get(HeaderHelo),
			ReceivedAt: at,
		},
		Raw:  raw,
		Size: int64(len(raw)),
	}, nil
}
