package queue

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish outcomes other than success. Publish wraps exactly one of
// ErrQueueFull, ErrTooLarge, ErrUnavailable (or ErrInvalidMessage for a
// caller's bug), so the receiver can pick its SMTP reply with errors.Is.
// Classify is the one place that maps JetStream's answers onto them.
var (
	// ErrQueueFull: the stream is at one of its limits (messages, bytes,
	// storage). Temporary: the sender should retry later (452 4.3.1).
	ErrQueueFull = errors.New("queue: full")
	// ErrTooLarge: the message exceeds the stream's (or the connection's)
	// maximum message size. Permanent for this message.
	ErrTooLarge = errors.New("queue: message too large")
	// ErrUnavailable: JetStream did not answer in time, is not reachable, or
	// the queue is closing. Temporary (451 4.3.0). The message may still have
	// been stored; a retry of the same message is then a duplicate, which
	// Publish reports as success.
	ErrUnavailable = errors.New("queue: unavailable")
	// ErrInvalidMessage: the message cannot be published as given (no ID,
	// no recipient). A programming error in the caller, not a queue state.
	ErrInvalidMessage = errors.New("queue: invalid message")
	// ErrMalformed: a queued message lacks Levee's headers (see Delivery).
	ErrMalformed = errors.New("queue: malformed message")
	// ErrServerTooOld: the NATS server is older than MinServerVersion, so
	// Open refuses it rather than fail later in a way that names neither.
	ErrServerTooOld = errors.New("queue: NATS server too old")
)

// JetStream API error codes Levee acts on (nats-server errors.json).
const (
	codeAccountResources  jetstream.ErrorCode = 10002 // account resource limits exceeded
	codeInsufficientRes   jetstream.ErrorCode = 10023 // server JetStream limits exceeded
	codeMemoryResources   jetstream.ErrorCode = 10028 // insufficient memory resources
	codeStorageResources  jetstream.ErrorCode = 10047 // insufficient storage resources
	codeMsgTooLarge       jetstream.ErrorCode = 10054 // message size exceeds maximum allowed
	codeStoreFailed       jetstream.ErrorCode = 10077 // store failed: maximum messages/bytes (also per subject) exceeded
	codeBatchDuplicate    jetstream.ErrorCode = 10201 // atomic batch contains a duplicate message id
	codeBatchIncomplete   jetstream.ErrorCode = 10176 // atomic batch incomplete
	codeAtomicPubDisabled jetstream.ErrorCode = 10174 // stream does not allow atomic publish

	codeClusterIncomplete jetstream.ErrorCode = 10004 // incomplete results
	codeClusterNoPeers    jetstream.ErrorCode = 10005 // no suitable peers (placement, quorum)
	codeClusterNotAvail   jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	codeClusterNotLeader  jetstream.ErrorCode = 10009 // cluster can not handle request
)

// Classify maps a publish error onto one of ErrQueueFull, ErrTooLarge and
// ErrUnavailable, by JetStream error code (or errno), never by message text. Anything
// not known to be final is ErrUnavailable: a 4xx costs a retry, a wrong 5xx
// loses mail. (A stream update refused for want of storage is ErrQueueFull
// too: the servers cannot hold what was asked.)
func Classify(err error) error {
	// The embedded server's own disk is full (see storefault.go): as
	// full as a queue at its limits, and as temporary.
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return ErrQueueFull
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case codeStoreFailed, codeStorageResources, codeAccountResources, codeInsufficientRes, codeMemoryResources:
			return ErrQueueFull
		case codeMsgTooLarge:
			return ErrTooLarge
		}
		return ErrUnavailable
	}
	if errors.Is(err, nats.ErrMaxPayload) {
		return ErrTooLarge
	}
	return ErrUnavailable
}

// opError is a failed queue operation: what was done, its class (one of
// the sentinels above) and the cause, each said once: "queue: publish:
// full: maximum messages exceeded (JetStream error 10077)". errors.Is
// finds the class and the cause, errors.As the cause's *jetstream.APIError.
type opError struct {
	op         string // "publish", "dead-letter <id>"
	class, err error
}

func (e *opError) Error() string {
	return "queue: " + e.op + ": " + strings.TrimPrefix(e.class.Error(), "queue: ") + ": " + describe(e.err)
}

func (e *opError) Unwrap() []error { return []error{e.class, e.err} }

// describe is err's text with a JetStream answer as its description and
// code: nats.go writes it "nats: API error: code=503 err_code=10077
// description=...", and its Publish adds another "nats: ". Text for people
// only; classification reads the code (Classify).
func describe(err error) string {
	s := err.Error()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Description != "" {
		long := apiErr.Error()
		short := fmt.Sprintf("%s (JetStream error %d)", apiErr.Description, apiErr.ErrorCode)
		if strings.Contains(s, "nats: "+long) {
			long = "nats: " + long
		}
		s = strings.Replace(s, long, short, 1)
	}
	return s
}

// publishError is a failed publish, classified.
func publishError(err error) error {
	return &opError{op: "publish", class: Classify(err), err: err}
}

// deadLetterError is a failed move of message id to the dead-letter
// stream, classified.
func deadLetterError(id string, err error) error {
	return &opError{op: "dead-letter " + id, class: Classify(err), err: err}
}

// invalidMessage is a message Publish cannot take as given (id may be "").
func invalidMessage(id, why string) error {
	op := "publish"
	if id != "" {
		op += " " + id
	}
	return &opError{op: op, class: ErrInvalidMessage, err: errors.New(why)}
}

// malformed is a queued message without Levee's headers (id may be "").
func malformed(id, why string) error {
	op := "decode"
	if id != "" {
		op += " " + id
	}
	return &opError{op: op, class: ErrMalformed, err: errors.New(why)}
}

func apiCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}
