package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGroupSyncSharesOneSyncAndNeverAnEarlierOne: publishes waiting
// together share one sync; one that arrives while a sync runs waits for the
// next, since the running one may have missed its write.
func TestGroupSyncSharesOneSyncAndNeverAnEarlierOne(t *testing.T) {
	g, err := newGroupSync(t.TempDir(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	var syncs atomic.Int64
	started, release := make(chan struct{}, 10), make(chan error)
	g.sync = func(*os.File) error {
		syncs.Add(1)
		started <- struct{}{}
		return <-release
	}
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- g.wait(ctx) }()
	<-started // the first sync is running
	const late = 20
	var wg sync.WaitGroup
	errs := make(chan error, late)
	for range late {
		wg.Go(func() { errs <- g.wait(ctx) })
	}
	waitFor(t, "20 publishes waiting", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.waiting) == late })
	release <- nil
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("a publish that arrived during the first sync returned with it (%v)", err)
	case <-started: // the second sync, for the twenty
	}
	boom := errors.New("EIO")
	release <- boom
	wg.Wait()
	for range late {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("got %v, want the second sync's error", err)
		}
	}
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d syncs for 21 publishes in two waves, want 2", n)
	}
	// After a failed sync nothing is trusted to reach the disk: every
	// later publish fails too, without a sync that would say "fine".
	if err := g.wait(ctx); !errors.Is(err, boom) || !errors.Is(err, errSyncFailed) {
		t.Fatalf("a publish after the failed sync: %v, want the failure", err)
	}
	if n := syncs.Load(); n != 2 {
		t.Fatalf("a sync ran after the failure (%d)", n)
	}
}

// TestPublishWaitsForTheGroupSync: on the embedded server a publish returns
// only after a group sync that began after its PubAck; concurrent publishes
// share syncs. (That the sync makes the write durable is syncfs(2)'s
// promise; a power cut cannot be had in a test.)
func TestPublishWaitsForTheGroupSync(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := openQueueReg(t, testConfig(t), reg)
	if q.groupSync == nil {
		t.Fatal("the embedded queue with the default config has no group sync")
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if _, err := q.Publish(ctxT(t), testMessage(fmt.Sprintf("gs-%d", i), 4096)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	syncs, _ := histogram(t, reg, "levee_queue_group_sync_seconds")
	if got := testutil.ToFloat64(q.groupSync.messages); got != 40 {
		t.Fatalf("group syncs served %v publishes, want 40", got)
	}
	t.Logf("40 concurrent publishes, %v syncs", syncs)
	if syncs < 1 || syncs > 40 {
		t.Fatalf("%v syncs for 40 publishes", syncs)
	}
}

// TestDeadLetterCopyIsSyncedBeforeTheOriginalGoes: giving a message up
// publishes its copy to the dead-letter stream and then deletes the
// original; under group sync the copy waits for a sync in between, or a
// power cut could keep the deletion and lose the copy.
func TestDeadLetterCopyIsSyncedBeforeTheOriginalGoes(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, testMessage("dl-sync", 100)); err != nil {
		t.Fatal(err)
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	awaitPending(t, cons, 1)
	ds, _, err := cons.Fetch(1, 5*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("fetch: %d, %v", len(ds), err)
	}
	if err := ds[0].GiveUp(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(q.groupSync.messages); got != 2 {
		t.Fatalf("group syncs served %v writes, want 2: the publish and the dead-letter copy", got)
	}
}
