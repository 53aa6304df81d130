package mail

import "testing"

// FuzzParse: whatever bytes arrive, Parse returns a result (never an error
// that would refuse the mail, never a panic) within the limits.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b--\r\n--a--\r\n"))
	f.Add([]byte("Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := Parse(raw, ParseLimits{MaxParts: 50, MaxDepth: 5})
		if err != nil || p == nil || p.Headers == nil {
			t.Fatalf("Parse = %+v, %v", p, err)
		}
	})
}
