package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
)

func TestStatusMatchesServerFigures(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 100
	cfg.MaxBytes = 1 << 20
	cfg.MaxMsgSize = 64 << 10
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	a := adminOf(t, q)

	st, err := a.Status(ctx)
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
	fetched := fetch(t, q, 3)
	if len(fetched) != 3 {
		t.Fatalf("fetched %d", len(fetched))
	}
	if err := fetched[0].GiveUp(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // a measurable oldest-message age
	// The consumer's counts trail the stream by a moment after a publish
	// or a terminate (the server updates them asynchronously): settle first.
	cons, err := q.JetStream().Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the consumer to count the 7 not yet delivered and 2 held", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 7 && info.NumAckPending == 2 && streamInfo(t, q, cfg.Stream).State.Msgs == 9
	})

	st, err = a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := streamInfo(t, q, cfg.Stream)
	ci, err := q.JetStream().Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info := ci.CachedInfo()
	if st.Stream != cfg.Stream || st.Messages != si.State.Msgs || st.Bytes != si.State.Bytes || st.Messages != 9 {
		t.Errorf("stream figures %+v, server %+v", st, si.State)
	}
	wantLimits := StreamLimits{MaxMsgs: 100, MaxBytes: 1 << 20, MaxAge: cfg.MaxAge, MaxMsgSize: 64 << 10,
		Discard: "new", DuplicateWindow: cfg.DuplicateWindow, Replicas: 1}
	if st.Limits != wantLimits {
		t.Errorf("limits %+v, want %+v", st.Limits, wantLimits)
	}
	if st.Fill.Messages != 0.09 || st.Fill.Bytes != float64(si.State.Bytes)/(1<<20) || st.Fill.Max != 0.09 {
		t.Errorf("fill %+v", st.Fill)
	}
	c := st.Consumer
	if c.Name != cfg.Durable || c.NumPending != info.NumPending || c.NumPending != 7 || c.NumAckPending != info.NumAckPending ||
		c.NumAckPending != 2 || c.NumRedelivered != info.NumRedelivered || c.NumWaiting != info.NumWaiting {
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

	for _, d := range fetched[1:] {
		_ = d.Ack()
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
	lim, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgs: 3})
	if err != nil {
		t.Fatal(err)
	}
	if lim.Limits.MaxMsgs != 3 || lim.Limits.MaxBytes != q.Config().MaxBytes || len(lim.Notes) != 1 {
		t.Errorf("limits now %+v", lim)
	}
	if _, err := q.Publish(ctx, testMessage("u-over", 100)); !errors.Is(err, queue.ErrQueueFull) {
		t.Errorf("publish over lowered limit = %v, want queue.ErrQueueFull", err)
	}
	if got := storedIDs(t, q, q.Config().Stream); len(got) != 5 {
		t.Errorf("lowering the limit changed the stream: %v", got)
	}
	waitFor(t, "Fill() above 1", func() bool { return q.Fill() > 1.5 })
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgs: 10, MaxAge: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, testMessage("u-after", 100)); err != nil {
		t.Errorf("publish after raising the limit: %v", err)
	}
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: 1 << 30}); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), "queue.max_msg_size") {
		t.Errorf("max_msg_size over max_payload: %v", err)
	}
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxAge: time.Second}); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), "queue.max_age") {
		t.Errorf("max_age under the duplicate window: %v", err)
	}
}
