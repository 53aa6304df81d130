package ingest

import (
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one SMTP connection's state for go-smtp. No AUTH: Levee is an
// inbound MX (session does not implement smtp.AuthSession).
type session struct {
	srv      *Server
	conn     *trackedConn // nil only if go-smtp handed us a connection we did not wrap
	smtpConn *smtp.Conn
	remote   string

	// mu guards tx: with BDAT (CHUNKING, which go-smtp always offers) Data
	// runs on a goroutine of its own while RSET may arrive on the
	// connection's goroutine.
	mu sync.Mutex
	tx transaction
}

// transaction is what MAIL and RCPT collected for the next DATA.
type transaction struct {
	active bool
	from   string
	rcpts  []string
	seen   map[string]struct{} // lower-cased recipients, to drop repeats
	size   int64               // the client's SIZE= estimate, 0 if none
	utf8   bool                // SMTPUTF8 was given
	helo   string              // HELO/EHLO name at MAIL time
}

func (s *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer s.srv.recoverCommand("MAIL", &err)
	if s.srv.draining.Load() {
		s.conn.closeAfterReply()
		return s.srv.refuse(replyShuttingDown)
	}
	s.mu.Lock()
	active := s.tx.active
	s.mu.Unlock()
	if active {
		return s.srv.refuse(replyBadSequence)
	}
	if from != "" && !validAddressDomain(domainPart(from)) {
		return s.srv.refuse(replyBadSender)
	}
	switch checkAddress(from, opts != nil && opts.UTF8, false) {
	case addressBadBytes:
		return s.srv.refuse(replyBadSender)
	case addressNeedsSMTPUTF8:
		return s.srv.refuse(replyNeedsSMTPUTF8)
	}
	if opts != nil && opts.Size > s.srv.cfg.MaxMessageBytes {
		return s.srv.refuse(replyTooBig)
	}
	// Room for the message in memory: what SIZE= announces, or at least a
	// small message's worth. Refused here, the sender wastes no bandwidth.
	need := int64(minRoomAtMail)
	if opts != nil {
		need = max(need, min(opts.Size, s.srv.cfg.MaxMessageBytes))
	}
	if s.srv.budget.room() < need {
		return s.srv.refuse(replyMemoryFull)
	}
	// Checked before any DATA is read: a sender refused here wastes no
	// bandwidth and the queue takes no more work while nearly full.
	if s.srv.wm.refuse() {
		return s.srv.refuse(replyWatermark)
	}
	// Last, so that only a transaction that starts takes from the allowance.
	if scope := s.srv.rates.allow(hostOf(s.remote), time.Now()); scope != rateAllowed {
		s.srv.metrics.rateLimited.WithLabelValues(string(scope)).Inc()
		return s.srv.refuse(replyRateLimited)
	}
	tx := transaction{active: true, from: from, seen: map[string]struct{}{}, helo: s.smtpConn.Hostname()}
	if opts != nil {
		tx.size, tx.utf8 = opts.Size, opts.UTF8
	}
	s.mu.Lock()
	s.tx = tx
	s.mu.Unlock()
	s.conn.setBusy(true)
	s.conn.progress()
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) (err error) {
	defer s.srv.recoverCommand("RCPT", &err)
	d := domainPart(to)
	if !validAddressDomain(d) {
		return s.srv.refuse(replyBadRecipient)
	}
	if !s.srv.acceptsDomain(d) {
		return s.srv.refuse(replyUnknownDomain)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tx.active {
		return s.srv.refuse(replyBadSequence)
	}
	switch checkAddress(to, s.tx.utf8, true) {
	case addressBadBytes, addressLocalTooLong:
		return s.srv.refuse(replyBadRecipient)
	case addressNeedsSMTPUTF8:
		return s.srv.refuse(replyNeedsSMTPUTF8)
	case addressQuotedAt:
		return s.srv.refuse(replyAmbiguousRecipient)
	}
	key := strings.ToLower(to)
	if _, repeat := s.tx.seen[key]; repeat {
		return nil // one copy is enough; RFC 5321 lets us accept the repeat
	}
	if len(s.tx.rcpts) >= s.srv.cfg.MaxRecipients {
		return s.srv.refuse(replyTooManyRecipients)
	}
	s.tx.seen[key] = struct{}{}
	s.tx.rcpts = append(s.tx.rcpts, to)
	s.conn.progress()
	return nil
}

// Reset ends the transaction: RSET, a new EHLO, and go-smtp after every DATA
// reply (so the connection stops being busy only once that reply is out).
func (s *session) Reset() {
	s.mu.Lock()
	s.tx = transaction{}
	s.mu.Unlock()
	s.conn.setBusy(false)
}

func (s *session) Logout() error {
	s.Reset()
	return nil
}

// snapshot copies the transaction for Data.
func (s *session) snapshot() transaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.tx
	tx.rcpts = append([]string(nil), s.tx.rcpts...)
	return tx
}

// refuse counts a refusal at MAIL or RCPT and returns it as go-smtp wants it.
func (srv *Server) refuse(r reply) error {
	srv.metrics.outcome(r.result(), r)
	return r.err()
}

// recoverCommand turns a panic in Mail or Rcpt into 451 4.3.0 rather than
// go-smtp's 421-and-close, and keeps the decision in codes.go.
func (srv *Server) recoverCommand(cmd string, err *error) {
	if p := recover(); p != nil {
		srv.log.Error("panic in smtp command", "command", cmd, "panic", p, "stack", string(debug.Stack()))
		*err = srv.refuse(replyUnavailable)
	}
}

// domainPart is the text after the last '@' (go-smtp guarantees one, with a
// non-empty local part; a quoted local part may itself contain '@').
func domainPart(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return addr[at+1:]
}

// hostOf is the host of an ip:port, or the whole string if it has no port.
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
