package loadtest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTraceReplay(t *testing.T) {
	s, err := OpenTrace("testdata/trace.jsonl", 2, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.(io.Closer).Close()
	if s.Duration() != 2125*time.Millisecond {
		t.Fatalf("duration at 2x = %s, want 2.125s", s.Duration())
	}
	want := []Arrival{
		{At: 0, Size: 2048, Rcpts: 1, Domain: "example.com"},
		{At: 250 * time.Millisecond, Size: 10240, Rcpts: 2, Domain: "other.example"},
		{At: 750 * time.Millisecond, Size: 4096},
		{At: time.Second, Rcpts: 3}, // unknown fields are ignored
		{At: time.Second, Size: 100000, Domain: "example.com"},
		{At: 2125 * time.Millisecond, Size: 512, Rcpts: 1},
	}
	for i, w := range want {
		a, err := s.Next()
		if err != nil {
			t.Fatalf("arrival %d: %v", i, err)
		}
		if a != w {
			t.Fatalf("arrival %d = %+v, want %+v", i, a, w)
		}
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last line: %v, want io.EOF", err)
	}
	if !strings.Contains(s.String(), "6 arrivals") {
		t.Errorf("String() = %q", s.String())
	}
	limited, err := OpenTrace("testdata/trace.jsonl", 1, ArrivalOptions{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer limited.(io.Closer).Close()
	if n := len(arrivalsPer(t, limited, time.Hour)); n != 1 || limited.Duration() != 500*time.Millisecond {
		t.Fatalf("--count 2 on a trace: duration %s", limited.Duration())
	}
}

func TestTraceErrorsNameTheLine(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"backwards":  {"{\"offset\": 2}\n{\"offset\": 1}\n", "line 2: offset goes back"},
		"bad json":   {"{\"offset\": 1}\n\n{offset: 2}\n", "line 3"},
		"no offset":  {"{\"size\": 10}\n", "line 1: offset: missing"},
		"bad domain": {"{\"offset\": 1, \"domain\": \"a b>\"}\n", "line 1: domain"},
		"negative":   {"{\"offset\": -1}\n", "line 1: offset: must be >= 0"},
		"empty":      {"# nothing\n", "no arrivals"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "t.jsonl")
			if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenTrace(p, 1, ArrivalOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := OpenTrace("testdata/trace.jsonl", 0, ArrivalOptions{}); err == nil {
		t.Error("speed 0 accepted")
	}
}

func corpusMessages(t *testing.T, path string) []string {
	t.Helper()
	c, err := OpenCorpus(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, c.Len())
	for i := range out {
		parts := c.Compose(uint64(i), Arrival{}, "", nil, nil)
		out[i] = string(bytes.Join(parts, nil))
	}
	return out
}

// checkDATAReady: CRLF line ends only, a final CRLF.
func checkDATAReady(t *testing.T, m string) {
	t.Helper()
	bare := strings.ReplaceAll(m, "\r\n", "")
	if strings.ContainsAny(bare, "\r\n") || !strings.HasSuffix(m, "\r\n") {
		t.Errorf("not CRLF throughout or no final CRLF: %.200q", m)
	}
}

// checkFieldsDropped: a corpus message loses the fields every send replaces.
func checkFieldsDropped(t *testing.T, m string) {
	t.Helper()
	for _, h := range []string{"message-id:", "date:", "x-levee-loadtest-id:", " <orig-"} {
		if strings.Contains(strings.ToLower(m), h) {
			t.Errorf("header %q not removed from %.300q", h, m)
		}
	}
}

func TestCorpusEMLDirectory(t *testing.T) {
	msgs := corpusMessages(t, "testdata/corpus/eml")
	if len(msgs) != 2 { // README.txt is not a message
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for _, m := range msgs {
		checkDATAReady(t, m)
		checkFieldsDropped(t, m)
	}
	// Sorted by path: order.eml, then sub/news.eml.
	if !strings.Contains(msgs[0], "Subject: Your order\r\n\r\nHello Bob,\r\n..a line starting with a dot\r\nbye\r\n") {
		t.Errorf("order.eml prepared as %q (want CRLF and the dot stuffed)", msgs[0])
	}
	if !strings.Contains(msgs[1], "Subject: Cyber Monday\r\nMIME-Version: 1.0\r\n") {
		t.Errorf("news.eml prepared as %q (want the folded Message-Id and its continuation gone)", msgs[1])
	}
}

func TestCorpusMbox(t *testing.T) {
	msgs := corpusMessages(t, "testdata/corpus/inbox.mbox")
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	for _, m := range msgs {
		checkDATAReady(t, m)
		checkFieldsDropped(t, m)
		if strings.HasPrefix(m, "From ") {
			t.Errorf("mbox separator left in %q", m)
		}
	}
	if !strings.Contains(msgs[0], "\r\nFrom the mboxrd quoting") || !strings.Contains(msgs[0], "\r\n>From stays quoted once.") {
		t.Errorf("mboxrd quoting not undone: %q", msgs[0])
	}
	if !strings.HasSuffix(msgs[2], "Body three.\r\n") {
		t.Errorf("last message = %q", msgs[2])
	}
}

func TestCorpusMaildir(t *testing.T) {
	msgs := corpusMessages(t, "testdata/corpus/maildir")
	if len(msgs) != 2 { // tmp/ is skipped
		t.Fatalf("%d messages, want 2 (cur and new, not tmp)", len(msgs))
	}
	if !strings.Contains(msgs[0], "Subject: seen") || !strings.Contains(msgs[1], "Subject: unseen") {
		t.Errorf("messages = %q", msgs)
	}
}

func TestCorpusLimits(t *testing.T) {
	if _, err := OpenCorpus("testdata/corpus/inbox.mbox", 10); !errors.Is(err, ErrCorpusTooLarge) {
		t.Errorf("10-byte limit: %v, want ErrCorpusTooLarge", err)
	}
	empty := t.TempDir()
	if _, err := OpenCorpus(empty, 0); err == nil || !strings.Contains(err.Error(), "no messages") {
		t.Errorf("empty directory: %v", err)
	}
	if _, err := OpenCorpus(filepath.Join(empty, "missing"), 0); err == nil {
		t.Error("missing path accepted")
	}
}

func TestCorpusRunSendsEachMessageWithFreshIDs(t *testing.T) {
	sink := startSink(t, nil)
	c, err := OpenCorpus("testdata/corpus/inbox.mbox", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := quickConfig(t, sink.addr, mustConstant(t, 60, 100*time.Millisecond))
	cfg.Source = c
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Counts.Accepted != 6 {
		t.Fatalf("accepted %d, want 6", res.Counts.Accepted)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	subjects := map[string]int{}
	for mid, body := range sink.bodies {
		subjects[headerValue(body, "Subject")]++
		if strings.Count(strings.ToLower(string(body)), "message-id:") != 1 || strings.Contains(string(body), "m1@shop.example") {
			t.Errorf("%s: want exactly one, fresh Message-ID:\n%s", mid, body)
		}
	}
	if subjects["first"] != 2 || subjects["second"] != 2 || subjects["third"] != 2 {
		t.Errorf("subjects sent = %v, want each corpus message twice", subjects)
	}
}

func TestGeneratorSizesAndAttachments(t *testing.T) {
	sizes, err := ParseSizeDist("uniform:2KiB-64KiB")
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGenerator(sizes, 0.5, 3, "run")
	if err != nil {
		t.Fatal(err)
	}
	withAtt := 0
	for seq := range uint64(200) {
		var hdr bytes.Buffer
		writeOwnHeader(&hdr, messageID(seq, "run"), "x", time.Unix(0, 0))
		parts := g.Compose(seq, Arrival{}, "from@x.test", []string{"a@b.test"}, &hdr)
		msg := string(hdr.Bytes()) + string(bytes.Join(parts, nil))
		if n := len(msg); n < 2<<10-100 || n > 64<<10+200 {
			t.Fatalf("message %d is %d bytes, want 2KiB..64KiB", seq, n)
		}
		checkDATAReady(t, msg)
		for _, line := range strings.Split(msg, "\r\n") {
			if strings.HasPrefix(line, ".") || len(line) > 998 {
				t.Fatalf("message %d has a line DATA would need to stuff or that is too long: %.100q", seq, line)
			}
		}
		if strings.Contains(msg, "Content-Disposition: attachment") {
			withAtt++
		}
		// The same seq gives the same bytes: a retry is a retransmission.
		var hdr2 bytes.Buffer
		writeOwnHeader(&hdr2, messageID(seq, "run"), "x", time.Unix(0, 0))
		parts2 := g.Compose(seq, Arrival{}, "from@x.test", []string{"a@b.test"}, &hdr2)
		again := hdr2.String() + string(bytes.Join(parts2, nil))
		if again != msg {
			t.Fatalf("message %d differs when composed again", seq)
		}
	}
	if withAtt < 70 || withAtt > 130 {
		t.Errorf("%d of 200 messages with an attachment, want about half", withAtt)
	}
	var hdr bytes.Buffer
	parts := g.Compose(1, Arrival{Size: 3 << 20}, "f@x.test", []string{"a@b.test"}, &hdr)
	if n := hdr.Len() + len(bytes.Join(parts, nil)); n < 3<<20 || n > 3<<20+4096 {
		t.Errorf("a 3MiB trace arrival gave %d bytes", n)
	}
}
