package loadtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// sessionConfig is what every session of a run is opened with.
type sessionConfig struct {
	addr        string
	helo        string
	startTLS    bool
	tls         *tls.Config
	pipelining  bool // use PIPELINING when the server offers it
	dialTimeout time.Duration
	// cmdTimeout bounds one transaction's wait for each reply, as an MTA's
	// command timeouts do; a server that hangs costs a retry, not a stuck
	// connection.
	cmdTimeout time.Duration
}

// session is one SMTP connection. It speaks just what a delivering MTA
// needs — EHLO, STARTTLS, MAIL, RCPT, DATA, RSET, QUIT — and sends MAIL,
// RCPT and DATA in one write when the server offers PIPELINING (RFC 2920),
// which takes two round trips per message instead of 3 + recipients.
type session struct {
	conn       net.Conn
	r          *textproto.Reader
	w          *bufio.Writer
	ext        map[string]string
	pipelining bool
	size       bool
	cmdTimeout time.Duration
	// dirty: the last transaction was abandoned part way, so the server may
	// still hold its envelope; the next one starts with RSET.
	dirty    bool
	lastUsed time.Time
	sent     int
	buf      []byte
}

// errProtocol is wrapped when the server's reply does not fit SMTP (a 354
// where none was asked for, a reply that cannot be parsed).
var errProtocol = errors.New("loadtest: SMTP protocol error")

// dialSession connects, reads the greeting, says EHLO (HELO if refused) and
// upgrades with STARTTLS when configured. A refusal is an *smtp.SMTPError.
func dialSession(ctx context.Context, cfg sessionConfig) (*session, error) {
	d := net.Dialer{Timeout: cfg.dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, err
	}
	s := &session{cmdTimeout: cfg.cmdTimeout, lastUsed: time.Now()}
	s.setConn(conn)
	if err := s.open(cfg); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.r = textproto.NewReader(bufio.NewReaderSize(c, 4096))
	s.w = bufio.NewWriterSize(c, 32<<10)
}

func (s *session) open(cfg sessionConfig) error {
	_ = s.conn.SetDeadline(time.Now().Add(s.cmdTimeout))
	if _, err := s.expect(2); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if err := s.hello(cfg.helo); err != nil {
		return err
	}
	if cfg.startTLS {
		if _, ok := s.ext["STARTTLS"]; !ok {
			return fmt.Errorf("--starttls: %s does not offer STARTTLS", cfg.addr)
		}
		if err := s.cmd(2, "STARTTLS"); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
		tc := cfg.tls.Clone()
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(cfg.addr)
		}
		tlsConn := tls.Client(s.conn, tc)
		if err := tlsConn.Handshake(); err != nil {
			return fmt.Errorf("STARTTLS handshake: %w", err)
		}
		s.setConn(tlsConn)
		_ = s.conn.SetDeadline(time.Now().Add(s.cmdTimeout))
		if err := s.hello(cfg.helo); err != nil { // RFC 3207: forget what was said before TLS
			return err
		}
	}
	_, s.pipelining = s.ext["PIPELINING"]
	s.pipelining = s.pipelining && cfg.pipelining
	_, s.size = s.ext["SIZE"]
	return s.conn.SetDeadline(time.Time{})
}

func (s *session) hello(name string) error {
	s.writeLine("EHLO " + name)
	if err := s.w.Flush(); err != nil {
		return err
	}
	code, msg, err := s.readReply()
	if err != nil {
		return err
	}
	if code == 500 || code == 502 { // no ESMTP: HELO, and no extensions
		s.ext = map[string]string{}
		if err := s.cmd(2, "HELO "+name); err != nil {
			return fmt.Errorf("HELO: %w", err)
		}
		return nil
	}
	if code/100 != 2 {
		return fmt.Errorf("EHLO: %w", replyError(code, msg))
	}
	s.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		s.ext[strings.ToUpper(k)] = v
	}
	return nil
}

func (s *session) writeLine(l string) {
	s.w.WriteString(l)
	s.w.WriteString("\r\n")
}

// cmd sends one command and wants a reply of class want (2 or 3).
func (s *session) cmd(want int, line string) error {
	s.writeLine(line)
	if err := s.w.Flush(); err != nil {
		return err
	}
	_, err := s.expect(want)
	return err
}

func (s *session) expect(want int) (int, error) {
	code, msg, err := s.readReply()
	if err != nil {
		return code, err
	}
	if code/100 != want {
		return code, replyError(code, msg)
	}
	return code, nil
}

func (s *session) readReply() (int, string, error) {
	code, msg, err := s.r.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return 0, "", fmt.Errorf("%w: %v", errProtocol, err)
		}
		return 0, "", err
	}
	return code, msg, nil
}

// replyError turns a reply into go-smtp's error type, reading the enhanced
// status code (RFC 3463) off the first line when there is one.
func replyError(code int, msg string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}
	first, rest, _ := strings.Cut(msg, " ")
	parts := strings.Split(first, ".")
	if len(parts) == 3 {
		var ec smtp.EnhancedCode
		ok := true
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				ok = false
				break
			}
			ec[i] = n
		}
		if ok {
			e.EnhancedCode, e.Message = ec, rest
		}
	}
	return e
}

// replyKey names a reply for counting: "452 4.3.1", or "421" without an
// enhanced code.
func replyKey(e *smtp.SMTPError) string {
	if e.EnhancedCode == smtp.NoEnhancedCode || e.EnhancedCode == smtp.EnhancedCodeNotSet {
		return strconv.Itoa(e.Code)
	}
	return fmt.Sprintf("%d %d.%d.%d", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2])
}

// sendResult is the server's answer to one message.
type sendResult struct {
	// refused is the reply that decided against the message (nil: 250).
	// A 4xx means "later", a 5xx means "never".
	refused *smtp.SMTPError
	// stage is the command refused: MAIL, RCPT, DATA or "." (end of data).
	stage string
	// rejectedRcpts counts recipients refused with 5xx while the message
	// was still delivered to the others.
	rejectedRcpts int
}

// send runs one mail transaction. parts is the message, CRLF line ends,
// dot-stuffed, ending in CRLF. An error means the session is unusable (I/O
// failure, protocol error, the server closing with 421, or a transaction
// that could only be aborted by closing the connection): close it. The
// caller must not assume anything about a message whose send returned an
// error: it may have been accepted, and is sent again, identical, so that
// the server can recognise the retransmission.
func (s *session) send(from string, rcpts []string, size int, parts [][]byte) (sendResult, error) {
	_ = s.conn.SetDeadline(time.Now().Add(s.cmdTimeout))
	defer func() { s.lastUsed, s.sent = time.Now(), s.sent+1 }()
	if s.pipelining {
		return s.sendPipelined(from, rcpts, size, parts)
	}
	return s.sendStepwise(from, rcpts, size, parts)
}

func (s *session) mailCmd(from string, size int) {
	b := append(s.buf[:0], "MAIL FROM:<"...)
	b = append(b, from...)
	b = append(b, '>')
	if s.size && size > 0 {
		b = append(b, " SIZE="...)
		b = strconv.AppendInt(b, int64(size), 10)
	}
	b = append(b, '\r', '\n')
	s.buf = b
	s.w.Write(b)
}

func (s *session) rcptCmd(to string) {
	s.w.WriteString("RCPT TO:<")
	s.w.WriteString(to)
	s.w.WriteString(">\r\n")
}

// sendPipelined writes [RSET] MAIL RCPT... DATA at once and then reads the
// replies in order (RFC 2920 section 3.1).
func (s *session) sendPipelined(from string, rcpts []string, size int, parts [][]byte) (sendResult, error) {
	rset := s.dirty
	if rset {
		s.writeLine("RSET")
	}
	s.mailCmd(from, size)
	for _, r := range rcpts {
		s.rcptCmd(r)
	}
	s.writeLine("DATA")
	if err := s.w.Flush(); err != nil {
		return sendResult{}, err
	}
	s.dirty = true
	if rset {
		if _, err := s.expect(2); err != nil {
			// The replies to the pipelined commands are still to come, and
			// they answer a transaction in an unknown state: start afresh.
			res := sendResult{stage: "RSET"}
			if !errors.As(err, &res.refused) {
				return res, err
			}
			return res, fmt.Errorf("%w: RSET refused: %w", errProtocol, err)
		}
	}
	var res sendResult
	mailCode, mailMsg, err := s.readReply()
	if err != nil {
		return res, err
	}
	if mailCode/100 != 2 {
		res.refused, res.stage = replyError(mailCode, mailMsg), "MAIL"
	}
	accepted, temp := 0, (*smtp.SMTPError)(nil)
	var perm *smtp.SMTPError
	for range rcpts {
		code, msg, err := s.readReply()
		if err != nil {
			return res, err
		}
		switch code / 100 {
		case 2:
			accepted++
		case 4:
			if temp == nil {
				temp = replyError(code, msg)
			}
		default:
			res.rejectedRcpts++
			if perm == nil {
				perm = replyError(code, msg)
			}
		}
	}
	dataCode, dataMsg, err := s.readReply()
	if err != nil {
		return res, err
	}
	if res.refused == nil {
		switch {
		case temp != nil:
			res.refused, res.stage = temp, "RCPT"
		case accepted == 0 && perm != nil:
			res.refused, res.stage = perm, "RCPT"
		case dataCode != 354:
			res.refused, res.stage = replyError(dataCode, dataMsg), "DATA"
		}
	}
	if dataCode == 354 {
		if res.refused != nil {
			// The server wants the message, we do not want to send it to
			// only some recipients (a retry would then store it twice), and
			// "." would submit an empty message: only closing the
			// connection aborts the transaction (RFC 5321 section 3.3).
			return s.closing(res, fmt.Errorf("%w: aborting DATA after %s", errProtocol, replyKey(res.refused)))
		}
		return s.finishData(res, parts)
	}
	return s.closing(res, nil)
}

// sendStepwise waits for each reply before the next command.
func (s *session) sendStepwise(from string, rcpts []string, size int, parts [][]byte) (sendResult, error) {
	if s.dirty {
		if err := s.cmd(2, "RSET"); err != nil {
			res := sendResult{stage: "RSET"}
			if !errors.As(err, &res.refused) {
				return res, err
			}
			return res, fmt.Errorf("%w: RSET refused: %w", errProtocol, err)
		}
	}
	s.dirty = true
	s.mailCmd(from, size)
	if err := s.w.Flush(); err != nil {
		return sendResult{}, err
	}
	var res sendResult
	if _, err := s.expect(2); err != nil {
		res.stage = "MAIL"
		return s.closing(res, err)
	}
	accepted := 0
	var perm *smtp.SMTPError
	for _, r := range rcpts {
		s.rcptCmd(r)
		if err := s.w.Flush(); err != nil {
			return res, err
		}
		code, msg, err := s.readReply()
		if err != nil {
			return res, err
		}
		switch code / 100 {
		case 2:
			accepted++
		case 4:
			res.refused, res.stage = replyError(code, msg), "RCPT"
			return s.closing(res, nil)
		default:
			res.rejectedRcpts++
			if perm == nil {
				perm = replyError(code, msg)
			}
		}
	}
	if accepted == 0 {
		res.refused, res.stage = perm, "RCPT"
		return s.closing(res, nil)
	}
	res.stage = "DATA"
	if err := s.cmd(3, "DATA"); err != nil {
		return s.closing(res, err)
	}
	return s.finishData(res, parts)
}

// finishData sends the message after a 354 and reads the final reply.
func (s *session) finishData(res sendResult, parts [][]byte) (sendResult, error) {
	for _, p := range parts {
		if _, err := s.w.Write(p); err != nil {
			return res, err
		}
	}
	s.w.WriteString(".\r\n")
	if err := s.w.Flush(); err != nil {
		return res, err
	}
	code, msg, err := s.readReply()
	if err != nil {
		return res, err
	}
	s.dirty = false // the transaction is over, whatever the answer
	if code/100 != 2 {
		res.refused, res.stage = replyError(code, msg), "."
	} else {
		res.stage = ""
	}
	return res, s.check421(res)
}

// closing turns an SMTP refusal in err into the result and keeps the
// session for the next message unless the server is closing (421) or err is
// not a reply.
func (s *session) closing(res sendResult, err error) (sendResult, error) {
	var se *smtp.SMTPError
	if err != nil {
		if !errors.As(err, &se) {
			return res, err
		}
		res.refused = se
	}
	return res, s.check421(res)
}

// errServerClosing: the server said 421, it closes the connection.
var errServerClosing = errors.New("loadtest: server is closing the connection (421)")

func (s *session) check421(res sendResult) error {
	if res.refused != nil && res.refused.Code == 421 {
		return errServerClosing
	}
	return nil
}

// close says QUIT when the session is healthy and closes the connection.
func (s *session) close(quit bool) {
	if quit {
		_ = s.conn.SetDeadline(time.Now().Add(time.Second))
		s.writeLine("QUIT")
		if s.w.Flush() == nil {
			_, _, _ = s.readReply()
		}
	}
	_ = s.conn.Close()
}
