package queue

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestGiveUpDeadLettersWithReasonOnce: a delivery given up is copied to the
// dead stream with the reason and its history, without JetStream's batch
// headers, once even when given up twice (a worker crashed between the
// copy and the terminate), and leaves the mail stream.
func TestGiveUpDeadLettersWithReasonOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.GroupSync = false // the embedded server batches only with its own fsyncs
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	// Two messages published as one atomic batch: their stored copies
	// carry Nats-Batch-* headers, which the dead copy must not.
	out := flushNow(q, testMessage("dl-1", 2000), testMessage("dl-2", 100))
	for _, o := range out {
		if o.err != nil {
			t.Fatal(o.err)
		}
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := cons.Fetch(1, 5*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %d deliveries, %v", len(ds), err)
	}
	d := ds[0]
	if d.(*delivery).m.Headers().Get("Nats-Batch-Id") == "" {
		t.Fatal("precondition: a message stored from an atomic batch keeps its Nats-Batch-Id header")
	}
	reason := "store rejected it 8 times:\r\nconstraint failed"
	for range 2 { // idempotent: a crash before Term gives the redelivery up again
		if err := d.GiveUp(ctx, reason); err != nil {
			t.Fatalf("GiveUp: %v", err)
		}
	}
	waitFor(t, "dl-1 to leave the mail stream", func() bool {
		return streamInfo(t, q, q.Config().Stream).State.Msgs == 1
	})
	dead, err := q.JetStream().Stream(ctx, q.Config().DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := dead.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("dead stream holds %d messages, want 1", n)
	}
	dm, err := dead.GetMsg(ctx, dead.CachedInfo().State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if dm.Subject != "levee.dead.example.com" {
		t.Errorf("dead subject %q", dm.Subject)
	}
	want := testMessage("dl-1", 2000)
	if !bytes.Equal(dm.Data, want.Raw) {
		t.Error("dead copy's body differs")
	}
	h := dm.Header
	if got := h.Get(HeaderDeadReason); got != "store rejected it 8 times:  constraint failed" {
		t.Errorf("reason %q", got)
	}
	if h.Get(HeaderMsgID) != "dl-1" || h.Get(HeaderMailFrom) != want.Envelope.From || len(h.Values(HeaderRcptTo)) != 2 ||
		h.Get(HeaderDeadStream) != q.Config().Stream || h.Get(HeaderDeadSeq) != "1" || h.Get(HeaderDeadDeliveries) != "1" ||
		h.Get(HeaderDeadSubject) != "levee.mail.example.com" || h.Get(HeaderDeadAt) == "" {
		t.Errorf("dead headers: %v", h)
	}
	for k := range h {
		if strings.HasPrefix(k, "Nats-Batch") {
			t.Errorf("dead copy kept %s", k)
		}
	}
	// The dead copy still decodes as the original mail (for a replay).
	if _, err := decodeHeaders(h, dm.Data); err != nil {
		t.Errorf("dead copy does not decode: %v", err)
	}
}

// decodeHeaders runs decode on a stored message's parts.
func decodeHeaders(h nats.Header, data []byte) (any, error) {
	return decode(storedMsg{h: h, data: data})
}

type storedMsg struct {
	jetstream.Msg
	h    nats.Header
	data []byte
}

func (m storedMsg) Headers() nats.Header { return m.h }
func (m storedMsg) Data() []byte         { return m.data }
