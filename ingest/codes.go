package ingest

import (
	"fmt"
	"strconv"

	"github.com/emersion/go-smtp"
)

// Every SMTP reply that Levee decides is named here, with the basic code's
// meaning from RFC 5321 section 4.2 and the enhanced status code's from
// RFC 3463 (registry: RFC 5248). The rule behind the choice of class:
//
//   - 4xx (transient): anything a later retry may fix — queue full, queue
//     unreachable or slow, watermark, shutting down, any unexpected error.
//     Senders queue and retry these, so a surge costs latency, not mail.
//   - 5xx (permanent): only what a retry cannot fix — a domain we do not
//     serve, a message over the size limit, malformed addresses or lines.
//
// go-smtp's Session.Data turns any error that is not an *smtp.SMTPError into
// "554 5.0.0", a permanent bounce. Levee therefore never returns anything but
// a reply from this file as an *smtp.SMTPError (see reply.err).
//
// Replies that go-smtp v0.25.1 writes by itself, before our code runs, and
// that Levee cannot change (listed so that this file stays the one place to
// read what a client can see):
//
//	220           greeting "<hostname> ESMTP Service Ready"
//	250           EHLO/HELO, NOOP, RSET; MAIL/RCPT acceptance texts
//	354           start mail input
//	221 2.0.0     QUIT
//	252 2.5.0     VRFY
//	220 2.0.0     STARTTLS "Ready to start TLS" (with smtp.tls_cert); 502 5.5.1 without
//	500 5.4.0     command line longer than MaxLineLength; the connection is closed
//	500 5.5.2     empty or unrecognised command; 501 5.5.2 bad command / HELO / MAIL / RCPT syntax
//	501 5.5.4     bad or unknown MAIL/RCPT parameters; 504 5.5.4 unsupported extension parameter
//	502 5.5.1     bad sequence (MAIL before HELO, RCPT before MAIL, DATA before RCPT),
//	              unimplemented commands (EXPN, HELP, TURN, ...)
//	500 5.5.1     more than three protocol errors: the connection is closed
//	502 5.7.0 / 523 5.7.10  AUTH (not offered: Levee is an inbound MX)
//	421 4.0.0     a panic in command handling (Levee recovers its own panics first)
type reply struct {
	code int
	enh  smtp.EnhancedCode
	text string
}

var (
	// replyUnknownDomain: RCPT for a domain not in smtp.domains.
	// RFC 5321 550 "mailbox unavailable ... rejected for policy reasons";
	// RFC 3463 5.7.1 "Delivery not authorized, message refused" (we are not an open relay).
	replyUnknownDomain = reply{550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied: recipient domain not served here"}

	// replyBadRecipient: RCPT address that go-smtp parsed but whose domain is
	// not a syntactically valid domain or address literal, or whose local
	// part has control characters, invalid UTF-8 or more than 64 octets
	// (RFC 5321 4.5.3.1.1).
	// RFC 5321 501 "Syntax error in parameters or arguments";
	// RFC 3463 5.1.3 "Bad destination mailbox address syntax".
	replyBadRecipient = reply{501, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax"}

	// replyNeedsSMTPUTF8: a non-ASCII address in MAIL or RCPT without MAIL's
	// SMTPUTF8 parameter. RFC 6531 3.4 and 3.7.4.1: 553 "mailbox name not
	// allowed", 5.6.7 "Non-ASCII addresses not permitted for that
	// sender/recipient". The client may retry with SMTPUTF8 (Levee offers it).
	replyNeedsSMTPUTF8 = reply{553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address without SMTPUTF8"}

	// replyAmbiguousRecipient: a quoted recipient local part holding an '@'
	// ("x@other.test"@example.com): not a mailbox Levee keeps, and unquoted
	// it would be another one. RFC 5321 553 "mailbox name not allowed";
	// RFC 3463 5.1.3 "Bad destination mailbox address syntax".
	replyAmbiguousRecipient = reply{553, smtp.EnhancedCode{5, 1, 3}, "Recipient local part with '@' not accepted"}

	// replyBadSender: the same for the MAIL reverse-path.
	// RFC 5321 501; RFC 3463 5.1.7 "Bad sender's mailbox address syntax".
	replyBadSender = reply{501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax"}

	// replyTooBig: DATA longer than smtp.max_message_bytes, or the queue
	// refusing the size (queue.ErrTooLarge). RFC 5321 552 "exceeded storage
	// allocation" (RFC 1870 uses 552 for SIZE); RFC 3463 5.3.4 "Message too big for system".
	replyTooBig = reply{552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed maximum message size"}

	// replyTooManyRecipients: more RCPTs than smtp.max_recipients.
	// RFC 5321 4.5.3.1.10: 452 "Too many recipients", the client sends the
	// rest in another transaction; RFC 3463 4.5.3 "Too many recipients".
	replyTooManyRecipients = reply{452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients"}

	// replyQueueFull: Publish said queue.ErrQueueFull. RFC 5321 452 "insufficient
	// system storage"; RFC 3463 4.3.1 "Mail system full".
	replyQueueFull = reply{452, smtp.EnhancedCode{4, 3, 1}, "Mail system full, try again later"}

	// replyMemoryFull: the messages being received hold smtp.max_bytes_in_flight
	// between them: at MAIL (no room for the SIZE= given, or for a small
	// message), or at the end of a DATA that outgrew what was left. RFC 5321
	// 452 "insufficient system storage"; RFC 3463 4.3.1 "Mail system full".
	replyMemoryFull = reply{452, smtp.EnhancedCode{4, 3, 1}, "Too much mail in transit, try again later"}

	// replyRateLimited: the client, or its network, started more messages
	// this minute than smtp.max_messages_per_client / _per_network allow.
	// RFC 5321 451 "local error in processing" (temporary); RFC 3463 4.7.1
	// "Delivery not authorized", as large receivers answer rate limits.
	replyRateLimited = reply{451, smtp.EnhancedCode{4, 7, 1}, "Too many messages from your address or network, try again later"}

	// replyWatermark: MAIL while the queue is above the high watermark
	// (hysteresis down to the low one). Same meaning as replyQueueFull, said
	// before the sender spends bandwidth on DATA.
	replyWatermark = reply{452, smtp.EnhancedCode{4, 3, 1}, "Mail system busy, try again later"}

	// replyUnavailable: the queue is unreachable or slow (queue.ErrUnavailable,
	// publish timeout), any unexpected error, a panic, a broken read.
	// RFC 5321 451 "local error in processing"; RFC 3463 4.3.0 "Other or
	// undefined mail system status".
	replyUnavailable = reply{451, smtp.EnhancedCode{4, 3, 0}, "Temporary local problem, try again later"}

	// replyShuttingDown: new connections and new transactions once Shutdown
	// began. RFC 5321 421 "Service not available, closing transmission
	// channel" (may answer any command when the service must shut down);
	// RFC 3463 4.3.2 "System not accepting network messages". The connection
	// is closed after it.
	replyShuttingDown = reply{421, smtp.EnhancedCode{4, 3, 2}, "Service shutting down"}

	// replyTooManyConnections: over smtp.max_connections or
	// smtp.max_connections_per_ip, as the greeting. RFC 5321 421; RFC 3463
	// 4.7.0 "Other or undefined security status" (a local policy limit).
	replyTooManyConnections = reply{421, smtp.EnhancedCode{4, 7, 0}, "Too many connections, try again later"}

	// replyIdleTimeout: nothing read for smtp.read_timeout, at a command or
	// inside DATA. RFC 5321 421 (then close); RFC 3463 4.4.2 "Bad connection".
	replyIdleTimeout = reply{421, smtp.EnhancedCode{4, 4, 2}, "Idle timeout, closing connection"}

	// replyDataTooSlow: DATA (or BDAT) arriving slower than smtp.min_data_rate
	// after a grace of smtp.read_timeout (Postfix: smtpd_min_data_rate).
	// RFC 5321 421; RFC 3463 4.4.2 "Bad connection". Nothing was accepted: the
	// sender retries, perhaps over a better path.
	replyDataTooSlow = reply{421, smtp.EnhancedCode{4, 4, 2}, "Data transfer too slow, closing connection"}

	// replySessionTooLong: the connection is older than
	// smtp.max_session_duration. RFC 5321 421; RFC 3463 4.4.2. The sender
	// reconnects for the rest.
	replySessionTooLong = reply{421, smtp.EnhancedCode{4, 4, 2}, "Session too long, closing connection"}

	// replyStalled: every connection slot is taken and this connection was
	// stalled: it moved no mail forward (MAIL, RCPT, a message read) for
	// smtp.stress_timeout, or its DATA fell behind smtp.min_data_rate, so
	// its slot went to a new client (Postfix's stress-dependent timeouts).
	// RFC 5321 421; RFC 3463 4.4.2.
	replyStalled = reply{421, smtp.EnhancedCode{4, 4, 2}, "Too slow while the server is busy, closing connection"}

	// replyBadSequence: a second MAIL inside a transaction (go-smtp would
	// silently restart it while keeping the old recipients), or DATA without
	// an open transaction. RFC 5321 4.1.4 / 503 "Bad sequence of commands";
	// RFC 3463 5.5.1 "Invalid command".
	replyBadSequence = reply{503, smtp.EnhancedCode{5, 5, 1}, "Bad sequence of commands: sender already given or no transaction"}

	// replyLineTooLong: a DATA line longer than smtp.max_line_length. RFC 5321
	// 4.5.3.1.6 answers "500 Line too long"; RFC 3463 5.6.0 "Other or
	// undefined media error" since it is the content that is refused. go-smtp
	// leaves the stream unusable after it, so the connection is closed.
	replyLineTooLong = reply{500, smtp.EnhancedCode{5, 6, 0}, "Line too long"}
)

// replyQueued is the only 250 for DATA, sent only after Publish returned nil
// (the message is durable). RFC 5321 250 "Requested mail action okay,
// completed"; RFC 3463 2.0.0 "Other undefined status" (success).
func replyQueued(id string) reply {
	return reply{250, smtp.EnhancedCode{2, 0, 0}, "Ok: queued as " + id}
}

// err is how a reply leaves a Session method: always an *smtp.SMTPError,
// never a plain error (which go-smtp would turn into a 554 from Data).
func (r reply) err() *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.code, EnhancedCode: r.enh, Message: r.text}
}

// line is the wire form, for the few replies Levee writes itself (refused
// connections, idle timeout, shutdown of idle sessions).
func (r reply) line() string {
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", r.code, r.enh[0], r.enh[1], r.enh[2], r.text)
}

func (r reply) codeLabel() string { return strconv.Itoa(r.code) }

// result is the metrics label for a transaction that ended with r.
func (r reply) result() string {
	if r == replyTooManyRecipients {
		return resultRecipientLimit
	}
	switch r.code / 100 {
	case 2:
		return resultAccepted
	case 4:
		return resultDeferred
	default:
		return resultRejected
	}
}
