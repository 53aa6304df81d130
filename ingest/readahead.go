package ingest

import (
	"bytes"
	"io"
	"strings"

	"github.com/emersion/go-smtp"
)

// Levee reads a plaintext DATA body itself instead of through go-smtp.
//
// go-smtp reads DATA one byte at a time: a dot-unstuffing state machine
// (its dataReader) over bufio.ReadByte, under which its lineLimitReader
// scans every byte again for smtp.max_line_length. In a profile of
// `make surge` (8 KiB messages on average) that was a fifth of Levee's CPU.
// bodyReader does the same work a line at a time (bytes.IndexByte and a
// copy), with the same results, byte for byte: the same end of data, the
// same dot unstuffing (quirks included, see step), the same line limit.
//
// That is only possible where go-smtp's buffered reader holds nothing of
// the body when DATA is answered. So, before TLS, trackedConn hands go-smtp
// one command line per Read and keeps what follows (a pipelining client's
// next commands, the body) in its own buffer, rbuf; after the DATA line,
// go-smtp's buffer is empty. The session then reads the body from rbuf and
// the socket (dataBody), and go-smtp, which still drains its own reader
// after the session's Data returns, is handed the end-of-data line ".\r\n"
// and nothing else. After STARTTLS, and for BDAT, go-smtp reads as before.

// readAheadSize is how much one read from the socket takes at most.
const readAheadSize = 16 << 10

// endOfData is what go-smtp's dataReader is handed once Levee has read the
// body: on its own, the end of an empty message.
var endOfData = []byte(".\r\n")

// readPlain is Read before TLS: one line at most from rbuf, filled from the
// network when empty. The bytes after a STARTTLS line are dropped, as
// go-smtp drops what its reader buffered: commands a man in the middle
// slipped in before the handshake must not be taken as sent under TLS.
func (c *trackedConn) readPlain(b []byte) (int, error) {
	if c.body != nil {
		// go-smtp drains the body after Data: finish it for go-smtp (the
		// session may have stopped reading early, after a panic), then
		// hand it the end of data.
		if err := c.body.finish(); err != nil {
			return 0, err // the body ended without its end-of-data line: so does the session
		}
		c.body = nil
		c.inject = endOfData
	}
	if len(c.inject) > 0 {
		n := copy(b, c.inject)
		c.inject = c.inject[n:]
		return n, nil
	}
	if c.rpos == len(c.rbuf) {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	avail := c.rbuf[c.rpos:]
	if i := bytes.IndexByte(avail, '\n'); i >= 0 {
		avail = avail[:i+1]
	}
	n := copy(b, avail)
	c.noteLine(avail[:n])
	c.rpos += n
	if c.startTLS {
		c.startTLS = false
		c.rpos, c.rbuf = 0, c.rbuf[:0]
	}
	return n, nil
}

// fill reads what the network has into rbuf, which must be empty. The
// replies waiting in pending leave first: the client may be waiting for
// them before it sends more.
func (c *trackedConn) fill() error {
	if err := c.flush(); err != nil {
		return err
	}
	if c.rbuf == nil {
		c.rbuf = make([]byte, 0, readAheadSize)
	}
	// A Read may return nothing and no error; bufio gives up after 100.
	for range 100 {
		n, err := c.readConn(c.rbuf[:cap(c.rbuf)])
		c.rpos, c.rbuf = 0, c.rbuf[:n]
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// noteLine follows the lines handed to go-smtp, to know which command it
// is answering: DATA (the body may be read by Levee) or STARTTLS (the rest
// of rbuf is dropped). part is a whole line or a piece of one.
func (c *trackedConn) noteLine(part []byte) {
	if c.lineLen < len(c.lineHead) {
		copy(c.lineHead[c.lineLen:], part)
	}
	c.lineLen += len(part)
	if len(part) == 0 || part[len(part)-1] != '\n' {
		c.lastWasData.Store(false)
		return
	}
	// go-smtp takes the line up to LF with every trailing CR and LF cut
	// (parseCmd), and STARTTLS by its first eight bytes.
	head := string(c.lineHead[:min(c.lineLen, len(c.lineHead))])
	line := strings.TrimRight(head, "\r\n")
	whole := c.lineLen <= len(c.lineHead)
	c.lastWasData.Store(whole && strings.EqualFold(line, "DATA"))
	c.startTLS = c.srv.tlsEnabled && len(head) >= len("STARTTLS") && strings.EqualFold(head[:len("STARTTLS")], "STARTTLS")
	c.lineLen = 0
}

// dataBody returns the reader of the DATA body go-smtp is about to hand the
// session as r: Levee's own when it can (see the top of this file), else r.
func (c *trackedConn) dataBody(r io.Reader) io.Reader {
	// lastWasData is false while go-smtp reads BDAT chunks (it calls Data
	// on a goroutine of its own then, and reads on): only a DATA line
	// leaves the read side to the session's goroutine.
	if c == nil || !c.srv.readsData || c.tls.Load() || !c.lastWasData.Load() || len(c.inject) > 0 {
		return r
	}
	c.lastWasData.Store(false)
	c.srv.dataRead.Add(1)
	c.body = &bodyReader{c: c, limit: c.srv.cfg.MaxLineLength, lineLen: 1}
	return c.body
}

// bodyReader reads a DATA body from trackedConn's rbuf and the network as
// go-smtp's dataReader would through its lineLimitReader: the same bytes
// out, the same end, the same errors.
type bodyReader struct {
	c     *trackedConn
	state int
	// lineLen is lineLimitReader's count: the bytes since the last LF,
	// that LF included (1 right after the DATA line); limit is its
	// LineLimit (0: none).
	lineLen, limit int
	// err is sticky: the body ended with it (io.EOF at the end-of-data
	// line). connErr is the same end as the connection gave it, which
	// go-smtp's own reads get from then on: io.EOF where the session got
	// io.ErrUnexpectedEOF, as go-smtp's bufio would.
	err, connErr error
}

// The states of go-smtp's dataReader (data.go), from net/textproto.
const (
	stateBeginLine = iota // beginning of line; initial state
	stateDot              // read . at beginning of line
	stateDotCR            // read .\r at beginning of line
	stateCR               // read \r (possibly at end of line)
	stateData             // reading data in middle of line
	stateEOF              // reached .\r\n end marker line
)

func (r *bodyReader) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) && r.err == nil && r.state != stateEOF {
		c := r.c
		if c.rpos == len(c.rbuf) {
			if err := c.fill(); err != nil {
				r.connErr, r.err = err, err
				if err == io.EOF {
					r.err = io.ErrUnexpectedEOF
				}
				break
			}
		}
		avail := c.rbuf[c.rpos:]
		if r.state != stateData {
			if !r.count(avail[:1]) {
				break
			}
			c.rpos++
			if out, keep := r.step(avail[0]); keep {
				b[n] = out
				n++
			}
			continue
		}
		// Inside a line only CR changes the state: copy up to it at once.
		run := avail[:min(len(avail), len(b)-n)]
		if i := bytes.IndexByte(run, '\r'); i >= 0 {
			run = run[:i+1]
			r.state = stateCR
		}
		if !r.count(run) {
			break
		}
		n += copy(b[n:], run)
		c.rpos += len(run)
	}
	if r.err == nil && r.state == stateEOF {
		r.err = io.EOF
	}
	if n > 0 && r.err != nil && r.err != io.EOF {
		// Hand over what was read; the error comes with the next Read.
		return n, nil
	}
	return n, r.err
}

// step is dataReader's state machine for one byte: the next state, and the
// byte to hand on unless keep is false. Its quirks are kept: a dot starting
// a line is dropped, and so is the CR of ".\r" not followed by LF; only
// CRLF (not a bare LF, not CR CR LF) starts a new line.
func (r *bodyReader) step(ch byte) (out byte, keep bool) {
	switch r.state {
	case stateBeginLine:
		switch ch {
		case '.':
			r.state = stateDot
			return 0, false
		case '\r':
			r.state = stateCR
		default:
			r.state = stateData
		}
	case stateDot:
		if ch == '\r' {
			r.state = stateDotCR
			return 0, false
		}
		r.state = stateData
	case stateDotCR:
		if ch == '\n' {
			r.state = stateEOF
			return 0, false
		}
		r.state = stateData
	case stateCR:
		if ch == '\n' {
			r.state = stateBeginLine
		} else {
			r.state = stateData
		}
	}
	return ch, true
}

// count is lineLimitReader's check over raw bytes about to be taken; false
// (and the sticky ErrTooLongLine, as go-smtp's reader keeps returning it)
// once a line is longer than the limit.
func (r *bodyReader) count(raw []byte) bool {
	if r.limit <= 0 {
		return true
	}
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			r.lineLen += len(raw)
			break
		}
		if r.lineLen+i > r.limit {
			r.lineLen += i
			break
		}
		r.lineLen = 1
		raw = raw[i+1:]
	}
	if r.lineLen > r.limit {
		r.err, r.connErr = smtp.ErrTooLongLine, smtp.ErrTooLongLine
		return false
	}
	return true
}

// finish reads the body to its end, dropping it, unless it already ended;
// nil once it ended at the end-of-data line, else the connection's error.
func (r *bodyReader) finish() error {
	var scratch [4 << 10]byte
	for r.err == nil {
		_, _ = r.Read(scratch[:])
	}
	if r.err == io.EOF {
		return nil
	}
	return r.connErr
}
