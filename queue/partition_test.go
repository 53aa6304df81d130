package queue

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/queue/natsserver"
)

func TestShareAddsUpToTheTotal(t *testing.T) {
	for _, tc := range []struct {
		total int64
		n     int
	}{{1_000_000, 4}, {10, 4}, {7, 3}, {1 << 30, 8}, {5, 1}, {3, 4}} {
		var sum int64
		for i := range tc.n {
			s := Share(tc.total, i, tc.n)
			if s < 1 {
				t.Errorf("Share(%d, %d, %d) = %d", tc.total, i, tc.n, s)
			}
			sum += s
		}
		// A total below the count gives each partition 1: the only case
		// where the shares exceed it.
		if want := max(tc.total, int64(tc.n)); sum != want {
			t.Errorf("shares of %d over %d add up to %d, want %d", tc.total, tc.n, sum, want)
		}
	}
	if Share(-1, 2, 4) != -1 || Share(0, 1, 4) != 0 {
		t.Error("an unlimited total is not split")
	}
}

func TestLayoutAndDomainOfEverySubject(t *testing.T) {
	c := DefaultConfig()
	c.Partitions = 1
	if l := c.Layout(); len(l) != 1 || l[0].Stream != "LEVEE_MAIL" || l[0].Prefix != "levee.mail" {
		t.Errorf("one partition: %+v, want the single stream", l)
	}
	c.Partitions = 3
	l := c.Layout()
	if len(l) != 3 || l[2] != (Partition{Index: 2, Stream: "LEVEE_MAIL_2", Prefix: "levee.mail-2"}) {
		t.Errorf("three partitions: %+v", l)
	}
	for subject, want := range map[string]string{
		"levee.mail.example.com":    "example.com",
		"levee.mail-2.example.com":  "example.com",
		"levee.mail-17.a.b":         "a.b",
		"levee.mail-x.example.com":  "",
		"levee.mailbox.example.com": "",
		"levee.dead.example.com":    "",
	} {
		if got := c.DomainOf(subject); got != want {
			t.Errorf("domainOf(%q) = %q, want %q", subject, got, want)
		}
	}
}

// TestPartitionsSpreadAFloodAndKeepDuplicatesDuplicate: one domain's mail
// spreads over every partition (a real flood is one domain), the same id
// always lands in the same partition (so a retransmission is JetStream's
// duplicate), and the partitions' limits add up to the configured totals.
func TestPartitionsSpreadAFloodAndKeepDuplicatesDuplicate(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 4
	cfg.MaxMsgs = 1001
	cfg.PerDomainMaxMsgs = 400
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	for _, id := range ids("flood", 200) {
		if res, err := q.Publish(ctx, testMessage(id, 200)); err != nil || res.Duplicate {
			t.Fatalf("publish %s: %+v %v", id, res, err)
		}
	}
	for _, id := range ids("flood", 20) {
		if res, err := q.Publish(ctx, testMessage(id, 200)); err != nil || !res.Duplicate {
			t.Fatalf("retransmission of %s: %+v %v; want a duplicate", id, res, err)
		}
	}
	var sumMsgs, sumCap int64
	for _, p := range q.layout {
		info := streamInfo(t, q, p.Stream)
		if n := info.State.Msgs; n < 20 {
			t.Errorf("partition %s holds %d of 200: the flood did not spread", p.Stream, n)
		}
		sumMsgs += info.Config.MaxMsgs
		sumCap += info.Config.MaxMsgsPerSubject
	}
	if sumMsgs != 1001 || sumCap != 400 {
		t.Errorf("partition limits add up to max_msgs %d and a per-domain cap of %d, want 1001 and 400", sumMsgs, sumCap)
	}
	if got := storedInAll(t, q); len(got) != 200 {
		t.Errorf("%d distinct messages queued, want 200", len(got))
	}
}

// TestChangingPartitionsDrainsEveryStream: mail queued under one layout
// (the single stream of an older Levee, then four partitions) is drained
// under the next one, even while a process of the old layout still
// publishes: nothing stranded, nothing handed out twice.
func TestChangingPartitionsDrainsEveryStream(t *testing.T) {
	checkLayoutChangeDrains(t, testConfig(t))
}

// checkLayoutChangeDrains is TestChangingPartitionsDrainsEveryStream on
// cfg's server: the embedded one, or cfg.URL's cluster.
func checkLayoutChangeDrains(t *testing.T, cfg Config) {
	t.Helper()
	cfg.Partitions = 1
	single := openQueue(t, cfg)
	ctx := ctxT(t)
	acked := map[string]bool{}
	for _, id := range ids("single", 30) {
		if _, err := single.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
		acked[id] = true
	}
	four := cfg
	four.Partitions = 4
	if four.URL == "" {
		four.URL = single.Server().ClientURL()
	}
	q4 := openQueue(t, four)
	if n := len(q4.mailStreams()); n != 5 {
		t.Fatalf("a queue of 4 partitions drains %d streams, want them and the old single one", n)
	}
	for _, id := range ids("four", 40) {
		if _, err := q4.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
		acked[id] = true
	}
	// A process on two partitions starts while q4 keeps publishing.
	two := four
	two.Partitions = 2
	q2 := openQueue(t, two)
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, id := range ids("during", 40) {
			if _, err := q4.Publish(ctx, testMessage(id, 200)); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			acked[id] = true
			mu.Unlock()
		}
	})
	cons, err := q2.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		done := len(got) == len(acked) && len(acked) == 110
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		ds, _, err := cons.Fetch(25, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			m, err := d.Message()
			if err != nil {
				t.Fatal(err)
			}
			got[m.ID]++
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	for id := range acked {
		if got[id] != 1 {
			t.Errorf("%s handed out %d times", id, got[id])
		}
	}
	if len(got) != len(acked) {
		t.Errorf("handed out %d distinct messages, acknowledged %d", len(got), len(acked))
	}
	waitFor(t, "every stream empty", func() bool {
		for _, p := range q2.mailStreams() {
			if streamInfo(t, q2, p.Stream).State.Msgs != 0 {
				return false
			}
		}
		return true
	})
}

// TestFetchServesEveryPartitionInTurn: a deep partition does not starve
// the others: a few messages in a shallow one come out within the first
// fetches, not after the deep one drained.
func TestFetchServesEveryPartitionInTurn(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 2
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	byPart := map[int][]string{}
	for i := 0; len(byPart[0]) < 100 || len(byPart[1]) < 5; i++ {
		id := fmt.Sprintf("m-%d", i)
		p := cfg.Route(id).Index
		if (p == 0 && len(byPart[0]) < 100) || (p == 1 && len(byPart[1]) < 5) {
			byPart[p] = append(byPart[p], id)
		}
	}
	for _, id := range append(slices.Clone(byPart[0]), byPart[1]...) {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shallow := map[string]bool{}
	for _, id := range byPart[1] {
		shallow[id] = true
	}
	fetched := 0
	for len(shallow) > 0 && fetched < 60 {
		ds, _, err := cons.Fetch(10, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			m, _ := d.Message()
			delete(shallow, m.ID)
			_ = d.Ack()
			fetched++
		}
	}
	if len(shallow) > 0 {
		t.Errorf("after %d messages the shallow partition still holds %v", fetched, slices.Collect(maps.Keys(shallow)))
	}
}

// TestAPartitionedQueueReportsSums: the monitor's gauges and the backlog
// add up every partition.
func TestAPartitionedQueueReportsSums(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 3
	cfg.MaxMsgs = 300
	reg := prometheus.NewRegistry()
	q := openQueueReg(t, cfg, reg)
	ctx := ctxT(t)
	for _, id := range ids("s", 30) {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the backlog of 30", func() bool {
		n, _, err := q.Backlog(ctx)
		return err == nil && n == 30
	})
	q.Refresh()
	waitFor(t, "the gauges", func() bool {
		f := q.Fill()
		return f > 0.09 && f < 0.2 // the fullest partition's share of its 100
	})
	// Each partition has its own gauge; they add up to the queue's.
	waitFor(t, "the partition gauges", func() bool {
		var sum float64
		for _, p := range q.layout {
			sum += testutil.ToFloat64(q.metrics.partition.WithLabelValues(p.Stream))
		}
		return sum == 30 && testutil.ToFloat64(q.metrics.messages) == 30 &&
			testutil.CollectAndCount(q.metrics.partition) == 3
	})
}

// TestFetchWhileWaitingHandsOutAtMostMax: mail arriving on several
// partitions during one wait round comes out max at a time, and what the
// round brought beyond max comes out next, without a redelivery.
func TestFetchWhileWaitingHandsOutAtMostMax(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 4
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One message for each partition, published while Fetch waits.
	var ids []string
	seen := map[int]bool{}
	for i := 0; len(ids) < cfg.Partitions; i++ {
		id := fmt.Sprintf("w-%d", i)
		if p := cfg.Route(id).Index; !seen[p] {
			seen[p] = true
			ids = append(ids, id)
		}
	}
	published := make(chan struct{})
	defer func() { <-published }() // a publish returns after its sync, maybe after the fetch
	go func() {
		defer close(published)
		time.Sleep(30 * time.Millisecond) // inside the first wait round
		for _, id := range ids {
			if _, err := q.Publish(ctx, testMessage(id, 100)); err != nil {
				t.Error(err)
			}
		}
	}()
	got := map[string]bool{}
	for len(got) < len(ids) {
		ds, _, err := cons.Fetch(1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 {
			t.Fatalf("Fetch(1) = %d deliveries, want 1", len(ds))
		}
		m, _ := ds[0].Message()
		if n, _ := ds[0].Attempt(); n != 1 {
			t.Errorf("%s handed out on attempt %d, want 1", m.ID, n)
		}
		got[m.ID] = true
		if err := ds[0].Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStreamsOfOtherLayoutsComeAndGoWhileRunning: a drained stream of an
// old layout deleted under a running process is forgotten (the monitor,
// the backlog and the workers' fetches carry on), and a stream that a
// process of another layout creates later is found and drained.
func TestStreamsOfOtherLayoutsComeAndGoWhileRunning(t *testing.T) {
	was := discoverEvery
	t.Cleanup(func() { discoverEvery = was })
	discoverEvery = 100 * time.Millisecond
	srv, err := natsserver.Start(natsserver.Config{DataDir: t.TempDir(), Port: -1, MaxPayload: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx := ctxT(t)
	one := testConfig(t)
	one.URL = srv.ClientURL()
	q1 := openQueue(t, one)
	publishAll(ctx, t, q1, ids("old", 3))
	if err := q1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	four := one
	four.Partitions = 4
	q4 := openQueue(t, four)
	cons, err := q4.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	take := func(n int) map[string]bool { t.Helper(); return takeAcked(t, cons, n) }
	take(3)
	waitFor(t, "the old stream empty", func() bool { return streamInfo(t, q4, one.Stream).State.Msgs == 0 })
	if err := q4.JetStream().DeleteStream(ctx, one.Stream); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted stream forgotten", func() bool { return len(q4.mailStreams()) == 4 })
	time.Sleep(2 * monitorInterval)
	if up := testutil.ToFloat64(q4.metrics.up); up != 1 {
		t.Errorf("levee_queue_up %v after a drained stream was deleted, want 1", up)
	}
	if _, _, err := q4.Backlog(ctx); err != nil {
		t.Errorf("Backlog after a drained stream was deleted: %v", err)
	}
	for _, id := range ids("after", 4) {
		if _, err := q4.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	take(4)

	// A process of the single-stream layout starts again: its stream is
	// found and drained by the running four-partition process.
	q1b := openQueue(t, one)
	for _, id := range ids("new-single", 3) {
		if _, err := q1b.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	got := take(3)
	for _, id := range ids("new-single", 3) {
		if !got[id] {
			t.Errorf("%s from the new single stream not drained: got %v", id, got)
		}
	}
}

// TestTheEmbeddedServerDeletesAnOldLayoutOnceDrained: after a change of
// queue.partitions on the embedded server (as an upgrade from the old
// default of 4 is), the old layout's streams are drained, then deleted
// once empty and quiet for drainedGrace, and no longer read; before the
// grace they stay.
func TestTheEmbeddedServerDeletesAnOldLayoutOnceDrained(t *testing.T) {
	was := drainedGrace
	t.Cleanup(func() { drainedGrace = was })
	ctx := ctxT(t)
	four := testConfig(t)
	four.Partitions = 4
	q4 := openQueue(t, four)
	publishAll(ctx, t, q4, ids("old", 12))
	if err := q4.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Within the grace: drained, still there, still read.
	drainedGrace = time.Hour // set while no monitor runs
	one := four
	one.Partitions = 1
	q1 := openQueue(t, one)
	cons, err := q1.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	takeAcked(t, cons, 12)
	waitFor(t, "the old streams empty", func() bool {
		for _, p := range four.Layout() {
			if streamInfo(t, q1, p.Stream).State.Msgs != 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * monitorInterval)
	if n := len(q1.mailStreams()); n != 5 {
		t.Errorf("%d mail streams read within the grace, want the 4 drained ones and the new one", n)
	}
	if err := q1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Past it: deleted and forgotten; the new layout works on.
	drainedGrace = 0
	q1b := openQueue(t, one)
	waitFor(t, "the drained streams deleted", func() bool { return len(q1b.mailStreams()) == 1 })
	for _, p := range four.Layout() {
		if _, err := q1b.JetStream().Stream(ctx, p.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("%s: %v, want deleted", p.Stream, err)
		}
	}
	if _, err := q1b.Publish(ctx, testMessage("new", 200)); err != nil {
		t.Fatal(err)
	}
	if n := streamInfo(t, q1b, one.Stream).State.Msgs; n != 1 {
		t.Errorf("the new layout's stream holds %d messages, want 1", n)
	}
}
