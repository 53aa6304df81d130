package loadtest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Source supplies the messages of a run.
type Source interface {
	// Compose completes message seq for arrival a. hdr already holds the
	// load tester's own header fields (Message-ID, X-Levee-Loadtest-Id,
	// Date); Compose may append more header fields to it and returns the
	// rest of the message: the remaining header, the empty line and the
	// body, with CRLF line ends and dot-stuffed for DATA, ending in CRLF.
	// The returned slices must not be modified by the caller and stay valid
	// for the whole run (sources share them between messages).
	Compose(seq uint64, a Arrival, from string, to []string, hdr *bytes.Buffer) [][]byte
	String() string
}

// Generator makes messages of a drawn size, optionally with an attachment.
// Bodies are slices of text and base64 blocks built once, so that a message
// costs a header's worth of work, whatever its size.
type Generator struct {
	sizes       SizeDist
	attachments float64 // fraction of messages with an attachment
	seed        uint64
	runID       string
	text        []byte
	textLines   []int // offsets of line starts in text
	b64         []byte
	b64Lines    []int
}

// generator blocks: big enough that consecutive messages do not look alike
// to a compressor, small enough to build in a millisecond.
const genBlock = 256 << 10

// NewGenerator returns a generator drawing sizes from sizes; attachments
// (0..1) is the fraction of messages that carry a binary attachment, which
// then makes up most of their size.
func NewGenerator(sizes SizeDist, attachments float64, seed uint64, runID string) (*Generator, error) {
	if attachments < 0 || attachments > 1 {
		return nil, fmt.Errorf("loadtest: --attachments must be between 0 and 1, got %v", attachments)
	}
	g := &Generator{sizes: sizes, attachments: attachments, seed: seed, runID: runID}
	r := rand.New(rand.NewPCG(seed, 0x7e47))
	g.text, g.textLines = textBlock(r, genBlock)
	g.b64, g.b64Lines = base64Block(r, genBlock)
	return g, nil
}

var words = strings.Fields(`the order shipped today and your tracking number is below please reply
to this message if anything looks wrong we received your request about the invoice
for last month our team will get back to you within one business day thanks for
your patience customer support ticket update refund policy discount code sale ends
tonight black friday cyber monday weekend offer free shipping on all orders account
password reset confirm your email address delivery window warehouse returns label`)

// textBlock builds lines of words, each at most 76 characters plus CRLF.
func textBlock(r *rand.Rand, size int) ([]byte, []int) {
	var b bytes.Buffer
	b.Grow(size + 80)
	var starts []int
	for b.Len() < size {
		starts = append(starts, b.Len())
		n := 0
		for {
			w := words[r.IntN(len(words))]
			if n+len(w)+1 > 76 {
				break
			}
			if n > 0 {
				b.WriteByte(' ')
				n++
			}
			b.WriteString(w)
			n += len(w)
		}
		b.WriteString("\r\n")
	}
	return b.Bytes(), starts
}

// base64Block builds 76-character base64 lines of random bytes.
func base64Block(r *rand.Rand, size int) ([]byte, []int) {
	raw := make([]byte, size/4*3)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	var starts []int
	for len(enc) > 0 {
		n := min(76, len(enc))
		starts = append(starts, b.Len())
		b.WriteString(enc[:n])
		b.WriteString("\r\n")
		enc = enc[n:]
	}
	return b.Bytes(), starts
}

// lineSlices returns about n bytes of whole lines from block, starting at a line
// chosen by r, as one or more slices (more when n exceeds the block).
func lineSlices(block []byte, starts []int, n int, r *rand.Rand) [][]byte {
	var out [][]byte
	for n > 0 {
		i := r.IntN(len(starts))
		from := starts[i]
		// The first line start at or after from+n, or the block's end.
		j := sort.SearchInts(starts, from+n)
		to := len(block)
		if j < len(starts) {
			to = starts[j]
		}
		out = append(out, block[from:to])
		n -= to - from
	}
	return out
}

func (g *Generator) String() string {
	s := "generated, size " + g.sizes.String()
	if g.attachments > 0 {
		s += fmt.Sprintf(", %.0f%% with an attachment", g.attachments*100)
	}
	return s
}

// Compose builds message seq. Its size is a.Size when set, otherwise drawn;
// both are hit within a line (78 bytes).
func (g *Generator) Compose(seq uint64, a Arrival, from string, to []string, hdr *bytes.Buffer) [][]byte {
	r := rand.New(rand.NewPCG(g.seed, seq))
	size := a.Size
	if size == 0 {
		size = g.sizes.draw(r)
	}
	withAttachment := g.attachments > 0 && r.Float64() < g.attachments
	fmt.Fprintf(hdr, "From: Levee load test <%s>\r\nTo: %s\r\nSubject: Load test %s message %d\r\nMIME-Version: 1.0\r\n",
		from, strings.Join(to, ", "), g.runID, seq)
	if !withAttachment {
		hdr.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
		return lineSlices(g.text, g.textLines, max(1, size-hdr.Len()), r)
	}
	boundary := "=_levee_" + strconv.FormatUint(seq, 36)
	fmt.Fprintf(hdr, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary, boundary)
	rest := size - hdr.Len() - 200
	text := min(max(1, rest/10), 2048)
	parts := lineSlices(g.text, g.textLines, text, r)
	attHdr := fmt.Appendf(nil, "--%s\r\nContent-Type: application/octet-stream; name=\"attachment-%d.bin\"\r\nContent-Disposition: attachment; filename=\"attachment-%d.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", boundary, seq, seq)
	parts = append(parts, attHdr)
	parts = append(parts, lineSlices(g.b64, g.b64Lines, max(1, rest-text), r)...)
	return append(parts, fmt.Appendf(nil, "--%s--\r\n", boundary))
}

// writeOwnHeader writes the header fields every message starts with: the
// unique Message-ID the audit looks up, the same id in X-Levee-Loadtest-Id
// for people grepping stored mail, and the Date of the arrival.
func writeOwnHeader(hdr *bytes.Buffer, msgID, ltID string, date time.Time) {
	hdr.WriteString("Message-ID: <")
	hdr.WriteString(msgID)
	hdr.WriteString(">\r\nX-Levee-Loadtest-Id: ")
	hdr.WriteString(ltID)
	hdr.WriteString("\r\nDate: ")
	hdr.Write(date.AppendFormat(hdr.AvailableBuffer(), time.RFC1123Z))
	hdr.WriteString("\r\n")
}
