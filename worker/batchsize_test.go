package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// batchRecorder notes the bytes of every batch it stores.
type batchRecorder struct {
	store.Store
	mu      sync.Mutex
	batches []int64
}

func (b *batchRecorder) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	var n int64
	for _, m := range msgs {
		n += int64(len(m.Raw))
	}
	b.mu.Lock()
	b.batches = append(b.batches, n)
	b.mu.Unlock()
	return b.Store.Deliver(ctx, msgs)
}

func (b *batchRecorder) largest() (largest int64, count int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range b.batches {
		largest = max(largest, n)
	}
	return largest, len(b.batches)
}

// TestLargeMessagesComeInSmallerBatches: with messages of 1 MiB a loop
// fetches about worker.batch_max_bytes of them, not worker.batch_size (32
// messages of 9 MiB were ~300 MiB a loop); small mail is batched in full
// again after them.
func TestLargeMessagesComeInSmallerBatches(t *testing.T) {
	r := newRig(t, nil)
	rec := &batchRecorder{Store: r.st}
	publish := func(n, size int) {
		for range n {
			r.count++
			body := fmt.Appendf(nil, "Subject: m%d\r\n\r\n%s\r\n", r.count, strings.Repeat("x", size))
			env := mail.Envelope{From: "a@client.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
			m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
			if _, err := r.q.Publish(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 1<<20) // the first batch, fetched before any size is known
	w, _ := r.worker(Config{Concurrency: 1, BatchSize: 32, BatchMaxBytes: 2 << 20}, rec)
	w.Start()
	waitFor(t, 20*time.Second, "the first message stored", func() bool { return r.stored() == 1 })
	publish(10, 1<<20)
	waitFor(t, 20*time.Second, "ten large messages stored", func() bool { return r.stored() == 11 })
	if largest, _ := rec.largest(); largest > 2<<20+64<<10 {
		t.Fatalf("a batch of %d KiB, want about worker.batch_max_bytes (2048 KiB) at most", largest>>10)
	}
	_, before := rec.largest()
	// The loop stops while they are published, so that it finds them all
	// waiting (running, it would take each as it arrives: the batch size
	// would then measure the publishes' pace, not the loop's sizing).
	w.SetConcurrency(0)
	publish(64, 100)
	w.SetConcurrency(1)
	waitFor(t, 20*time.Second, "small messages stored", func() bool { return r.stored() == 75 })
	if _, after := rec.largest(); after-before > 16 {
		t.Fatalf("64 small messages took %d batches: batches did not grow back", after-before)
	}
}
