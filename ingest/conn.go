package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// refuseWriteTimeout bounds the one-line reply to a connection refused at
// accept time, so a refused client can never stall the accept loop.
const refuseWriteTimeout = time.Second

// aLongTimeAgo is a read deadline in the past: it wakes a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// listener admits connections for go-smtp. go-smtp creates a session only at
// HELO, so connection limits and the shutdown refusal live here, where the
// 421 can be the greeting itself.
type listener struct {
	net.Listener
	srv *Server

	closeOnce sync.Once
	closeErr  error

	// With smtp.proxy_protocol_from, acceptProxied accepts on its own
	// goroutine and hands admitted connections over on ready until closed.
	ready  chan accepted
	closed chan struct{}
	// headerTimeout is proxyHeaderTimeout when the listener was made.
	headerTimeout time.Duration
}

func newListener(l net.Listener, srv *Server) *listener {
	ln := &listener{Listener: l, srv: srv, closed: make(chan struct{}), headerTimeout: proxyHeaderTimeout}
	if len(srv.proxies) > 0 {
		ln.ready = make(chan accepted)
		go ln.acceptProxied()
	}
	return ln
}

func (l *listener) Accept() (net.Conn, error) {
	if l.ready != nil {
		select {
		case a := <-l.ready:
			return a.conn, a.err
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.srv.admit(nc); c != nil {
			return c, nil
		}
	}
}

// Close is idempotent: both Shutdown and go-smtp close the listener.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.closeErr = l.Listener.Close()
	})
	return l.closeErr
}

// admit returns the tracked connection, or nil after refusing nc.
func (s *Server) admit(nc net.Conn) net.Conn {
	if s.draining.Load() {
		s.metrics.sessions.WithLabelValues(sessionRejectedShutdown).Inc()
		refuseConn(nc, replyShuttingDown)
		return nil
	}
	now := time.Now()
	c := &trackedConn{
		Conn:         nc,
		srv:          s,
		ip:           remoteIP(nc.RemoteAddr()),
		idle:         s.cfg.ReadTimeout,
		writeTimeout: s.cfg.WriteTimeout,
		endOfSession: now.Add(s.cfg.MaxSessionDuration),
	}
	c.progressAt.Store(now.UnixNano())
	admitted, stalled := s.conns.add(c, now)
	if !admitted {
		s.metrics.sessions.WithLabelValues(sessionRejectedLimit).Inc()
		s.log.Warn("smtp connection refused: limit reached", "remote_ip", c.ip)
		refuseConn(nc, replyTooManyConnections)
		return nil
	}
	if stalled != nil {
		s.log.Info("smtp connection closed to free a slot: no command completed for smtp.stress_timeout", "remote_ip", stalled.ip)
		stalled.evict()
	}
	s.metrics.sessions.WithLabelValues(sessionAccepted).Inc()
	return c
}

func refuseConn(nc net.Conn, r reply) {
	_ = nc.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, _ = io.WriteString(nc, r.line())
	_ = nc.Close()
}

// clientKey is what smtp.max_connections_per_ip counts by: an IPv4
// address, or the /64 of an IPv6 one (what one host or customer is given;
// one machine can take any number of addresses in it).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Unmap().Is6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

func remoteIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// trackedConn is the net.Conn go-smtp sees. It owns three things go-smtp
// does not do:
//
//   - the read deadline, as an idle timeout renewed before every Read, also
//     while DATA streams in (go-smtp sets its ReadTimeout once per command
//     line and never renews it inside DATA: go-smtp #196, so Levee sets
//     go-smtp's ReadTimeout to 0 and SetReadDeadline here is a no-op);
//   - the slowloris defences go-smtp lacks: a minimum DATA rate, a session
//     lifetime, and giving a stalled connection's slot to a new client when
//     every slot is taken;
//   - closing the connection right after a reply that must end it;
//   - being found and closed by Shutdown (go-smtp's Shutdown leaves open
//     connections open).
type trackedConn struct {
	net.Conn
	srv          *Server
	ip           string
	idle         time.Duration
	writeTimeout time.Duration

	// busy is true while a transaction is open: from an accepted MAIL until
	// the transaction is reset after its DATA reply. Shutdown lets busy
	// connections finish and closes the others.
	busy atomic.Bool
	// closeAfterWrite makes the next reply the last one.
	closeAfterWrite atomic.Bool

	// endOfSession is when smtp.max_session_duration ends the connection.
	endOfSession time.Time
	// progressAt is when the session last moved mail forward (UnixNano):
	// admitted, a MAIL or RCPT taken, a message read to its end. NOOP, RSET
	// and the like do not count, so a client cannot hold its slot with them
	// while the slots are short (see stalledSince).
	progressAt atomic.Int64
	// publishing: the message is read and waits on the queue; never evicted.
	publishing atomic.Bool
	// dataStart is when the current DATA or BDAT began (UnixNano; 0 outside
	// one) and dataBytes what has been read since, for smtp.min_data_rate.
	dataStart, dataBytes atomic.Int64
	// evicted: the slot went to a new client; the next Read says goodbye.
	evicted atomic.Bool
	// tls is set once a STARTTLS handshake begins: from then on the bytes
	// are TLS records. tlsConn (guarded by wmu) is the TLS connection on top,
	// once go-smtp has a session on it.
	tls     atomic.Bool
	tlsConn *tls.Conn

	wmu    sync.Mutex // serialises writes with kick and close
	closed bool       // guarded by wmu
	lastCR bool       // guarded by wmu: the previous write ended in CR
	// pending (guarded by wmu) holds replies not yet sent: go-smtp flushes
	// every reply line on its own (an EHLO answer is a dozen writes), so
	// the replies wait here until the session next needs input, when they
	// leave in one write. A pipelining client's MAIL, RCPT and DATA then
	// cost one reply packet instead of three, and a non-pipelining client
	// loses nothing: the session always reads right after it replies.
	pending []byte
	// writeDeadline (guarded by wmu) is the last write deadline set.
	writeDeadline time.Time

	// The read side before TLS (readahead.go), used by the session's
	// goroutine only: rbuf[rpos:] is read from the network and not yet
	// handed on; lineHead and lineLen follow the line being handed to
	// go-smtp; lastWasData says the last whole line was DATA (atomic: a
	// BDAT session's Data goroutine looks); startTLS that it was STARTTLS;
	// body is the DATA body Levee reads itself; inject what go-smtp gets
	// before anything else.
	rbuf        []byte
	rpos        int
	lineHead    [8]byte
	lineLen     int
	lastWasData atomic.Bool
	startTLS    bool
	body        *bodyReader
	inject      []byte
}

// maxPendingReplies is how many reply bytes are held before they are sent
// anyway (more than any one reply go-smtp writes).
const maxPendingReplies = 8 << 10

// kickedError is what Read returns after the connection was closed with a
// final reply. It matches net.ErrClosed, so go-smtp ends the session
// quietly instead of writing a reply of its own to a closed connection.
type kickedError struct{ reply reply }

func (e *kickedError) Error() string        { return "ingest: connection closed: " + e.reply.text }
func (e *kickedError) Is(target error) bool { return target == net.ErrClosed }

func (c *trackedConn) Read(b []byte) (int, error) {
	if !c.tls.Load() {
		return c.readPlain(b)
	}
	// The handshake's first reads go through readPlain (tls is set only
	// once the ClientHello is read), so what a client sent right behind its
	// ClientHello may wait in rbuf: TLS records too, handed on first.
	if c.rpos < len(c.rbuf) {
		n := copy(b, c.rbuf[c.rpos:])
		c.rpos += n
		return n, nil
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.readConn(b)
}

// readConn reads the network under the deadlines and limits below.
func (c *trackedConn) readConn(b []byte) (int, error) {
	for {
		deadline, why := c.readDeadline(time.Now())
		// An error here means the connection is closed (or, for net.Pipe,
		// that the peer closed it): the Read below then reports the real
		// condition (EOF) rather than a deadline error.
		_ = c.Conn.SetReadDeadline(deadline)
		// Checked after setting the deadline: Shutdown (and evict) set their
		// flag before they interrupt reads, so either this sees the flag or
		// the interrupt lands after the deadline above and wakes the Read below.
		if c.srv.draining.Load() && !c.busy.Load() {
			return 0, c.kick(replyShuttingDown)
		}
		if c.evicted.Load() {
			return 0, c.kick(replyStalled)
		}
		n, err := c.Conn.Read(b)
		if c.dataStart.Load() != 0 {
			c.dataBytes.Add(int64(n))
		}
		if n == 0 && isTimeout(err) {
			if time.Now().Before(deadline) {
				continue // woken by Shutdown or evict, not a deadline: look again
			}
			return 0, c.kick(why)
		}
		return n, err
	}
}

// readDeadline is the earliest of the idle deadline (renewed by every
// read), the session's end and, inside DATA, the time by which the bytes
// read so far should have arrived at smtp.min_data_rate after a grace of
// smtp.read_timeout (Postfix's smtpd_min_data_rate); with the reply for it.
func (c *trackedConn) readDeadline(now time.Time) (time.Time, reply) {
	deadline, why := now.Add(c.idle), replyIdleTimeout
	if c.endOfSession.Before(deadline) {
		deadline, why = c.endOfSession, replySessionTooLong
	}
	if due, inData := c.dataDue(c.idle); inData && due.Before(deadline) {
		deadline, why = due, replyDataTooSlow
	}
	return deadline, why
}

// dataDue is, inside a DATA or BDAT transfer, when the bytes read so far
// fall behind smtp.min_data_rate counted from grace after the transfer
// began (each byte earns 1/MinDataRate of a second).
func (c *trackedConn) dataDue(grace time.Duration) (due time.Time, inData bool) {
	start := c.dataStart.Load()
	if start == 0 {
		return time.Time{}, false
	}
	earned := time.Duration(float64(c.dataBytes.Load()) / float64(c.srv.cfg.MinDataRate) * float64(time.Second))
	return time.Unix(0, start).Add(grace + earned), true
}

// stalledSince says whether the connection may give its slot to a new
// client while every slot is taken (Postfix's stress mode shortens its
// timeouts to the same end), and since when it has been stalled:
//
//   - inside DATA, when its bytes are behind smtp.min_data_rate counted
//     from smtp.stress_timeout after the DATA began (a sender streaming a
//     large message at any real speed is never behind);
//   - otherwise, when it moved no mail forward (MAIL, RCPT, a message
//     read) for smtp.stress_timeout;
//   - never while its message waits on the queue, or once evicted.
func (c *trackedConn) stalledSince(now time.Time) (time.Time, bool) {
	if c.publishing.Load() || c.evicted.Load() {
		return time.Time{}, false
	}
	grace := c.srv.cfg.StressTimeout
	if due, inData := c.dataDue(grace); inData {
		return due, now.After(due)
	}
	last := time.Unix(0, c.progressAt.Load())
	return last, now.Sub(last) > grace
}

// progress notes that the session moved mail forward.
func (c *trackedConn) progress() {
	if c != nil {
		c.progressAt.Store(time.Now().UnixNano())
	}
}

// setPublishing marks the wait on the queue, during which the connection
// keeps its slot whatever the pressure.
func (c *trackedConn) setPublishing(p bool) {
	if c != nil {
		c.publishing.Store(p)
	}
}

// beginData and endData bracket a DATA or BDAT transfer for the rate check.
func (c *trackedConn) beginData() {
	if c != nil {
		c.dataBytes.Store(0)
		c.dataStart.Store(time.Now().UnixNano())
	}
}

func (c *trackedConn) endData() {
	if c != nil {
		c.dataStart.Store(0)
	}
}

// evict makes the connection give up its slot: its blocked Read wakes and
// writes the goodbye on the session's own goroutine.
func (c *trackedConn) evict() {
	c.evicted.Store(true)
	c.interrupt()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *trackedConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.tls.Load() && c.tlsConn == nil && len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		// A plain reply where TLS records were due (their first byte is a
		// record type, 20 to 24): go-smtp's "Handshake error". The
		// session goes on unencrypted.
		c.tls.Store(false)
	}
	if c.tls.Load() {
		// TLS records: the reply inside was written by go-smtp through
		// the TLS connection, past the reach of cleanReply and sizeAdvert.
		c.pending = append(c.pending, b...)
	} else {
		c.pending = append(c.pending, c.cleanReply(c.srv.sizeAdvert.fix(b))...)
	}
	// go-smtp's count is of what it wrote, not of the corrected reply.
	if c.closeAfterWrite.Load() {
		err := c.flushLocked()
		c.closeLocked()
		return len(b), err
	}
	if len(c.pending) >= maxPendingReplies {
		return len(b), c.flushLocked()
	}
	return len(b), nil
}

// flush sends the replies held back; Read calls it before it may block.
func (c *trackedConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

func (c *trackedConn) flushLocked() error {
	if len(c.pending) == 0 || c.closed {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	c.pending = c.pending[:0]
	return err
}

// cleanReply makes sure every reply line is well formed. go-smtp echoes
// client text into some replies ("Syntax errors, %v command unrecognized",
// "I'll make sure <%v> gets this"), and a bare CR, bare LF or other control
// byte in it would break the sender's reply parser. RFC 5321 reply text is
// TAB and printable characters (plus UTF-8 under SMTPUTF8), so any other
// control byte, and a CR or LF that is not part of a CRLF, becomes '?'. The
// length is unchanged, so Write's count stays true. Called with wmu held.
func (c *trackedConn) cleanReply(b []byte) []byte {
	var out []byte
	set := func(i int, v byte) {
		if out == nil {
			out = append([]byte(nil), b...)
		}
		out[i] = v
	}
	for i, ch := range b {
		switch {
		case ch == '\r':
			// A CR at the very end is taken to start the CRLF of a reply
			// split across writes (only for replies longer than go-smtp's
			// 4 KiB write buffer).
			if i+1 < len(b) && b[i+1] != '\n' {
				set(i, '?')
			}
		case ch == '\n':
			prevCR := c.lastCR
			if i > 0 {
				prevCR = b[i-1] == '\r'
			}
			if !prevCR {
				set(i, '?')
			}
		case ch < 0x20 && ch != '\t', ch == 0x7f:
			set(i, '?')
		}
	}
	c.lastCR = len(b) > 0 && b[len(b)-1] == '\r'
	if out == nil {
		return b
	}
	return out
}

// SetReadDeadline is a no-op: the idle deadline is owned by Read.
func (c *trackedConn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets only the write deadline, for the same reason.
func (c *trackedConn) SetDeadline(t time.Time) error { return c.SetWriteDeadline(t) }

// SetWriteDeadline sends the held replies first when the new deadline is
// earlier than the one they were written under: tls.Conn's Close writes its
// close_notify and then sets the deadline to now, which would otherwise
// fail the last reply's flush. go-smtp moves the deadline later before
// every reply, which keeps them held.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.setWriteDeadlineLocked(t)
}

func (c *trackedConn) setWriteDeadlineLocked(t time.Time) error {
	if earlier := !t.IsZero() && (c.writeDeadline.IsZero() || t.Before(c.writeDeadline)); earlier && len(c.pending) > 0 {
		_ = c.flushLocked()
	}
	c.writeDeadline = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *trackedConn) Close() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.closeLocked()
}

func (c *trackedConn) closeLocked() error {
	if c.closed {
		return nil
	}
	_ = c.flushLocked()
	c.closed = true
	err := c.Conn.Close()
	c.srv.conns.remove(c)
	return err
}

// kick writes r as the last reply and closes the connection. It runs on the
// session's own goroutine (from Read), so it never races a go-smtp reply.
func (c *trackedConn) kick(r reply) error {
	if c.tls.Load() {
		return c.kickTLS(r)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if reason, ok := timeoutReasons[r]; ok && !c.closed {
		c.srv.metrics.timeouts.WithLabelValues(reason).Inc()
	}
	if !c.closed {
		_ = c.setWriteDeadlineLocked(time.Now().Add(c.writeTimeout))
		c.pending = append(c.pending, r.line()...)
		c.closeLocked()
	}
	return &kickedError{reply: r}
}

// kickTLS is kick after STARTTLS: the goodbye must be a TLS record, so it
// goes through the TLS connection (which writes through c.Write, closing
// after it). During the handshake there is no session to say it in: the
// connection just closes.
func (c *trackedConn) kickTLS(r reply) error {
	c.wmu.Lock()
	closed := c.closed
	if reason, ok := timeoutReasons[r]; ok && !closed {
		c.srv.metrics.timeouts.WithLabelValues(reason).Inc()
	}
	tc := c.tlsConn
	if tc == nil {
		c.closeLocked()
	}
	c.wmu.Unlock()
	if tc != nil && !closed {
		c.closeAfterWrite.Store(true)
		_ = c.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		_, _ = tc.Write([]byte(r.line()))
		_ = c.Close()
	}
	return &kickedError{reply: r}
}

// interrupt wakes a Read blocked at the command prompt so it can see that
// the server is draining.
func (c *trackedConn) interrupt() { _ = c.Conn.SetReadDeadline(aLongTimeAgo) }

// forceClose closes the socket without taking wmu (a write may be blocked
// holding it); the session's goroutine then fails and calls Close.
func (c *trackedConn) forceClose() { _ = c.Conn.Close() }

func (c *trackedConn) setBusy(b bool) {
	if c != nil {
		c.busy.Store(b)
	}
}

func (c *trackedConn) closeAfterReply() {
	if c != nil {
		c.closeAfterWrite.Store(true)
	}
}

// connRegistry tracks open connections for the limits, the active-sessions
// gauge and Shutdown.
type connRegistry struct {
	max, maxPerIP int
	onChange      func(n int)

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	perIP   map[string]int
	changed chan struct{} // closed and replaced on every remove
}

func newConnRegistry(max, maxPerIP int, onChange func(int)) *connRegistry {
	return &connRegistry{
		max: max, maxPerIP: maxPerIP, onChange: onChange,
		conns: map[*trackedConn]struct{}{}, perIP: map[string]int{}, changed: make(chan struct{}),
	}
}

// add admits c if its IP is under its cap and a slot is free, or if every
// slot is taken but a connection is stalled (see stalledSince): the one
// stalled longest gives up its slot (removed here, returned for the caller
// to evict), so that connections held open by trickled bytes or idle
// commands cannot lock out well-behaved senders.
func (r *connRegistry) add(c *trackedConn, now time.Time) (admitted bool, stalled *trackedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.perIP[clientKey(c.ip)] >= r.maxPerIP {
		return false, nil
	}
	if len(r.conns) >= r.max {
		var oldest time.Time
		for other := range r.conns {
			if since, ok := other.stalledSince(now); ok && (stalled == nil || since.Before(oldest)) {
				stalled, oldest = other, since
			}
		}
		if stalled == nil {
			return false, nil
		}
		r.removeLocked(stalled)
	}
	r.conns[c] = struct{}{}
	r.perIP[clientKey(c.ip)]++
	r.onChange(len(r.conns))
	return true, stalled
}

func (r *connRegistry) remove(c *trackedConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(c)
}

func (r *connRegistry) removeLocked(c *trackedConn) {
	if _, ok := r.conns[c]; !ok {
		return
	}
	delete(r.conns, c)
	key := clientKey(c.ip)
	if r.perIP[key]--; r.perIP[key] <= 0 {
		delete(r.perIP, key)
	}
	r.onChange(len(r.conns))
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *connRegistry) snapshot() []*trackedConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*trackedConn, 0, len(r.conns))
	for c := range r.conns {
		out = append(out, c)
	}
	return out
}

func (r *connRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// waitEmpty returns nil once no connection is open, or ctx's error.
func (r *connRegistry) waitEmpty(ctx context.Context) error {
	for {
		r.mu.Lock()
		n, ch := len(r.conns), r.changed
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
