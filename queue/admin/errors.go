package admin

import (
	"errors"

	"github.com/levee-mail/levee/queue"
)

// Errors of the operator's tools. Each has a stable reason name (see
// Reason), which the ops API sends with its answer so that a client gets
// the same sentinel back.
var (
	// ErrInvalidLimit: a limit change was refused as invalid.
	ErrInvalidLimit = errors.New("admin: invalid limit")
	// ErrWouldDelete: the change would make JetStream delete queued,
	// already accepted mail; it was not applied (Force overrides).
	ErrWouldDelete = errors.New("admin: change would delete queued mail")
	// ErrWouldBounce: the change would make the queue refuse mail that
	// running receivers still accept by their SIZE, so that mail would
	// bounce (552, permanent); it was not applied (Force overrides).
	ErrWouldBounce = errors.New("admin: change would bounce mail the receivers accept")
	// ErrBusy: another process's limit change is in progress (intake is
	// frozen for it); nothing was changed, try again.
	ErrBusy = errors.New("admin: another limit change is in progress")
	// ErrNotFound: no dead letter with that sequence.
	ErrNotFound = errors.New("admin: not found")
)

// reasons names every error an operator's tool can answer with that a
// caller may act on: this package's, and the queue's for a replay (a full
// queue, a message too large for it, a dead letter without an id).
var reasons = []struct {
	err  error
	name string
}{
	{ErrInvalidLimit, "invalid_limit"},
	{ErrWouldDelete, "would_delete"},
	{ErrWouldBounce, "would_bounce"},
	{ErrBusy, "busy"},
	{ErrNotFound, "not_found"},
	{queue.ErrQueueFull, "queue_full"},
	{queue.ErrTooLarge, "too_large"},
	{queue.ErrMalformed, "malformed"},
}

// Reason is the stable name of the sentinel err wraps ("would_delete"),
// or "" for any other error (the queue unreachable, say).
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return ""
}

// ErrorFor is the sentinel a Reason name stands for, nil for an unknown one.
func ErrorFor(reason string) error {
	for _, r := range reasons {
		if r.name == reason {
			return r.err
		}
	}
	return nil
}
