package mail

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"strings"
	"time"

	"github.com/jhillyerd/enmime/v2"
)

// ParseLimits bound the work and memory one message may cost the parser.
// enmime has no such limits of its own, so Parse checks a cheap upper bound
// first and falls back to headers only when a message exceeds it.
type ParseLimits struct {
	// MaxParts caps the number of MIME boundary lines (an upper bound on parts).
	MaxParts int
	// MaxDepth caps multipart nesting (counted as multipart Content-Types, an upper bound).
	MaxDepth int
	// DetectCharset makes enmime guess each text part's charset from its
	// bytes and prefer the guess over the declared one. It costs about
	// 3 ms of CPU per 4 KiB text part (measured: BenchmarkParse), which made
	// parsing the bottleneck of the whole pipeline, so it is off by default
	// and the declared charset (us-ascii when none is declared) is used.
	DetectCharset bool `config:"detect_charset" help:"guess text parts' charsets from their bytes when storing (about 7x the parse CPU); off: trust the declared charset"`
}

// DefaultParseLimits are generous for real mail and small for a hostile one.
var DefaultParseLimits = ParseLimits{MaxParts: 1000, MaxDepth: 30}

// WithDefaults fills the zero limits from DefaultParseLimits.
func (l ParseLimits) WithDefaults() ParseLimits {
	if l.MaxParts == 0 {
		l.MaxParts = DefaultParseLimits.MaxParts
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = DefaultParseLimits.MaxDepth
	}
	return l
}

// Parse reads raw into its content. It never rejects messy mail: what enmime
// tolerates becomes a warning, a message over the limits or one that makes
// enmime fail or panic is kept with its headers only and a warning saying why.
// The error is non-nil only when not even the header block can be read.
func Parse(raw []byte, limits ParseLimits) (p *Parsed, err error) {
	if reason := overLimits(raw, limits); reason != "" {
		return headersOnly(raw, reason)
	}
	env, perr := parseWithRecover(raw, limits.DetectCharset)
	if perr != nil {
		return headersOnly(raw, perr.Error())
	}
	p = &Parsed{
		Headers: map[string][]string{},
		Subject: env.GetHeader("Subject"),
		From:    env.GetHeader("From"),
		Text:    env.Text,
		HTML:    env.HTML,
	}
	p.MessageID = NormalizeMessageID(env.GetHeader("Message-Id"))
	for _, k := range env.GetHeaderKeys() {
		p.Headers[textproto.CanonicalMIMEHeaderKey(k)] = env.GetHeaderValues(k)
	}
	if d, derr := env.Date(); derr == nil {
		p.Date = withObsoleteZone(d).UTC()
	}
	p.Attachments = nonBodyParts(env.Root)
	for _, e := range env.Errors {
		p.Warnings = append(p.Warnings, e.Error())
	}
	return p, nil
}

var (
	fastParser   = enmime.NewParser(enmime.DisableCharacterDetection(true))
	detectParser = enmime.NewParser()
)

func parseWithRecover(raw []byte, detectCharset bool) (env *enmime.Envelope, err error) {
	defer func() {
		if r := recover(); r != nil {
			env, err = nil, fmt.Errorf("mime parser panicked: %v", r)
			if r == errBudgetSpent {
				env, err = nil, errBudgetSpent
			}
		}
	}()
	p := fastParser
	if detectCharset {
		p = detectParser
	}
	root, err := p.ReadParts(&budgetReader{r: bytes.NewReader(raw), left: readBudget(len(raw))})
	if err != nil {
		return nil, fmt.Errorf("mime parse: %w", err)
	}
	withDefaultContentTypes(root)
	env, err = p.EnvelopeFromPart(root)
	if err != nil {
		return nil, fmt.Errorf("mime parse: %w", err)
	}
	return env, nil
}

// withDefaultContentTypes gives every part without a Content-Type the one
// RFC 2045 (5.2) and RFC 2046 (5.1.5) say it has: text/plain, or
// message/rfc822 inside a multipart/digest. enmime leaves it empty, so a
// text/plain alternative without the header was not taken as the text (the
// text was converted from the HTML instead), and without a content type
// enmime reads neither its Content-Disposition nor its Content-ID.
func withDefaultContentTypes(root *enmime.Part) {
	_ = root.DepthMatchAll(func(part *enmime.Part) bool {
		if part.ContentType != "" {
			return false
		}
		part.ContentType = "text/plain"
		if part.Parent != nil && part.Parent.ContentType == "multipart/digest" {
			part.ContentType = "message/rfc822"
		}
		if d, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition")); err == nil {
			part.Disposition, part.FileName = d, params["filename"]
		}
		if id := part.Header.Get("Content-Id"); id != "" {
			part.ContentID = strings.Trim(strings.TrimSpace(id), "<>")
		}
		return false
	})
}

// nonBodyParts lists every part that is not a multipart container and not
// part of the body, in the order they appear. enmime's Attachments and
// Inlines hold only parts with a Content-Disposition (and count an inline
// text body as an inline); its OtherParts the rest. Walking the tree once
// gives one list that misses nothing: signatures, multipart/related images,
// TNEF, forwarded messages, and text parts enmime did not take for the
// body (the second HTML part of Apple Mail's layout). A body part with a
// file name is a file as well, and listed.
func nonBodyParts(root *enmime.Part) []Attachment {
	body := bodyParts(root)
	var out []Attachment
	_ = root.DepthMatchAll(func(part *enmime.Part) bool {
		if strings.HasPrefix(part.ContentType, "multipart/") || body[part] && part.FileName == "" {
			return false
		}
		out = append(out, Attachment{
			Filename:    part.FileName,
			ContentType: part.ContentType,
			ContentID:   part.ContentID,
			Size:        int64(len(part.Content)),
			Content:     part.Content,
		})
		return false
	})
	return out
}

// bodyParts are the parts enmime made Text and HTML of, found as it finds
// them (envelope.go, parseMultiPartBody): in a multipart/alternative the
// first text/plain, elsewhere every text/plain, and the first text/html,
// none of them marked as attachments; a single-part message is its own
// body when it is text.
func bodyParts(root *enmime.Part) map[*enmime.Part]bool {
	used := map[*enmime.Part]bool{}
	notAttachment := func(ct string) func(*enmime.Part) bool {
		return func(p *enmime.Part) bool { return p.ContentType == ct && p.Disposition != "attachment" }
	}
	if !strings.HasPrefix(root.ContentType, "multipart/") {
		switch root.ContentType {
		case "text/plain", "text/html", "":
			if root.Disposition != "attachment" {
				used[root] = true
			}
		}
		return used
	}
	if root.ContentType == "multipart/alternative" {
		if p := root.BreadthMatchFirst(notAttachment("text/plain")); p != nil {
			used[p] = true
		}
	} else {
		for _, p := range root.DepthMatchAll(notAttachment("text/plain")) {
			used[p] = true
		}
	}
	if p := root.DepthMatchFirst(notAttachment("text/html")); p != nil {
		used[p] = true
	}
	return used
}

// errBudgetSpent stops enmime (as a panic, which parseWithRecover turns back
// into this error) once a message has cost more reads than its size allows.
var errBudgetSpent = errors.New("MIME structure over the parse work budget (unclosed nested parts): kept headers only")

// readBudget is how many reads of the message enmime may make. A message
// costs about one read per 4 KiB (its bufio buffer) plus a few; the budget
// is far above that, and above the few unclosed levels of truncated real mail
// (8 levels: about 3,000 reads), and costs milliseconds at most.
func readBudget(size int) int { return 1<<16 + size/256 }

// budgetReader is the message as enmime reads it, counting the reads.
// enmime nests one boundary reader per multipart level, and at the end of an
// unclosed part each level reads its parent twice for every read of its own
// (bufio hands out an EOF once, then asks again), so the reads at the end of
// the input double with each level: 27 unclosed levels in 1.6 KB took 94
// CPU-seconds. All of those reads come down to this reader, so counting them
// bounds the parse's work, whatever shape the message has.
type budgetReader struct {
	r    *bytes.Reader
	left int
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left--; b.left < 0 {
		// A panic, not an error: enmime discards some read errors and
		// carries on (it drains a part with io.Copy and ignores the result).
		panic(errBudgetSpent)
	}
	return b.r.Read(p)
}

// overLimits counts boundary-like lines and multipart Content-Type fields:
// both are upper bounds of what enmime would build, computed in one pass.
func overLimits(raw []byte, l ParseLimits) string {
	parts, depth := 0, 0
	// inContentType: the lines since a Content-Type field started are its
	// value (folded), which may name multipart after any amount of white
	// space; counted is whether this field was counted already.
	inContentType, counted := false, false
	for line := range bytes.Lines(raw) {
		if bytes.HasPrefix(line, []byte("--")) {
			parts++
		}
		value := line
		switch {
		case len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && inContentType:
		case isContentTypeField(line):
			inContentType, counted = true, false
			value = line[bytes.IndexByte(line, ':')+1:]
		default:
			inContentType = false
		}
		if inContentType && !counted && containsFold(value, "multipart/") {
			depth++
			counted = true
		}
	}
	switch {
	case l.MaxParts > 0 && parts > l.MaxParts:
		return fmt.Sprintf("more than %d MIME parts: kept headers only", l.MaxParts)
	case l.MaxDepth > 0 && depth > l.MaxDepth:
		return fmt.Sprintf("multipart nesting deeper than %d: kept headers only", l.MaxDepth)
	}
	return ""
}

// isContentTypeField says whether line starts a Content-Type header field
// (any case, white space allowed before the colon).
func isContentTypeField(line []byte) bool {
	const name = "content-type"
	if len(line) <= len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
		return false
	}
	rest := bytes.TrimLeft(line[len(name):], " \t")
	return len(rest) > 0 && rest[0] == ':'
}

// containsFold is bytes.Contains ignoring ASCII case, without allocating.
func containsFold(s []byte, lowerSub string) bool {
	for i := 0; i+len(lowerSub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(lowerSub)], []byte(lowerSub)) {
			return true
		}
	}
	return false
}

// ReadHeader reads the header block of raw: linear in its size, and what
// a receiver can afford for every message (the MIME parse is the worker's,
// once). A block that yields no header at all is an error.
func ReadHeader(raw []byte) (textproto.MIMEHeader, error) {
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	if end < 0 {
		end = bytes.Index(raw, []byte("\n\n"))
	}
	block := raw
	if end >= 0 {
		block = raw[:end+2]
	}
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(block), strings.NewReader("\r\n\r\n"))))
	h, err := r.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return h, err
	}
	if len(h) == 0 {
		return h, errors.New("no header fields")
	}
	return h, nil
}

// headersOnly keeps what a reader of the mailbox needs most (who, what, when)
// when the body cannot or may not be parsed.
func headersOnly(raw []byte, reason string) (*Parsed, error) {
	h, err := ReadHeader(raw)
	if err != nil && len(h) == 0 {
		return &Parsed{Headers: map[string][]string{}, Warnings: []string{reason, "header block unreadable: " + err.Error()}, HeadersOnly: true}, nil
	}
	p := &Parsed{Headers: map[string][]string(h), Warnings: []string{reason}, HeadersOnly: true}
	p.Subject = h.Get("Subject")
	p.From = h.Get("From")
	p.MessageID = strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
	return p, nil
}

// obsoleteZones are the zone names RFC 5322 (section 4.3) still lets a Date
// carry, with their offsets in hours. net/mail reads a name the machine's
// own time zone does not define as UTC: "12:09:26 EDT" became 12:09:26Z.
var obsoleteZones = map[string]int{
	"UT": 0, "GMT": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

// withObsoleteZone gives a time parsed with an obsolete zone name, and
// read as UTC, that zone's offset. Military single-letter zones stay as
// they are: RFC 5322 says to read them as -0000 (unknown).
func withObsoleteZone(d time.Time) time.Time {
	name, offset := d.Zone()
	hours, ok := obsoleteZones[strings.ToUpper(name)]
	if !ok || offset != 0 || hours == 0 {
		return d
	}
	y, mo, day := d.Date()
	h, mi, s := d.Clock()
	return time.Date(y, mo, day, h, mi, s, d.Nanosecond(), time.FixedZone(name, hours*3600))
}

// NormalizeMessageID is the id of a Message-ID header value, or of a
// look-up's id, as stored and compared: the addr-spec between the first
// '<' and the '>' after it (a comment after it, "<id@host> (added by
// postmaster)", is not part of it), with no white space (a folded header
// leaves some inside, which is no part of an id). A value without brackets
// is taken whole.
func NormalizeMessageID(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	}
	return strings.Join(strings.Fields(v), "")
}
