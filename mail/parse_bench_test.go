package mail

import (
	"strings"
	"testing"
)

// BenchmarkParse is a 4 KiB plain-text message, as the SMTP benchmarks send:
// the figure behind ParseLimits.DetectCharset's default.
func BenchmarkParse(b *testing.B) {
	raw := []byte("From: <s@bench.test>\r\nTo: <r@bench.test>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n" +
		"Message-Id: <x@bench.test>\r\nSubject: test\r\n\r\n" + strings.Repeat("La de da de da 1.\r\nLa de da de da 2.\r\n", 110))
	for _, detect := range []bool{false, true} {
		name := "declared_charset"
		if detect {
			name = "detect_charset"
		}
		b.Run(name, func(b *testing.B) {
			limits := DefaultParseLimits
			limits.DetectCharset = detect
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Parse(raw, limits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
