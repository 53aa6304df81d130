package mail

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
	"time"
)

// Envelope is what the SMTP transaction said about a message, as opposed to
// what its headers say.
type Envelope struct {
	// From is the reverse-path (MAIL FROM); empty for the null sender "<>".
	From string `json:"from"`
	// To holds the accepted forward-paths (RCPT TO), in the order given.
	To []string `json:"to"`
	// RemoteAddr is the sending client's address (ip:port).
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Helo is the name the client gave in HELO/EHLO.
	Helo string `json:"helo,omitempty"`
	// ReceivedAt is when the receiver took the whole DATA, before the 250.
	ReceivedAt time.Time `json:"received_at"`
}

// Message is one queued message: the envelope, the exact bytes as queued
// (including Levee's Received header) and, once parsed, its content.
type Message struct {
	// ID identifies the message across retransmissions and redeliveries; see ID.
	ID       string   `json:"id"`
	Envelope Envelope `json:"envelope"`
	// Raw is the message exactly as queued and stored.
	Raw []byte `json:"-"`
	// Size is len(Raw).
	Size int64 `json:"size"`
	// Parsed is the content as enmime read it; nil until parsed.
	Parsed *Parsed `json:"parsed,omitempty"`
	// StoredAt is set by the store when the message was first committed.
	StoredAt time.Time `json:"stored_at"`
}

// Parsed is the content of a message as read from its MIME structure.
type Parsed struct {
	// Headers are the top-level headers, keys in canonical MIME form.
	Headers     map[string][]string `json:"headers"`
	Subject     string              `json:"subject"`
	From        string              `json:"from"`
	MessageID   string              `json:"message_id,omitempty"`
	Date        time.Time           `json:"date,omitzero"`
	Text        string              `json:"text"`
	HTML        string              `json:"html"`
	Attachments []Attachment        `json:"attachments"`
	// Warnings lists what the parser found malformed but tolerated. Messy
	// mail is stored, never rejected for being messy.
	Warnings []string `json:"warnings,omitempty"`
	// HeadersOnly says the body was not parsed (over the parse limits, or
	// the MIME parser failed): only the headers were read.
	HeadersOnly bool `json:"-"`
}

// Attachment is one part of a message that is not its body: an attached or
// inline file, a signature, an image of a multipart/related, a forwarded
// message (message/rfc822). The body's text/plain and text/html parts are
// Text and HTML, not attachments. Summaries count these.
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	ContentID   string `json:"content_id,omitempty"`
	Size        int64  `json:"size"`
	Content     []byte `json:"-"`
}

// ID derives a message's identity from its envelope sender, its recipients
// (case-folded, in any order) and the body exactly as the client sent it —
// without Levee's own Received header, which carries a timestamp. An MTA that
// retransmits a message after a lost 250 therefore produces the same ID, and
// JetStream's duplicate window and the store's unique key both catch it.
func ID(from string, to []string, body []byte) string { return id(from, to, "", body) }

// id hashes the envelope, then salt (if any), then the body.
func id(from string, to []string, salt string, body []byte) string {
	rcpts := make([]string, len(to))
	for i, r := range to {
		rcpts[i] = strings.ToLower(r)
	}
	sort.Strings(rcpts)
	h := sha256.New()
	h.Write([]byte(strings.ToLower(from)))
	h.Write([]byte{0})
	for _, r := range rcpts {
		h.Write([]byte(r))
		h.Write([]byte{0})
	}
	h.Write([]byte{0})
	if salt != "" {
		h.Write([]byte(salt))
		h.Write([]byte{0})
	}
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)[:20])
}

// UndatedID is ID for a message with neither a Message-ID nor a Date: the
// day it arrived (UTC) is part of its identity. Such a message's content
// alone does not tell a retransmission from the same alert sent again
// tomorrow, and with ID alone tomorrow's was merged into today's as a
// duplicate, forever. A retransmission (after a lost 250) comes within
// minutes and gets the same day, unless it straddles midnight UTC.
func UndatedID(from string, to []string, body []byte, arrived time.Time) string {
	return id(from, to, "undated "+arrived.UTC().Format(time.DateOnly), body)
}

// Domain returns the lower-cased domain part of an address, or "" if it has none.
func Domain(address string) string {
	at := strings.LastIndexByte(address, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(address[at+1:])
}
