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
