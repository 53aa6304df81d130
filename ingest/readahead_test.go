package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// dataQuirks are DATA bodies where a reader can go wrong: dot stuffing,
// bare CR and LF, the end-of-data line's look-alikes, and go-smtp's own
// quirks (".\r" then a byte drops the CR; CR CR LF does not end a line).
var dataQuirks = []string{
	"Subject: a\r\n\r\nhello\r\n.\r\n",
	"Subject: a\r\n\r\n..leading dot\r\n...\r\n.\r\n",
	"Subject: a\r\n\r\nbare\nLF\n.\nstill body\r\n.\r\n",
	"Subject: a\r\n\r\nbare\rCR\r.\rX\r\n.\r\n",
	"Subject: a\r\n\r\n.\rX dot CR then a byte\r\n.\r\n",
	"Subject: a\r\n\r\nCR CR LF\r\r\n.\r\nnot the end\r\n.\r\n",
	"Subject: a\r\n\r\n.x\r\n.\r\r\n.\r\n",
	"\r\n.\r\n",
	".\r\n",
	"Subject: a\r\n\r\n" + strings.Repeat("0123456789", 99) + "\r\n.\r\n", // 990 bytes: just within the line limit
	"Subject: a\r\n\r\n" + strings.Repeat("x\r\n", 2000) + ".\r\n",        // over max_message_bytes: 552
}

// TestDataBodyReadByLeveeMatchesGoSMTP runs the same client bytes through
// a session that reads DATA bodies itself and one that leaves them to
// go-smtp, delivered in writes of several sizes (the read boundaries fall
// inside the body, the dot lines and CRLFs): the replies and every
// published message must be the same, byte for byte.
func TestDataBodyReadByLeveeMatchesGoSMTP(t *testing.T) {
	for i, body := range dataQuirks {
		in := []byte("EHLO a\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n" + body +
			"MAIL FROM:<c@d.org>\r\nRCPT TO:<s@example.com>\r\nDATA\r\nSubject: second\r\n\r\nbye\r\n.\r\nQUIT\r\n")
		for _, chunk := range []int{1, 2, 3, 7, 64, 4096} {
			t.Run(fmt.Sprintf("body%d/chunk%d", i, chunk), func(t *testing.T) {
				compareDataReaders(t, chunk, in)
			})
		}
	}
}

// FuzzDataBody is the comparison above over arbitrary client bytes.
func FuzzDataBody(f *testing.F) {
	for _, body := range dataQuirks {
		f.Add(uint8(5), []byte("HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n"+body+"QUIT\r\n"))
	}
	f.Add(uint8(0), []byte("HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<r@example.com>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<r@example.com>\r\nBDAT 3 LAST\r\nabcQUIT\r\n"))
	f.Fuzz(func(t *testing.T, split uint8, in []byte) {
		if hasLineOver(in, 998) {
			// A line over the limit (1000, counted with its LF): go-smtp
			// checks the limit on whole socket reads, so whether such a
			// line just after the end of data fails the message depends
			// on where its reads fall; Levee's reader checks the body
			// only. Both refuse the long line itself. (The seeds' longest
			// line, 990 bytes, is compared.)
			t.Skip("a line over the line limit")
		}
		compareDataReaders(t, 1+int(split), in)
	})
}

func hasLineOver(in []byte, n int) bool {
	for _, line := range bytes.Split(in, []byte("\n")) {
		if len(line) > n {
			return true
		}
	}
	return false
}

var syntaxErrorRE = regexp.MustCompile(`(?m)^50[01] 5\.5\.4 [^\r]*`)

func compareDataReaders(t *testing.T, chunk int, in []byte) {
	t.Helper()
	levee, leveeMsgs, read := runDataSession(t, true, chunk, in)
	gosmtp, gosmtpMsgs, _ := runDataSession(t, false, chunk, in)
	// go-smtp checks MAIL's parameters in map order: with two bad ones,
	// either may be named, in either mode.
	levee, gosmtp = syntaxErrorRE.ReplaceAll(levee, []byte("50x 5.5.4 ...")), syntaxErrorRE.ReplaceAll(gosmtp, []byte("50x 5.5.4 ..."))
	if !bytes.Equal(levee, gosmtp) {
		t.Fatalf("replies differ\nLevee's reader:  %q\ngo-smtp's reader: %q", levee, gosmtp)
	}
	if len(leveeMsgs) != len(gosmtpMsgs) {
		t.Fatalf("%d messages published with Levee's reader, %d with go-smtp's", len(leveeMsgs), len(gosmtpMsgs))
	}
	for i := range leveeMsgs {
		if !bytes.Equal(leveeMsgs[i], gosmtpMsgs[i]) {
			t.Fatalf("message %d differs\nLevee's reader:  %q\ngo-smtp's reader: %q", i, leveeMsgs[i], gosmtpMsgs[i])
		}
	}
	if bytes.Contains(in, []byte("DATA\r\n")) && bytes.Contains(levee, []byte("354 ")) && read == 0 {
		t.Fatalf("a DATA body was answered but none was read by Levee's reader: the comparison compared go-smtp with itself")
	}
}

// runDataSession plays in against a session over net.Pipe and returns the
// replies, the raw messages published and how many DATA bodies Levee's
// reader read.
func runDataSession(t *testing.T, readsData bool, chunk int, in []byte) (replies []byte, msgs [][]byte, read int64) {
	t.Helper()
	pub := &fakePublisher{}
	cfg := baseConfig()
	cfg.MaxMessageBytes = 4096
	cfg.MaxLineLength = 1000
	cfg.MaxRecipients = 3
	cfg.ReadTimeout = 10 * time.Second
	srv, err := New(cfg, pub, &fakeFill{}, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	srv.now = func() time.Time { return at }
	srv.readsData = readsData
	replies = playOverPipe(t, srv, chunk, in)
	pub.mu.Lock()
	defer pub.mu.Unlock()
	for _, m := range pub.msgs {
		msgs = append(msgs, m.Raw)
	}
	return replies, msgs, srv.dataRead.Load()
}

// TestCommandsSlippedInBeforeSTARTTLSAreDropped: what arrives with the
// STARTTLS line, before the handshake, is not taken as a command sent
// under TLS (a man in the middle could have put it there), as go-smtp
// drops its own buffer at STARTTLS.
func TestCommandsSlippedInBeforeSTARTTLSAreDropped(t *testing.T) {
	_, _, pub, addr, _ := tlsServer(t, nil)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	expect := func(r *bufio.Reader, code string) string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", code, err)
			}
			if !strings.HasPrefix(line, code) {
				t.Fatalf("got %q, want %s", line, code)
			}
			if line[3] == ' ' {
				return line
			}
		}
	}
	expect(br, "220")
	_, _ = io.WriteString(nc, "EHLO a\r\n")
	expect(br, "250")
	_, _ = io.WriteString(nc, "STARTTLS\r\nMAIL FROM:<evil@b.org>\r\nRCPT TO:<r@example.com>\r\n")
	expect(br, "220")
	tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after slipped-in commands: %v", err)
	}
	tr := bufio.NewReader(tc)
	_, _ = io.WriteString(tc, "EHLO a\r\n")
	expect(tr, "250")
	// Had the slipped-in MAIL counted, this one would be refused (503).
	_, _ = io.WriteString(tc, "MAIL FROM:<a@b.org>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n")
	expect(tr, "250")
	expect(tr, "250")
	expect(tr, "354")
	_, _ = io.WriteString(tc, "Subject: x\r\n\r\nhi\r\n.\r\n")
	expect(tr, "250")
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.msgs) != 1 || pub.msgs[0].Envelope.From != "a@b.org" {
		t.Fatalf("published %d messages (want 1 from a@b.org)", len(pub.msgs))
	}
}

// BenchmarkDataBody measures a session taking messages of 4 KiB and
// 64 KiB over loopback TCP (one connection, MAIL, RCPT and DATA
// pipelined), with the body read by Levee and, for comparison in the same
// run, by go-smtp. The publisher accepts at once, so this is the SMTP
// side's own cost.
//
//	go test -run '^$' -bench DataBody -count 5 ./ingest/
func BenchmarkDataBody(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		body := benchBody(size)
		for _, readsData := range []bool{true, false} {
			name := map[bool]string{true: "levee", false: "go-smtp"}[readsData]
			b.Run(fmt.Sprintf("size=%dKiB/reader=%s", size>>10, name), func(b *testing.B) {
				cfg := baseConfig()
				srv, addr := startServer(b, cfg, PublisherFunc(acceptAll), nil)
				srv.readsData = readsData
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				br := bufio.NewReader(nc)
				reply := func(code string) {
					for {
						line, err := br.ReadString('\n')
						if err != nil || !strings.HasPrefix(line, code) {
							b.Fatalf("got %q (%v), want %s", line, err, code)
						}
						if line[3] == ' ' {
							return
						}
					}
				}
				reply("220")
				_, _ = io.WriteString(nc, "EHLO bench.test\r\n")
				reply("250")
				cmds := []byte("MAIL FROM:<a@b.org>\r\nRCPT TO:<r@example.com>\r\nDATA\r\n")
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				for range b.N {
					_, _ = nc.Write(cmds)
					reply("250")
					reply("250")
					reply("354")
					_, _ = nc.Write(body)
					reply("250")
				}
			})
		}
	}
}

func acceptAll(context.Context, *mail.Message) (queue.PublishResult, error) {
	return queue.PublishResult{}, nil
}

// benchBody is a dot-stuffed DATA body of about size bytes: text lines of
// 76 characters, some starting with a dot, and the end-of-data line.
func benchBody(size int) []byte {
	var buf bytes.Buffer
	buf.WriteString("From: a@b.org\r\nTo: r@example.com\r\nSubject: bench\r\nMessage-ID: <bench@b.org>\r\n\r\n")
	for i := 0; buf.Len() < size; i++ {
		if i%40 == 0 {
			buf.WriteString(".")
		}
		buf.WriteString(strings.Repeat("abcdefghij", 7) + "klmnop\r\n")
	}
	buf.WriteString(".\r\n")
	return buf.Bytes()
}
