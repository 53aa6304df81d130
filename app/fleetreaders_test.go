package app

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-mail/levee/queue/fleet"
	"github.com/levee-mail/levee/queue/natsserver"
)

// TestFleetReadersFollowTheWebProcesses: a worker without a web role in its
// process reads the web processes' read latency from their stats, and stops
// trusting it once they stop answering.
func TestFleetReadersFollowTheWebProcesses(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	web, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	since := time.Unix(1000, 0).UTC()
	if err := fleet.Serve(web, "LEVEE_MAIL", func() fleet.Stats {
		return fleet.Stats{Instance: "web", Roles: "web", Web: &fleet.WebStats{ReadP99: 0.04, IdleP99: 0.005, Since: since}}
	}, nil); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	f := &fleetReaders{nc: nc, stream: "LEVEE_MAIL", every: 50 * time.Millisecond}
	done := make(chan struct{})
	ctx := t.Context()
	go func() { defer close(done); f.run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recent, idle, got, ok := f.ReadLatency()
		if ok {
			if recent != 40*time.Millisecond || idle != 5*time.Millisecond || !got.Equal(since) {
				t.Errorf("ReadLatency = %v %v %v, want 40ms over 5ms since %v", recent, idle, got, since)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the web process's read latency never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	web.Close() // the web process goes away: its last answer ages out
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, _, _, ok := f.ReadLatency(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still judging by a web process that stopped answering")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
