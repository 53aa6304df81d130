package queue

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue/natsserver"
)

// startCluster starts a three-node JetStream cluster of embedded servers.
func startCluster(t *testing.T) []*natsserver.Server {
	t.Helper()
	// Every node lists every route, itself included (the server skips
	// its own): a JetStream cluster needs configured routes on each node.
	var routes []string
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, fmt.Sprintf("nats-route://%s", l.Addr()))
		l.Close()
	}
	var nodes []*natsserver.Server
	for i := range 3 {
		sc := natsserver.Config{
			DataDir:     t.TempDir(),
			Port:        -1,
			SyncAlways:  true,
			MaxPayload:  DefaultMaxMsgSize + headerRoom,
			ServerName:  fmt.Sprintf("n%d", i),
			ClusterName: "levee-test",
			ClusterPort: ports[i],
			Routes:      routes,
			Log:         testLog(t),
		}
		s, err := natsserver.Start(sc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		nodes = append(nodes, s)
	}
	return nodes
}

// TestClusterR3: the queue on a three-node cluster with replicated
// streams; group commit works there too, and when the node we are
// connected to stops, the client moves to another and publishing goes on
// with the remaining quorum, nothing acknowledged lost.
func TestClusterR3(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster formation takes seconds")
	}
	nodes := startCluster(t)
	cfg := DefaultConfig()
	cfg.URL = nodes[0].ClientURL()
	cfg.Replicas = 3
	cfg.MinBatch = 2
	cfg.PublishTimeout = 5 * time.Second
	t0 := time.Now()
	q := openQueue(t, cfg)
	t.Logf("cluster queue open after %s", time.Since(t0))
	ctx := ctxT(t)
	if len(q.layout) != DefaultPartitions {
		t.Fatalf("%d partitions, want the default %d", len(q.layout), DefaultPartitions)
	}
	for _, p := range q.layout {
		if info := streamInfo(t, q, p.Stream); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("partition %s not replicated: %+v %+v", p.Stream, info.Config, info.Cluster)
		}
	}
	publishAll := func(prefix string, n int) map[string]bool {
		var mu sync.Mutex
		acked := map[string]bool{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				id := fmt.Sprintf("%s-%d", prefix, i)
				_, err := q.Publish(ctx, testMessage(id, 2000))
				switch {
				case err == nil:
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				case !errors.Is(err, ErrUnavailable):
					t.Errorf("publish %s: %v", id, err)
				}
			})
		}
		wg.Wait()
		return acked
	}
	acked := publishAll("r3", 60)
	if len(acked) != 60 {
		t.Fatalf("acknowledged %d of 60 on a healthy cluster", len(acked))
	}
	// Lose the node we are connected to: two of three still make a quorum.
	nodes[0].Shutdown()
	waitFor(t, "publishing with a node down", func() bool {
		_, err := q.Publish(ctx, testMessage("probe", 100))
		return err == nil
	})
	for id := range publishAll("r2", 30) {
		acked[id] = true
	}
	stored := storedInAll(t, q)
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged %s stored %d times", id, stored[id])
		}
	}
}

// TestClusterPartitionChange: a JetStream cluster holding the single
// replicated stream of an older Levee, then four partitions, drains
// completely under the next layout while the old one still publishes.
func TestClusterPartitionChange(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster formation takes seconds")
	}
	nodes := startCluster(t)
	cfg := DefaultConfig()
	cfg.URL = nodes[0].ClientURL()
	cfg.Replicas = 3
	cfg.PublishTimeout = 5 * time.Second
	checkLayoutChangeDrains(t, cfg)
}
