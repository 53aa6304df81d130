package queue

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/mail"
)

func TestOpenIsIdempotentAndAppliesChangedConfig(t *testing.T) {
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
	// A second Open against the running server (as another process would,
	// by URL) with changed limits updates the stream in place.
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	ext.MaxMsgs = 500
	ext.AckWait = 10 * time.Second
	q2 := openQueue(t, ext)
	info := streamInfo(t, q2, cfg.Stream)
	if info.Config.MaxMsgs != 500 || info.State.Msgs != 1 {
		t.Errorf("after second Open: max_msgs %d msgs %d, want 500 and 1", info.Config.MaxMsgs, info.State.Msgs)
	}
	if err := q2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Reopen the same directory (and port) with other limits.
	cfg.Port = port
	cfg.MaxMsgs = 1234
	cfg.MaxAge = 48 * time.Hour
	cfg.MaxBytes = 64 << 20
	q3 := openQueue(t, cfg)
	if got := q3.Server().Port(); got != port {
		t.Errorf("port %d, want %d", got, port)
	}
	info = streamInfo(t, q3, cfg.Stream)
	c := info.Config
	if c.MaxMsgs != 1234 || c.MaxAge != 48*time.Hour || c.MaxBytes != 64<<20 {
		t.Errorf("limits not updated: %+v", c)
	}
	if c.Discard != jetstream.DiscardNew || c.Storage != jetstream.FileStorage || c.Retention != jetstream.WorkQueuePolicy ||
		!c.AllowAtomicPublish || c.Duplicates != cfg.DuplicateWindow || c.MaxMsgSize != cfg.MaxMsgSize {
		t.Errorf("stream config: %+v", c)
	}
	if info.State.Msgs != 1 {
		t.Errorf("message lost across reopen: %d msgs", info.State.Msgs)
	}
	cons, err := q3.Consumer(ctx)
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

func TestOpenRejectsExternalServerWithSmallMaxPayload(t *testing.T) {
	srv, err := StartServer(ServerConfig{DataDir: t.TempDir(), Port: -1}) // max_payload 1 MB
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
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for msg := range batch.Messages() {
		got = msg
	}
	if got == nil {
		t.Fatalf("no message: %v", batch.Error())
	}
	if got.Subject() != "levee.mail.example.com" {
		t.Errorf("subject %q", got.Subject())
	}
	d, err := Decode(got)
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
	md, _ := got.Metadata()
	if md.Sequence.Stream != res.Seq {
		t.Errorf("stream seq %d, publish said %d", md.Sequence.Stream, res.Seq)
	}
	if err := got.Ack(); err != nil {
		t.Fatal(err)
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
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for msg := range batch.Messages() {
		n++
		if _, err := Decode(msg); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%s) = %v, want ErrMalformed", msg.Headers(), err)
		}
	}
	if n != 2 {
		t.Fatalf("fetched %d, want 2", n)
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
