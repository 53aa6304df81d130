package queue

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/levee-mail/levee/internal/diskspace"
	"github.com/levee-mail/levee/queue/natsserver"
)

// A write error in the embedded server's file store (ENOSPC above all)
// sticks: nats-server v2.15 keeps it in the stream's store (fileStore.werr)
// and the stream (stream.werr) until the stream is opened again, and leaves
// every later publish to that stream unanswered, so each one waits out
// PublishTimeout (451 4.3.0), long after the disk has room again. It does
// not disable JetStream on one node (only a clustered server does, on
// "no space left"), and it reopens streams only at start. Its health check
// reports the error. So the queue's monitor asks it (watchStore), and an
// unhealthy stream or consumer is a store fault when the data directory's
// filesystem cannot hold two of the largest messages (the disk is full),
// or when it has lasted faultAfter (a stream being created or deleted is
// unhealthy for a moment). While the fault lasts:
//
//   - StoreFault reports it (the receiver's readiness) and levee_queue_up is 0;
//   - while the disk is full, Publish refuses at once with ErrQueueFull
//     (452 4.3.1, as for a full queue) instead of waiting for an answer
//     that will not come;
//   - once there is room, the server is restarted on its data directory,
//     which recovers the streams from their files as a process restart
//     would: acknowledged messages are in the files (fsynced with
//     SyncAlways, or by the group sync before their 250), a record cut short by the failed write is dropped, and
//     a message that did land though its publish went unanswered is found
//     by its Nats-Msg-Id when the sender retries (a duplicate, not a copy).
//
// Restarts back off (restartMinWait doubling to restartMaxWait) while the
// fault comes back within a minute, so a cause that a restart does not
// clear (a stream whose files cannot be read) costs one restart a minute,
// not a loop.
const (
	faultAfter     = 10 * time.Second
	restartMinWait = time.Second
	restartMaxWait = time.Minute
)

// storeFaultError is the embedded server's store fault while it lasts.
type storeFaultError struct {
	err  error
	full bool // the disk is full: Publish refuses at once
}

func (e *storeFaultError) Error() string { return e.err.Error() }
func (e *storeFaultError) Unwrap() error { return e.err }

// StoreFault is nil while the embedded server can write its store, else
// why not (see watchStore); always nil with an external server, whose
// health is its cluster's. Costs no I/O.
func (q *Queue) StoreFault() error {
	if f := q.fault.Load(); f != nil {
		return f
	}
	if q.groupSync != nil {
		if err := q.groupSync.failure(); err != nil {
			return err
		}
	}
	return nil
}

// watchStore asks the embedded server whether its streams are healthy,
// sets or clears the store fault, and restarts the server once a fault
// can clear. Run by the monitor only.
func (q *Queue) watchStore() {
	herr := q.srv.Health()
	if herr == nil || errors.Is(herr, natsserver.ErrShutdown) {
		// Shut down by someone else (a test's outage): the connection's
		// state says what there is to say.
		q.unhealthySince = time.Time{}
		if q.fault.Swap(nil) != nil {
			q.log.Info("queue: the embedded JetStream writes its store again")
		}
		if time.Since(q.restarted) > time.Minute {
			q.restartWait = 0
		}
		return
	}
	if q.unhealthySince.IsZero() {
		q.unhealthySince = time.Now()
	}
	room := 2 * uint64(q.cfg.MaxMsgSize)
	free, ferr := diskspace.Free(q.cfg.DataDir)
	full := ferr == nil && free < room
	was := q.fault.Load()
	if !full && was == nil && time.Since(q.unhealthySince) < faultAfter {
		return
	}
	f := &storeFaultError{full: full}
	if full {
		f.err = fmt.Errorf("embedded JetStream store: %w: %d bytes free in %s (%v)", syscall.ENOSPC, free, q.cfg.DataDir, herr)
	} else {
		f.err = fmt.Errorf("embedded JetStream store cannot be written: %w", herr)
	}
	q.fault.Store(f)
	if was == nil {
		q.log.Error("queue: the embedded JetStream cannot write its store: mail is deferred until it can", "err", f.err)
	}
	if full || time.Now().Before(q.restartAt) {
		return
	}
	q.restartWait = min(max(2*q.restartWait, restartMinWait), restartMaxWait)
	q.restartAt = time.Now().Add(q.restartWait)
	q.restarted = time.Now()
	q.metrics.restarts.Inc()
	q.log.Warn("queue: restarting the embedded JetStream to reopen its store", "free_bytes", free, "err", herr)
	if err := q.srv.Restart(); err != nil {
		q.log.Error("queue: restarting the embedded JetStream failed; trying again", "in", q.restartWait, "err", err)
		return
	}
	if err := q.srv.Health(); err == nil {
		q.unhealthySince = time.Time{}
		q.fault.Store(nil)
		q.log.Info("queue: the embedded JetStream was restarted and writes its store again")
	}
}

// isStoreFault reports whether err is a publish refused for a store fault.
func isStoreFault(err error) bool {
	var f *storeFaultError
	return errors.As(err, &f)
}
