package queue

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue/natsserver"
)

// TestOpenIsIdempotentAndLeavesLiveLimitsAlone: a start creates the stream
// with the config's limits; later starts, with another config, another
// process or the same directory, keep the live limits (reporting the drift)
// and apply only what is not a limit.
func TestOpenIsIdempotentAndLeavesLiveLimitsAlone(t *testing.T) {
	cfg := testConfig(t)
	ctx := ctxT(t)

	q1, err := Open(ctx, cfg, prometheus.NewRegistry(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q1.Publish(ctx, testMessage("kept-1", 100)); err != nil {
		t.Fatal(err)
	}
	port := q1.Server().Port()
	if port == 4222 {
		t.Fatal("embedded server took 4222")
	}
	created := streamInfo(t, q1, cfg.Stream).Config
	if created.MaxMsgs != cfg.MaxMsgs || created.MaxBytes != cfg.MaxBytes {
		t.Fatalf("created with max_msgs %d max_bytes %d, want the config's", created.MaxMsgs, created.MaxBytes)
	}
	// A second Open against the running server (as another process would,
	// by URL) with other limits leaves them as they are and says so.
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	ext.MaxMsgs = 500
	ext.PerDomainMaxMsgs = 1
	ext.AckWait = 10 * time.Second
	reg := prometheus.NewRegistry()
	q2 := openQueueReg(t, ext, reg)
	info := streamInfo(t, q2, cfg.Stream)
	if info.Config.MaxMsgs != cfg.MaxMsgs || info.Config.MaxMsgsPerSubject != -1 || info.State.Msgs != 1 {
		t.Errorf("after second Open: max_msgs %d per-subject %d msgs %d, want the first config's and 1 message",
			info.Config.MaxMsgs, info.Config.MaxMsgsPerSubject, info.State.Msgs)
	}
	drift := ext.Drift(info.Config)
	if len(drift) != 2 || drift[0] != (LimitDrift{Key: "max_msgs", Live: "1000000", Config: "500"}) ||
		drift[1] != (LimitDrift{Key: "per_domain_max_msgs", Live: "0", Config: "1"}) {
		t.Errorf("drift %v, want max_msgs and per_domain_max_msgs", drift)
	}
	waitFor(t, "the drift gauge", func() bool {
		return testutil.ToFloat64(q2.metrics.drift.WithLabelValues("max_msgs")) == 1 &&
			testutil.ToFloat64(q2.metrics.drift.WithLabelValues("per_domain_max_msgs")) == 1 &&
			testutil.ToFloat64(q2.metrics.drift.WithLabelValues("max_bytes")) == 0
	})
	if err := q2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Reopen the same directory (and port) with other limits and another
	// duplicate window: the window is applied, the limits are not.
	cfg.Port = port
	cfg.MaxMsgs = 1234
	cfg.MaxAge = 48 * time.Hour
	cfg.MaxBytes = 64 << 20
	cfg.DuplicateWindow = 20 * time.Minute
	q3 := openQueue(t, cfg)
	if got := q3.Server().Port(); got != port {
		t.Errorf("port %d, want %d", got, port)
	}
	info = streamInfo(t, q3, cfg.Stream)
	c := info.Config
	if c.MaxMsgs != created.MaxMsgs || c.MaxAge != created.MaxAge || c.MaxBytes != created.MaxBytes {
		t.Errorf("limits changed by a start: %+v", c)
	}
	if c.Discard != jetstream.DiscardNew || c.Storage != jetstream.FileStorage || c.Retention != jetstream.WorkQueuePolicy ||
		!c.AllowAtomicPublish || c.Duplicates != 20*time.Minute || c.MaxMsgSize != cfg.MaxMsgSize {
		t.Errorf("stream config: %+v", c)
	}
	if info.State.Msgs != 1 {
		t.Errorf("message lost across reopen: %d msgs", info.State.Msgs)
	}
	cons, err := q3.js.Consumer(ctx, cfg.Stream, cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	cc := cons.CachedInfo().Config
	if cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxDeliver != -1 || cc.FilterSubject != "levee.mail.>" ||
		cc.MaxAckPending != cfg.MaxAckPending || len(cc.BackOff) != 4 || cc.AckWait != cfg.AckWait+time.Second {
		t.Errorf("consumer config: %+v", cc)
	}
	dead := streamInfo(t, q3, cfg.DeadStream).Config
	if dead.Subjects[0] != "levee.dead.>" || dead.Storage != jetstream.FileStorage || dead.MaxAge != DefaultDeadMaxAge ||
		dead.MaxBytes != 64<<20 { // a tenth of 64 MiB is below the 64 MiB floor

		t.Errorf("dead stream config: %+v", dead)
	}
}

// TestStartWithSameConfigWritesNothing: a start whose config matches the
// stream (limits aside) leaves the stream's config untouched, so that a
// fleet of restarting processes does not keep rewriting it.
func TestStartWithSameConfigWritesNothing(t *testing.T) {
	cfg := testConfig(t)
	q1 := openQueue(t, cfg)
	before := streamInfo(t, q1, cfg.Stream)
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	ext.MaxBytes = 32 << 20
	q2 := openQueue(t, ext)
	after := streamInfo(t, q2, cfg.Stream)
	if !after.Created.Equal(before.Created) || !reflect.DeepEqual(after.Config, before.Config) {
		t.Errorf("a second start changed the stream:\nbefore %+v\nafter  %+v", before.Config, after.Config)
	}
}

func TestOpenRejectsExternalServerWithSmallMaxPayload(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{DataDir: t.TempDir(), Port: -1}) // max_payload 1 MB
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	cfg := DefaultConfig()
	cfg.URL = srv.ClientURL()
	_, err = Open(ctxT(t), cfg, nil, nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("queue.max_msg_size")) {
		t.Fatalf("Open = %v, want an error naming queue.max_msg_size", err)
	}
}

func TestPublishConsumeRoundTrip(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	m := testMessage("round-trip-1", 3000)
	m.Envelope.From = "" // the null sender
	res, err := q.Publish(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.Seq != 1 {
		t.Errorf("result %+v, want seq 1, not duplicate", res)
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer learns of a publish asynchronously (even in process):
	// wait until it counts the message, so that "at once" is the claim
	// under test and not the race between stream and consumer.
	awaitPending(t, cons, 1)
	ds, waited, err := cons.Fetch(10, 5*time.Second)
	if err != nil || len(ds) != 1 || waited {
		t.Fatalf("Fetch = %d deliveries, waited %v, %v; want the one message at once", len(ds), waited, err)
	}
	got := ds[0].(*delivery)
	if got.m.Subject() != "levee.mail.example.com" {
		t.Errorf("subject %q", got.m.Subject())
	}
	d, err := got.Message()
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != m.ID || !bytes.Equal(d.Raw, m.Raw) || d.Size != int64(len(m.Raw)) {
		t.Errorf("decoded id %q size %d", d.ID, d.Size)
	}
	e, w := d.Envelope, m.Envelope
	if e.From != "" || len(e.To) != 2 || e.To[0] != w.To[0] || e.To[1] != w.To[1] ||
		e.RemoteAddr != w.RemoteAddr || e.Helo != w.Helo || !e.ReceivedAt.Equal(w.ReceivedAt) {
		t.Errorf("envelope %+v, want %+v", e, w)
	}
	md, _ := got.m.Metadata()
	if md.Sequence.Stream != res.Seq {
		t.Errorf("stream seq %d, publish said %d", md.Sequence.Stream, res.Seq)
	}
	if n, last := got.Attempt(); n != 1 || last != DefaultMaxDeliver {
		t.Errorf("Attempt() = %d of %d, want 1 of %d", n, last, DefaultMaxDeliver)
	}
	if err := got.Ack(); err != nil {
		t.Fatal(err)
	}
	// Nothing left: Fetch waits its time, then returns none.
	start := time.Now()
	ds, waited, err = cons.Fetch(10, 200*time.Millisecond)
	if err != nil || len(ds) != 0 || !waited || time.Since(start) < 150*time.Millisecond {
		t.Errorf("Fetch on an empty queue = %d deliveries, waited %v after %s, %v", len(ds), waited, time.Since(start), err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	// Someone else's message on our subjects: no Levee headers.
	if _, err := q.JetStream().Publish(ctx, "levee.mail.example.com", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	hdr.Set(HeaderMsgID, "x")
	hdr.Set(HeaderMailFrom, "a@b")
	hdr.Set(HeaderRcptTo, "c@d")
	hdr.Set(HeaderReceivedAt, "yesterday")
	if _, err := q.JetStream().PublishMsg(ctx, &nats.Msg{Subject: "levee.mail.d", Header: hdr}); err != nil {
		t.Fatal(err)
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ds []Delivery
	waitFor(t, "both messages", func() bool {
		more, _, err := cons.Fetch(2, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, more...)
		return len(ds) >= 2
	})
	for _, d := range ds {
		if _, err := d.Message(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Message() of %s = %v, want ErrMalformed", d.(*delivery).m.Headers(), err)
		}
	}
	if len(ds) != 2 {
		t.Fatalf("fetched %d, want 2", len(ds))
	}
}

func TestCloseFailsPublishAndIsIdempotent(t *testing.T) {
	q, err := Open(ctxT(t), testConfig(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = q.Publish(ctxT(t), testMessage("after-close", 10))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Publish after Close = %v, want ErrUnavailable", err)
	}
}

func TestPublishInvalidMessage(t *testing.T) {
	q := openQueue(t, testConfig(t))
	noRcpt := testMessage("x", 10)
	noRcpt.Envelope.To = nil
	for name, m := range map[string]*mail.Message{"nil": nil, "no id": testMessage("", 10), "no rcpt": noRcpt} {
		if _, err := q.Publish(ctxT(t), m); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: %v, want ErrInvalidMessage", name, err)
		}
	}
}

// TestStartDropsTheOldStartPathsMetadata: a stream an earlier Levee set up
// (when every start wrote the limits) carries its bookkeeping in metadata;
// a start removes it and keeps the limits.
func TestStartDropsTheOldStartPathsMetadata(t *testing.T) {
	cfg := testConfig(t)
	q1 := openQueue(t, cfg)
	sc := streamInfo(t, q1, cfg.Stream).Config
	sc.MaxMsgs = 4321
	sc.Metadata = map[string]string{"levee.configured_limits": "max_msgs=1", "levee.withheld_limits": "max_age", "other": "kept"}
	if _, err := q1.JetStream().UpdateStream(ctxT(t), sc); err != nil {
		t.Fatal(err)
	}
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	q2 := openQueue(t, ext)
	got := streamInfo(t, q2, cfg.Stream).Config
	if _, ok := got.Metadata["levee.configured_limits"]; ok || got.Metadata["levee.withheld_limits"] != "" || got.Metadata["other"] != "kept" || got.MaxMsgs != 4321 {
		t.Errorf("after a start: max_msgs %d, metadata %v", got.MaxMsgs, got.Metadata)
	}
}

// awaitPending waits until the consumer's partitions count n messages
// not yet delivered.
func awaitPending(t *testing.T, c *Consumer, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pending uint64
		for _, jc := range c.parts() {
			ci, err := jc.Info(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			pending += ci.NumPending
		}
		if pending == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer counts %d pending, want %d", pending, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
