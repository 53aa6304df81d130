package natsserver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestStartNeedsADataDir(t *testing.T) {
	if _, err := Start(Config{}); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("Start without a data dir: %v", err)
	}
}

// TestRestartOnTheSameDirAndPortKeepsTheStreams: a server stopped and
// started again on its data directory and port has its streams back, and a
// second server on a port in use fails with the reason instead of running
// half-started.
func TestRestartOnTheSameDirAndPortKeepsTheStreams(t *testing.T) {
	dir := t.TempDir()
	s1, err := Start(Config{DataDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	port := s1.Port()
	if port == 0 || port == 4222 {
		t.Fatalf("port %d: want a random free one", port)
	}
	if _, err := Start(Config{DataDir: t.TempDir(), Port: port}); err == nil {
		t.Error("a second server on a port in use started")
	}
	nc, err := nats.Connect(s1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("s.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s1.Shutdown()
	s1.Shutdown() // twice is fine

	s2, err := Start(Config{DataDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	if s2.Port() != port {
		t.Errorf("restarted on %d, want %d", s2.Port(), port)
	}
	nc, err = nats.Connect(s2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.StreamInfo("S")
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("after restart: %+v, %v; want the stream with its message", info, err)
	}
}

// TestRestartKeepsPortStreamsAndClients: Restart brings the server back on
// its port with its streams, a client reconnects by itself, and Health is
// nil before and after (a store write error, which Restart exists for, is
// tested with a full disk in package queue: TestFullDiskHealsWithoutRestart).
func TestRestartKeepsPortStreamsAndClients(t *testing.T) {
	s, err := Start(Config{DataDir: t.TempDir(), SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if err := s.Health(); err != nil {
		t.Fatalf("Health of a fresh server: %v", err)
	}
	port := s.Port()
	maxStore := s.NATS().JetStreamConfig().MaxStore
	reconnected := make(chan struct{})
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { close(reconnected) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("s.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port {
		t.Errorf("restarted on %d, want %d", s.Port(), port)
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health after Restart: %v", err)
	}
	if got := s.NATS().JetStreamConfig().MaxStore; got != maxStore {
		t.Errorf("store limit after Restart: %d, want the one it had, %d", got, maxStore)
	}
	// Right after Restart the client may not have seen its connection
	// go yet: wait for the reconnect itself.
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatalf("client not reconnected 30s after the restart: %s", nc.Status())
	}
	if _, err := js.Publish("s.x", []byte("after")); err != nil {
		t.Fatal(err)
	}
	info, err := js.StreamInfo("S")
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("after restart: %+v, %v; want the stream with both messages", info, err)
	}
	s.Shutdown()
	if err := s.Restart(); !errors.Is(err, ErrShutdown) {
		t.Errorf("Restart after Shutdown: %v, want ErrShutdown", err)
	}
	if err := s.Health(); !errors.Is(err, ErrShutdown) {
		t.Errorf("Health after Shutdown: %v, want ErrShutdown", err)
	}
}
