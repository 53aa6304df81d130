package ingest

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// validDomain accepts an RFC 5321 Domain: dot-separated labels of letters,
// digits and hyphens, no label empty or starting or ending with a hyphen.
// Bytes >= 0x80 are allowed in labels for SMTPUTF8 (RFC 6531) U-labels;
// whether such a domain is served is the allow-list's business.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || !utf8.ValidString(d) {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c >= 0x80:
			default:
				return false
			}
		}
	}
	return true
}

// validAddressDomain also accepts an RFC 5321 address literal: "[192.0.2.1]"
// or "[IPv6:2001:db8::1]".
func validAddressDomain(d string) bool {
	if lit, ok := strings.CutPrefix(d, "["); ok {
		lit, ok = strings.CutSuffix(lit, "]")
		if !ok {
			return false
		}
		if v6, ok := cutPrefixFold(lit, "IPv6:"); ok {
			a, err := netip.ParseAddr(v6)
			return err == nil && a.Is6() && a.Zone() == ""
		}
		a, err := netip.ParseAddr(lit)
		return err == nil && a.Is4()
	}
	return validDomain(d)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// maxLocalPart is RFC 5321's limit (4.5.3.1.1) on a local part, in octets,
// enforced for recipients: they are Levee's own mailboxes, and a key that
// long is a mistake or an attack. Senders are not held to it: VERP and
// bounce addresses of real senders exceed it, and refusing them bounces mail.
const maxLocalPart = 64

// addressProblem is what makes an address unacceptable, in the order checked.
type addressProblem int

const (
	addressOK addressProblem = iota
	// addressBadBytes: a control character (NUL, CR, ...; only possible
	// quoted) or invalid UTF-8: either would be rewritten in the mailbox
	// key (NUL became a space, \xff\xfe U+FFFD) and so not be what was sent.
	addressBadBytes
	// addressNeedsSMTPUTF8: non-ASCII without MAIL's SMTPUTF8 parameter
	// (RFC 6531 3.4: the server should refuse it).
	addressNeedsSMTPUTF8
	// addressLocalTooLong: a recipient local part over maxLocalPart octets.
	addressLocalTooLong
	// addressQuotedAt: a recipient local part holding an '@' (only possible
	// quoted: "x@other.test"@example.com). go-smtp hands it over unquoted, so
	// it would share a mailbox key with x@other.test@example.com.
	addressQuotedAt
)

// checkAddress finds the first problem of addr (as go-smtp parsed it, a
// quoted local part unquoted). recipient applies the recipient-only rules.
func checkAddress(addr string, smtputf8, recipient bool) addressProblem {
	if !utf8.ValidString(addr) {
		return addressBadBytes
	}
	ascii := true
	for i := 0; i < len(addr); i++ {
		switch c := addr[i]; {
		case c < 0x20 || c == 0x7f:
			return addressBadBytes
		case c >= 0x80:
			ascii = false
		}
	}
	if !ascii && !smtputf8 {
		return addressNeedsSMTPUTF8
	}
	if !recipient {
		return addressOK
	}
	local := addr[:max(strings.LastIndexByte(addr, '@'), 0)]
	switch {
	case len(local) > maxLocalPart:
		return addressLocalTooLong
	case strings.Contains(local, "@"):
		return addressQuotedAt
	}
	return addressOK
}
