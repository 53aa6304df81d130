package queue

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// sayOnce fails the test if msg repeats one of the layers' prefixes.
func sayOnce(t *testing.T, msg string) {
	t.Helper()
	for _, twice := range []string{"queue:", "nats:", "API error"} {
		if n := strings.Count(msg, twice); n > 1 {
			t.Errorf("%q says %q %d times", msg, twice, n)
		}
	}
}

// TestPublishErrorsSayEachThingOnce: a failed publish reads "queue:
// publish: <class>: <cause>", with JetStream's answer as its description
// and code, not "queue: publish: queue: full: nats: nats: API error: ..."
// (issue 13 item 16); errors.Is still finds the class and the cause.
func TestPublishErrorsSayEachThingOnce(t *testing.T) {
	full := &jetstream.APIError{Code: 503, ErrorCode: codeStoreFailed, Description: "maximum messages exceeded"}
	for _, tc := range []struct {
		name  string
		err   error
		class error
		want  string
	}{
		// jetstream's Publish wraps the PubAck's error as "nats: %w".
		{"publish ack", publishError(fmt.Errorf("nats: %w", full)), ErrQueueFull,
			"queue: publish: full: maximum messages exceeded (JetStream error 10077)"},
		{"batch commit", publishError(fmt.Errorf("batch commit: %w", full)), ErrQueueFull,
			"queue: publish: full: batch commit: maximum messages exceeded (JetStream error 10077)"},
		{"closed", publishError(errClosed), ErrUnavailable, "queue: publish: unavailable: queue is closed"},
		{"dead-letter", deadLetterError("m1", fmt.Errorf("nats: %w", full)), ErrQueueFull,
			"queue: dead-letter m1: full: maximum messages exceeded (JetStream error 10077)"},
		{"invalid", invalidMessage("m1", "no recipient"), ErrInvalidMessage, "queue: publish m1: invalid message: no recipient"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err.Error() != tc.want {
				t.Errorf("got  %q\nwant %q", tc.err, tc.want)
			}
			sayOnce(t, tc.err.Error())
			if !errors.Is(tc.err, tc.class) {
				t.Errorf("%v is not %v", tc.err, tc.class)
			}
		})
	}
	var apiErr *jetstream.APIError
	if err := publishError(fmt.Errorf("nats: %w", full)); !errors.As(err, &apiErr) || apiErr.ErrorCode != codeStoreFailed {
		t.Errorf("the JetStream error is lost from %v", err)
	}
}

// The same on a real stream: a publish over max_msgs.
func TestPublishQueueFullErrorText(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 1
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, testMessage("ok", 100)); err != nil {
		t.Fatal(err)
	}
	_, err := q.Publish(ctx, testMessage("over", 100))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("publish over max_msgs = %v, want ErrQueueFull", err)
	}
	if !strings.HasPrefix(err.Error(), "queue: publish: full: ") || !strings.Contains(err.Error(), "(JetStream error 10077)") {
		t.Errorf("publish over max_msgs: %q", err)
	}
	sayOnce(t, err.Error())
	noRcpt := testMessage("x", 10)
	noRcpt.Envelope.To = nil
	_, err = q.Publish(ctx, noRcpt)
	sayOnce(t, err.Error())
}
