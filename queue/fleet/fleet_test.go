package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-mail/levee/queue/natsserver"
)

func connect(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestGatherSumsWhoeverAnswers: every process serving the stream's subject
// answers; one serving another stream's does not count; an unreadable
// answer is reported without hiding the others.
func TestGatherSumsWhoeverAnswers(t *testing.T) {
	nc := connect(t)
	serve := func(stream string, s Stats) {
		t.Helper()
		if err := Serve(nc, stream, func() Stats { return s }, nil); err != nil {
			t.Fatal(err)
		}
	}
	serve("MAIL", Stats{Instance: "a", Worker: &WorkerStats{Concurrency: 3}, SMTP: &SMTPStats{Accepted: 7, Deferred: 2, Sessions: 4}})
	serve("MAIL", Stats{Instance: "b", Worker: &WorkerStats{Concurrency: 5}})
	serve("MAIL", Stats{Instance: "c", SMTP: &SMTPStats{Accepted: 1, Rejected: 1}})
	serve("OTHER", Stats{Instance: "x", Worker: &WorkerStats{Concurrency: 100}})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	procs, err := Gather(ctx, nc, "MAIL", time.Second)
	if err != nil || len(procs) != 3 {
		t.Fatalf("Gather = %d answers, %v; want 3", len(procs), err)
	}
	w, s := Sum(procs)
	if w != (WorkerTotals{Processes: 2, Concurrency: 8}) || s != (SMTPTotals{Processes: 2, Accepted: 8, Deferred: 2, Rejected: 1, Sessions: 4}) {
		t.Errorf("Sum = %+v, %+v", w, s)
	}

	if _, err := nc.Subscribe(Subject("MAIL"), func(m *nats.Msg) { _ = m.Respond([]byte("not json")) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	procs, err = Gather(ctx, nc, "MAIL", time.Second)
	if err == nil || len(procs) != 3 {
		t.Errorf("with an unreadable answer: %d answers, %v; want the 3 and an error", len(procs), err)
	}
}

// TestGatherWithNobodyListeningReturnsAtOnce: the server's "no responders"
// ends the wait instead of the full wait.
func TestGatherWithNobodyListeningReturnsAtOnce(t *testing.T) {
	nc := connect(t)
	start := time.Now()
	procs, err := Gather(context.Background(), nc, "MAIL", 5*time.Second)
	if err != nil || len(procs) != 0 || procs == nil {
		t.Fatalf("Gather = %v, %v; want an empty list", procs, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Gather waited %s for nobody", took)
	}
}

// TestReadersIsTheWorstOffWebProcess: the web process whose readers are
// furthest over their idle baseline speaks for the readers; processes
// without a judgement are left out.
func TestReadersIsTheWorstOffWebProcess(t *testing.T) {
	at := time.Unix(100, 0)
	procs := []Stats{
		{Instance: "worker"},
		{Instance: "web-1", Web: &WebStats{ReadP99: 0.010, IdleP99: 0.005, Since: at}},
		{Instance: "web-2", Web: &WebStats{ReadP99: 0.030, IdleP99: 0.006, Since: at.Add(time.Second)}},
		{Instance: "web-3", Web: &WebStats{ReadP99: 0.050, IdleP99: 0}},
	}
	recent, idle, since, ok := Readers(procs)
	if !ok || recent != 30*time.Millisecond || idle != 6*time.Millisecond || !since.Equal(at.Add(time.Second)) {
		t.Errorf("Readers = %v %v %v %v, want web-2's 30ms over 6ms", recent, idle, since, ok)
	}
	if _, _, _, ok := Readers(procs[:1]); ok {
		t.Error("ok without any web process")
	}
}
