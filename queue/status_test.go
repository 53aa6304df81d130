package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDeadLetter(t *testing.T) {
	q := openQueue(t, testConfig(t))
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
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var m jetstream.Msg
	for msg := range batch.Messages() {
		m = msg
	}
	if m == nil {
		t.Fatal("nothing fetched")
	}
	if m.Headers().Get("Nats-Batch-Id") == "" {
		t.Fatal("precondition: a message stored from an atomic batch keeps its Nats-Batch-Id header")
	}
	reason := "store rejected it 8 times:\r\nconstraint failed"
	for range 2 { // idempotent: a crash before Term dead-letters the redelivery again
		if err := q.DeadLetter(ctx, m, reason); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	if err := m.Term(); err != nil {
		t.Fatal(err)
	}
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

// decodeHeaders runs Decode on a stored message's parts.
func decodeHeaders(h nats.Header, data []byte) (any, error) {
	return Decode(storedMsg{h: h, data: data})
}

type storedMsg struct {
	jetstream.Msg
	h    nats.Header
	data []byte
}

func (m storedMsg) Headers() nats.Header { return m.h }
func (m storedMsg) Data() []byte         { return m.data }

func TestStatusMatchesServerFigures(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 100
	cfg.MaxBytes = 1 << 20
	cfg.MaxMsgSize = 64 << 10
	reg := prometheus.NewRegistry()
	q := openQueueReg(t, cfg, reg)
	ctx := ctxT(t)

	st, err := q.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 0 || st.OldestMessageAge != 0 || st.Fill.Max != 0 {
		t.Errorf("empty stream status: %+v", st)
	}
	for _, id := range ids("s", 10) {
		if _, err := q.Publish(ctx, testMessage(id, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var fetched []jetstream.Msg
	for m := range batch.Messages() {
		fetched = append(fetched, m)
	}
	if len(fetched) != 3 {
		t.Fatalf("fetched %d", len(fetched))
	}
	if err := q.DeadLetter(ctx, fetched[0], "test"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // a measurable oldest-message age
	// The consumer's pending count trails the stream by a moment after a
	// publish (the server updates it asynchronously): settle first.
	waitFor(t, "the consumer to count the 7 not yet delivered", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 7
	})

	st, err = q.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := streamInfo(t, q, cfg.Stream)
	ci, err := q.JetStream().Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info := ci.CachedInfo()
	if st.Stream != cfg.Stream || st.Messages != si.State.Msgs || st.Bytes != si.State.Bytes || st.Messages != 10 {
		t.Errorf("stream figures %+v, server %+v", st, si.State)
	}
	wantLimits := StreamLimits{MaxMsgs: 100, MaxBytes: 1 << 20, MaxAge: cfg.MaxAge, MaxMsgSize: 64 << 10,
		Discard: "new", DuplicateWindow: cfg.DuplicateWindow, Replicas: 1}
	if st.Limits != wantLimits {
		t.Errorf("limits %+v, want %+v", st.Limits, wantLimits)
	}
	if st.Fill.Messages != 0.1 || st.Fill.Bytes != float64(si.State.Bytes)/(1<<20) || st.Fill.Max != 0.1 {
		t.Errorf("fill %+v", st.Fill)
	}
	c := st.Consumer
	if c.Name != cfg.Durable || c.NumPending != info.NumPending || c.NumPending != 7 || c.NumAckPending != info.NumAckPending ||
		c.NumAckPending != 3 || c.NumRedelivered != info.NumRedelivered || c.NumWaiting != info.NumWaiting {
		t.Errorf("consumer %+v, server %+v", c, info)
	}
	if want := st.At.Sub(si.State.FirstTime); st.OldestMessageAge <= 0 || st.OldestMessageAge > want+time.Second {
		t.Errorf("oldest age %s, first message at %s", st.OldestMessageAge, si.State.FirstTime)
	}
	if st.DeadLetters != 1 || !st.SyncAlways || !st.Embedded {
		t.Errorf("dead %d sync %v embedded %v", st.DeadLetters, st.SyncAlways, st.Embedded)
	}

	// JSON: snake_case keys operators and the dashboard read.
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"stream"`, `"messages"`, `"bytes"`, `"max_msgs"`, `"max_bytes"`, `"max_age"`,
		`"max_msg_size"`, `"discard"`, `"duplicate_window"`, `"replicas"`, `"fill"`, `"max"`, `"num_pending"`,
		`"num_ack_pending"`, `"num_redelivered"`, `"num_waiting"`, `"oldest_message_age"`, `"dead_letters"`, `"sync_always"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("status JSON lacks %s: %s", key, b)
		}
	}

	// The monitor publishes the same figures as gauges.
	waitFor(t, "gauges", func() bool {
		return testutil.ToFloat64(q.metrics.messages) == 10 && testutil.ToFloat64(q.metrics.ackPending) == 3 &&
			testutil.ToFloat64(q.metrics.deadLetters) == 1 && testutil.ToFloat64(q.metrics.pending) == 7
	})
	if got := testutil.ToFloat64(q.metrics.fill.WithLabelValues("messages")); got != 0.1 {
		t.Errorf("fill gauge %v", got)
	}
	if q.Fill() != 0.1 {
		t.Errorf("Fill() = %v", q.Fill())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "levee_queue_publish_duration_seconds" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "ok" && m.GetHistogram().GetSampleCount() != 10 {
					t.Errorf("publish histogram ok count %d", m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	for _, m := range fetched {
		_ = m.Ack()
	}
}

func TestUpdateLimitsLive(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	for _, id := range ids("u", 5) {
		if _, err := q.Publish(ctx, testMessage(id, 100)); err != nil {
			t.Fatal(err)
		}
	}
	// Lowered below usage: nothing queued is lost, new mail is refused.
	lim, err := q.UpdateLimits(ctx, Limits{MaxMsgs: 3})
	if err != nil {
		t.Fatal(err)
	}
	if lim.Limits.MaxMsgs != 3 || lim.Limits.MaxBytes != q.Config().MaxBytes || len(lim.Notes) != 1 {
		t.Errorf("limits now %+v", lim)
	}
	if _, err := q.Publish(ctx, testMessage("u-over", 100)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("publish over lowered limit = %v, want ErrQueueFull", err)
	}
	if got := storedIDs(t, q, q.Config().Stream); len(got) != 5 {
		t.Errorf("lowering the limit changed the stream: %v", got)
	}
	waitFor(t, "Fill() above 1", func() bool { return q.Fill() > 1.5 })
	if _, err := q.UpdateLimits(ctx, Limits{MaxMsgs: 10, MaxAge: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, testMessage("u-after", 100)); err != nil {
		t.Errorf("publish after raising the limit: %v", err)
	}
	if _, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: 1 << 30}); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), "queue.max_msg_size") {
		t.Errorf("max_msg_size over max_payload: %v", err)
	}
	if _, err := q.UpdateLimits(ctx, Limits{MaxAge: time.Second}); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), "queue.max_age") {
		t.Errorf("max_age under the duplicate window: %v", err)
	}
}
