package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"runtime/debug"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// Publisher makes a message durable: the queue (*queue.Queue). A result
// with Duplicate says the queue already held a message with this ID (an
// MTA retransmitting after a lost 250); it is answered 250 like a new one.
// Errors are the queue's: ErrQueueFull (452 4.3.1) and ErrTooLarge
// (552 5.3.4) are told apart with errors.Is; any other error, and a panic,
// is temporary (451 4.3.0).
type Publisher interface {
	Publish(ctx context.Context, m *mail.Message) (queue.PublishResult, error)
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, m *mail.Message) (queue.PublishResult, error)

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, m *mail.Message) (queue.PublishResult, error) {
	return f(ctx, m)
}

// receivedHeadroom is space reserved in front of the body while it is read,
// so the Received header can be put in front without copying the message.
// A longer header (very long HELO and recipient) falls back to a copy.
const receivedHeadroom = 1024

// maxPrealloc caps the buffer sized from the client's SIZE= claim: the claim
// is only a hint and costs nothing to make, while the buffer is taken from
// smtp.max_bytes_in_flight before a byte arrives. At 1 MiB, 128 sessions
// claiming SIZE=1000000 and sending one byte each held the whole budget;
// now memory follows the bytes that came (the buffer doubles as they do).
const maxPrealloc = 64 << 10

var (
	errBodyTooBig   = errors.New("ingest: message body over smtp.max_message_bytes")
	errBudgetSpent  = errors.New("ingest: smtp.max_bytes_in_flight spent")
	errPublishPanic = errors.New("ingest: publisher panicked")
)

// Data reads the message, publishes it and decides the reply. It never
// returns a plain error (go-smtp would turn it into 554 5.0.0, a permanent
// bounce): every outcome, including a panic anywhere below, is a reply from
// codes.go.
func (s *session) Data(r io.Reader) (err error) {
	start := time.Now()
	rep, result := replyUnavailable, resultDeferred
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("panic in DATA", "panic", p, "stack", string(debug.Stack()))
			rep, result = replyUnavailable, resultDeferred
		}
		s.srv.metrics.dataSeconds.Observe(time.Since(start).Seconds())
		if result != "" {
			s.srv.metrics.outcome(result, rep)
		}
		err = rep.err()
	}()
	rep, result = s.data(r)
	return err
}

func (s *session) data(r io.Reader) (reply, string) {
	r = s.conn.dataBody(r)
	s.conn.beginData()
	defer s.conn.endData()
	tx := s.snapshot()
	if !tx.active || len(tx.rcpts) == 0 {
		_, _ = io.Copy(io.Discard, r)
		return replyBadSequence, resultRejected
	}
	buf, held, err := readBody(r, tx.size, s.srv.cfg.MaxMessageBytes, s.srv.budget)
	s.conn.progress()
	// Given back once the queue has the message (or the read failed): the
	// queue's copy is the one that counts from then on.
	defer func() { s.srv.budget.give(held) }()
	if err != nil {
		return s.readFailed(err)
	}
	buf, held = s.normalizeBareLF(buf, held)
	body := buf[receivedHeadroom:]
	receivedAt := s.srv.now()

	// The id is computed on the body as the client sent it (dot stuffing
	// undone, bare LFs made CRLF, nothing else), before Levee adds
	// anything: a retransmission of the same message gets the same id.
	header, herr := s.srv.readHeader(body)
	var id string
	if header != nil && header.Get("Message-Id") == "" && header.Get("Date") == "" {
		id = mail.UndatedID(tx.from, tx.rcpts, body, receivedAt)
	} else {
		id = mail.ID(tx.from, tx.rcpts, body)
	}
	if herr != nil {
		s.srv.log.Info("smtp message headers unreadable; accepted anyway", "id", id, "err", herr)
	}

	forRcpt := ""
	if len(tx.rcpts) == 1 {
		forRcpt = tx.rcpts[0]
	}
	info := receivedInfo{
		helo: tx.helo, remote: s.remote, hostname: s.srv.cfg.Hostname,
		id: id, rcpt: forRcpt, utf8: tx.utf8, at: receivedAt,
	}
	if state, isTLS := s.smtpConn.TLSConnectionState(); isTLS {
		info.tls = tlsComment(state)
	}
	hdr := receivedHeader(info)
	raw := prependHeader(buf, hdr)
	msg := &mail.Message{
		ID: id,
		Envelope: mail.Envelope{
			From:       tx.from,
			To:         tx.rcpts,
			RemoteAddr: s.remote,
			Helo:       tx.helo,
			ReceivedAt: receivedAt,
		},
		Raw:  raw,
		Size: int64(len(raw)),
	}

	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.PublishTimeout)
	defer cancel()
	s.conn.setPublishing(true)
	dup, err := s.srv.publish(ctx, msg)
	s.conn.setPublishing(false)
	s.conn.progress()
	rep, result := publishReply(id, dup, err)
	switch result {
	case resultAccepted, resultDuplicate:
		s.srv.metrics.size.Observe(float64(msg.Size))
		s.srv.log.Debug("smtp message queued", "id", id, "size", msg.Size, "duplicate", dup)
	default:
		s.srv.log.Warn("smtp publish failed", "id", id, "code", rep.code, "err", err)
	}
	return rep, result
}

// readBody reads DATA (or the BDAT chunks) into a buffer that starts with
// receivedHeadroom spare bytes, and enforces smtp.max_message_bytes: go-smtp
// has no limit (see sizeAdvert). The buffer is taken from budget as it
// grows (doubling, so a message costs at most twice its size for a moment);
// held is what it took, to be given back by the caller once the message is
// published, also after an error. Past the limit or the budget the rest is
// read and dropped, so the reply comes at the end of the data, where the
// client expects it.
func readBody(r io.Reader, sizeHint, limit int64, budget *memoryBudget) (buf []byte, held int64, err error) {
	maxCap := receivedHeadroom + limit + 1 // one byte over the limit tells it is over
	size := min(receivedHeadroom+min(max(sizeHint, 0), limit, maxPrealloc)+bytes.MinRead, maxCap)
	if !budget.take(size) {
		_, _ = io.Copy(io.Discard, r)
		return nil, 0, errBudgetSpent
	}
	held = size
	buf = make([]byte, receivedHeadroom, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == maxCap {
				budget.give(held)
				buf = nil
				_, _ = io.Copy(io.Discard, r)
				return nil, 0, errBodyTooBig
			}
			grown := min(2*int64(cap(buf)), maxCap)
			if !budget.take(grown) {
				// Given back before the rest is read and dropped (which
				// takes as long as the client sends), so that the
				// sessions still within the budget can finish.
				budget.give(held)
				buf = nil
				_, _ = io.Copy(io.Discard, r)
				return nil, 0, errBudgetSpent
			}
			next := make([]byte, len(buf), grown)
			copy(next, buf)
			budget.give(held)
			buf, held = next, grown
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case rerr == io.EOF:
			if int64(len(buf)) == maxCap {
				return nil, held, errBodyTooBig
			}
			return buf, held, nil
		case rerr != nil:
			return nil, held, rerr
		}
	}
}

// normalizeBareLF makes every LF not preceded by CR a CRLF, in buf after
// its receivedHeadroom (Postfix's default since 3.9, smtpd_forbid_bare_newline
// = normalize: such a line is taken as if it ended in CRLF). The end of
// DATA is still only CRLF "." CRLF (go-smtp's reader): a bare-LF "." line is
// content, never the end of the message, and stored as CRLF "." CRLF it is
// what any relay dot-stuffs. buf is returned as is when it has no bare LF
// (nearly always), else copied once into a buffer taken from the memory
// budget (held is what the session holds then). A message the CRs would
// take past smtp.max_message_bytes (up to one byte a line), or whose copy
// the budget cannot hold, is kept as sent: the queue might refuse it as too
// large (552, a bounce), and bare LFs are not worth a refusal.
func (s *session) normalizeBareLF(buf []byte, held int64) ([]byte, int64) {
	bare := countBareLF(buf[receivedHeadroom:])
	if bare == 0 || int64(len(buf)-receivedHeadroom+bare) > s.srv.cfg.MaxMessageBytes || !s.srv.budget.take(int64(len(buf)+bare)) {
		return buf, held
	}
	return withCRLF(buf, bare), held + int64(len(buf)+bare)
}

// countBareLF counts the LFs of body not preceded by CR.
func countBareLF(body []byte) int {
	bare := 0
	for i := bytes.IndexByte(body, '\n'); i >= 0; {
		if i == 0 || body[i-1] != '\r' {
			bare++
		}
		j := bytes.IndexByte(body[i+1:], '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return bare
}

// withCRLF copies buf (headroom and body) with a CR before each of the
// body's bare LFs.
func withCRLF(buf []byte, bare int) []byte {
	body := buf[receivedHeadroom:]
	out := make([]byte, receivedHeadroom, len(buf)+bare)
	for i, c := range body {
		if c == '\n' && (i == 0 || body[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// readFailed decides the reply when DATA could not be read completely.
func (s *session) readFailed(err error) (reply, string) {
	var kicked *kickedError
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge), errors.Is(err, errBodyTooBig):
		return replyTooBig, resultRejected
	case errors.Is(err, errBudgetSpent):
		return replyMemoryFull, resultDeferred
	case errors.Is(err, smtp.ErrTooLongLine):
		// go-smtp cannot resynchronise after an overlong line: make this
		// reply the last one instead of letting go-smtp add its own 500.
		s.conn.closeAfterReply()
		return replyLineTooLong, resultRejected
	case errors.As(err, &kicked):
		// Idle timeout or shutdown: the reply was written and the
		// connection closed already; this one only feeds the metrics.
		return kicked.reply, kicked.reply.result()
	case errors.Is(err, smtp.ErrDataReset):
		// BDAT aborted by RSET, or by go-smtp after its own 552: nobody
		// reads this reply, and the outcome was counted where it was decided.
		return replyUnavailable, ""
	default:
		// The client went away mid-message (or the read failed otherwise).
		s.srv.log.Debug("smtp DATA read failed", "remote", s.remote, "err", err)
		return replyUnavailable, resultDeferred
	}
}

// publish calls the Publisher, turning a panic into an error.
func (srv *Server) publish(ctx context.Context, m *mail.Message) (dup bool, err error) {
	var res queue.PublishResult
	defer func() {
		if p := recover(); p != nil {
			srv.log.Error("panic in Publisher", "panic", p, "stack", string(debug.Stack()))
			dup, err = false, fmt.Errorf("%w: %v", errPublishPanic, p)
		}
	}()
	srv.pressure.begin()
	defer srv.pressure.end()
	res, err = srv.pub.Publish(ctx, m)
	return res.Duplicate, err
}

// publishReply maps Publish's outcome to a reply. 250 only for a nil error.
func publishReply(id string, dup bool, err error) (reply, string) {
	switch {
	case err == nil && dup:
		return replyQueued(id), resultDuplicate
	case err == nil:
		return replyQueued(id), resultAccepted
	case errors.Is(err, queue.ErrQueueFull):
		return replyQueueFull, resultDeferred
	case errors.Is(err, queue.ErrTooLarge):
		return replyTooBig, resultRejected
	default:
		// queue.ErrUnavailable, the publish timeout, the lifetime context ending,
		// a panic, and anything unexpected: temporary.
		return replyUnavailable, resultDeferred
	}
}

// readHeader reads the header block and counts the outcome: Levee never
// refuses messy mail, and even a header block that cannot be read is
// accepted (the header is then nil). The MIME parse is the worker's, once
// per message (levee_worker_parse_total).
func (srv *Server) readHeader(body []byte) (textproto.MIMEHeader, error) {
	h, err := mail.ReadHeader(body)
	if err != nil {
		srv.metrics.parse.WithLabelValues(parseUnreadable).Inc()
		return nil, err
	}
	srv.metrics.parse.WithLabelValues(parseOK).Inc()
	return h, nil
}
