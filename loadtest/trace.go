package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"
)

// A trace is JSON lines, one arrival each, in time order:
//
//	{"offset": 0.125, "size": 5230, "recipients": 2, "domain": "example.com"}
//
// offset is seconds from the start (a number, or a Go duration string such
// as "1m30.5s"); size, recipients and domain are optional (defaults: the
// message source's size, 1 recipient, the --to domain). Blank lines and
// lines starting with # are skipped; unknown fields are ignored so that
// traces exported by other tools replay as they are.
type traceLine struct {
	Offset     json.RawMessage `json:"offset"`
	Size       int             `json:"size"`
	Recipients int             `json:"recipients"`
	Domain     string          `json:"domain"`
}

// maxTraceRecipients bounds one trace line's recipients.
const maxTraceRecipients = 1000

// traceSchedule replays a trace file, speed times faster than recorded. It
// reads the file twice: once when opened, to reject a bad line before the
// run starts and to learn the duration, then line by line while replaying,
// so that a long trace never sits in memory.
type traceSchedule struct {
	path     string
	speed    float64
	count    int
	limit    int
	lines    int
	duration time.Duration
	f        *os.File
	sc       *bufio.Scanner
	lineNo   int
	last     time.Duration
}

// OpenTrace opens a trace for replay at the given speed-up (2 = twice as
// fast as recorded). Count in opts limits the arrivals; Poisson and Seed do
// not apply (the trace has its own timing). Close it after the run.
func OpenTrace(path string, speed float64, opts ArrivalOptions) (Schedule, error) {
	if speed <= 0 || math.IsInf(speed, 0) || math.IsNaN(speed) {
		return nil, fmt.Errorf("loadtest: --speed must be > 0, got %v", speed)
	}
	t := &traceSchedule{path: path, speed: speed, limit: opts.Count}
	if err := t.open(); err != nil {
		return nil, err
	}
	for {
		a, err := t.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Close()
			return nil, err
		}
		t.lines++
		t.duration = a.At
	}
	if t.lines == 0 {
		t.Close()
		return nil, fmt.Errorf("loadtest: trace %s: no arrivals", path)
	}
	t.Close()
	return t, t.open()
}

func (t *traceSchedule) open() error {
	f, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("loadtest: trace: %w", err)
	}
	t.f, t.sc, t.lineNo, t.last, t.count = f, bufio.NewScanner(f), 0, 0, 0
	t.sc.Buffer(make([]byte, 0, 4096), 1<<20)
	return nil
}

// Close releases the trace file.
func (t *traceSchedule) Close() error {
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	return err
}

func (t *traceSchedule) Next() (Arrival, error) {
	if t.limit > 0 && t.count >= t.limit {
		return Arrival{}, io.EOF
	}
	for t.sc.Scan() {
		t.lineNo++
		line := bytes.TrimSpace(t.sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		a, err := parseTraceLine(line)
		if err != nil {
			return Arrival{}, fmt.Errorf("loadtest: trace %s line %d: %w", t.path, t.lineNo, err)
		}
		a.At = time.Duration(float64(a.At) / t.speed)
		if a.At < t.last {
			return Arrival{}, fmt.Errorf("loadtest: trace %s line %d: offset goes back in time (%s after %s); sort the trace by offset", t.path, t.lineNo, a.At, t.last)
		}
		t.last = a.At
		t.count++
		return a, nil
	}
	if err := t.sc.Err(); err != nil {
		return Arrival{}, fmt.Errorf("loadtest: trace %s line %d: %w", t.path, t.lineNo+1, err)
	}
	return Arrival{}, io.EOF
}

func parseTraceLine(line []byte) (Arrival, error) {
	var l traceLine
	if err := json.Unmarshal(line, &l); err != nil {
		return Arrival{}, err
	}
	at, err := parseOffset(l.Offset)
	if err != nil {
		return Arrival{}, err
	}
	switch {
	case l.Size < 0:
		return Arrival{}, fmt.Errorf("size: must be >= 0, got %d", l.Size)
	case l.Recipients < 0 || l.Recipients > maxTraceRecipients:
		return Arrival{}, fmt.Errorf("recipients: must be between 0 and %d, got %d", maxTraceRecipients, l.Recipients)
	case !validDomain(l.Domain):
		return Arrival{}, fmt.Errorf("domain: %q is not a domain name", l.Domain)
	}
	return Arrival{At: at, Size: l.Size, Rcpts: l.Recipients, Domain: l.Domain}, nil
}

func parseOffset(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 {
		return 0, errors.New("offset: missing (seconds from the start, or a duration like \"1m30s\")")
	}
	var d time.Duration
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("offset: %w", err)
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("offset: %w", err)
		}
		d = v
	} else {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e9 {
			return 0, fmt.Errorf("offset: %s is not a number of seconds", raw)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("offset: must be >= 0, got %s", d)
	}
	return d, nil
}

// validDomain is a light check that keeps a trace from putting spaces or
// angle brackets into an SMTP command.
func validDomain(d string) bool {
	if len(d) > 253 {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '[' || c == ']' || c == ':') {
			return false
		}
	}
	return true
}

func (t *traceSchedule) Duration() time.Duration { return t.duration }

func (t *traceSchedule) Phases() []Phase {
	return []Phase{{Name: PhaseLoad, Start: 0, End: t.duration}}
}

// RateAt is not known in advance for a trace; the report plots what was
// offered instead.
func (t *traceSchedule) RateAt(time.Duration) float64 { return math.NaN() }

func (t *traceSchedule) String() string {
	s := fmt.Sprintf("trace %s (%d arrivals over %s", t.path, t.lines, t.duration)
	if t.speed != 1 {
		s += fmt.Sprintf(" at %gx speed", t.speed)
	}
	if t.limit > 0 {
		s += fmt.Sprintf(", at most %d", t.limit)
	}
	return s + ")"
}
