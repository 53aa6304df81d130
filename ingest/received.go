package ingest

import (
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxTokenLen bounds client-supplied text (HELO name, recipient) copied into
// the header, keeping every folded line far below RFC 5322's 998 octets.
const maxTokenLen = 255

type receivedInfo struct {
	helo     string // HELO/EHLO argument, untrusted
	remote   string // client ip:port
	hostname string // our name
	id       string
	rcpt     string // the single recipient, or "" to leave the "for" clause out
	utf8     bool   // SMTPUTF8 transaction: UTF-8 allowed in the header (RFC 6532)
	tls      string // after STARTTLS, tlsComment's note of version and cipher; else ""
	at       time.Time
}

// receivedHeader builds the trace header of RFC 5321 section 4.4, folded
// like common MTAs do (one clause per line, CRLF + TAB):
//
//	Received: from client.example ([192.0.2.1])
//		by mx.example.org (Levee) with ESMTP id 0123...
//		for <user@example.org>; Mon, 02 Jan 2006 15:04:05 +0000
//
// The "from" Extended-Domain is the HELO name with the TCP-info address
// literal of the connection; the protocol is ESMTP, or UTF8SMTP when the
// client used SMTPUTF8 (RFC 6531 section 3.7.3), with an S after STARTTLS
// (RFC 3848), and then a comment names the TLS version and cipher as
// Postfix does. The "for" clause names a
// recipient only when there is exactly one, so a message to many does not
// disclose the others. Client text is reduced to safe characters: a CR, LF
// or parenthesis from a client can never shape the header.
func receivedHeader(in receivedInfo) []byte {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	helo := sanitizeToken(in.helo, in.utf8)
	if helo == "" {
		helo = "unknown"
	}
	b.WriteString(helo)
	if lit := addressLiteral(in.remote); lit != "" {
		b.WriteString(" (")
		b.WriteString(lit)
		b.WriteString(")")
	}
	if in.tls != "" {
		b.WriteString("\r\n\t(")
		b.WriteString(in.tls)
		b.WriteString(")")
	}
	b.WriteString("\r\n\tby ")
	b.WriteString(in.hostname)
	b.WriteString(" (Levee) with ")
	if in.utf8 {
		b.WriteString("UTF8SMTP")
	} else {
		b.WriteString("ESMTP")
	}
	if in.tls != "" {
		b.WriteString("S") // RFC 3848 ESMTPS, RFC 6531 UTF8SMTPS
	}
	b.WriteString(" id ")
	b.WriteString(in.id)
	if rcpt := sanitizeAddress(in.rcpt, in.utf8); rcpt != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(rcpt)
		b.WriteString(">; ")
	} else {
		b.WriteString(";\r\n\t")
	}
	b.WriteString(in.at.UTC().Format(time.RFC1123Z)) // RFC 5322 date-time
	b.WriteString("\r\n")
	return []byte(b.String())
}

// addressLiteral is the RFC 5321 address literal of an ip:port, or "" if
// the address is not an IP (a pipe in tests).
func addressLiteral(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return "[IPv6:" + a.String() + "]"
	}
	return "[" + a.String() + "]"
}

// sanitizeToken keeps characters that may stand in a header atom: visible
// ASCII other than the comment, angle and separator characters, and (only in
// an SMTPUTF8 transaction) printable non-ASCII. Others become '?'.
func sanitizeToken(s string, allowUTF8 bool) string {
	return sanitize(s, allowUTF8, "()<>;\\\"")
}

// sanitizeAddress returns addr if every character of it is safe inside
// "for <...>", else "": a mangled address would be worse than none.
func sanitizeAddress(addr string, allowUTF8 bool) string {
	if addr == "" || len(addr) > maxTokenLen {
		return ""
	}
	if sanitize(addr, allowUTF8, "<>\\\"") != addr {
		return ""
	}
	return addr
}

func sanitize(s string, allowUTF8 bool, specials string) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= maxTokenLen || i >= 4*maxTokenLen {
			break
		}
		switch {
		case r == utf8.RuneError:
			b.WriteByte('?')
		case r > 0x20 && r < 0x7f && !strings.ContainsRune(specials, r):
			b.WriteRune(r)
		case r >= 0x80 && allowUTF8 && unicode.IsGraphic(r) && !unicode.IsSpace(r):
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// prependHeader puts hdr in front of the body that readBody left after
// receivedHeadroom spare bytes, copying only if the header does not fit.
func prependHeader(buf, hdr []byte) []byte {
	if len(hdr) <= receivedHeadroom {
		start := receivedHeadroom - len(hdr)
		copy(buf[start:], hdr)
		return buf[start:]
	}
	body := buf[receivedHeadroom:]
	raw := make([]byte, 0, len(hdr)+len(body))
	return append(append(raw, hdr...), body...)
}
