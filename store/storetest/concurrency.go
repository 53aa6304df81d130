package storetest

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// Several workers deliver overlapping batches in different orders, as after
// a redelivery storm: each ID is new exactly once and nobody gets an error.
// The orders differ on purpose: a backend that locks rows in batch order
// (PostgreSQL) deadlocks here unless it orders its inserts.
func testConcurrentDeliver(t *testing.T, s store.Store) {
	const (
		workers = 4
		n       = 24
		batch   = 5
	)
	boxes := []string{"a@example.com", "b@example.com", "c@example.com"}
	msgs := make([]*mail.Message, n)
	wantCount := map[string]int64{}
	for i := range msgs {
		to := []string{boxes[i%3]}
		if i%4 == 0 {
			to = append(to, boxes[(i+1)%3])
		}
		for _, a := range to {
			wantCount[a]++
		}
		msgs[i] = simple(t, i, to...)
	}

	results := make([][]store.DeliveryResult, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			order := rng.Perm(n)
			for len(order) > 0 {
				k := min(batch, len(order))
				b := make([]*mail.Message, k)
				for i, j := range order[:k] {
					b[i] = msgs[j]
				}
				order = order[k:]
				res, err := s.Deliver(t.Context(), b)
				if err != nil {
					errs[w] = err
					return
				}
				results[w] = append(results[w], res...)
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: Deliver: %v", w, err)
		}
	}

	fresh := map[string]int{}
	for w := range workers {
		if len(results[w]) != n {
			t.Errorf("worker %d got %d results, want %d", w, len(results[w]), n)
		}
		for _, r := range results[w] {
			if !r.Duplicate {
				fresh[r.ID]++
			}
		}
	}
	for _, m := range msgs {
		if fresh[m.ID] != 1 {
			t.Errorf("%s reported new %d times, want once", m.ID, fresh[m.ID])
		}
		wantRaw(t, s, m.ID, m.Raw)
	}
	var want []store.Mailbox
	for _, a := range boxes {
		list := allPages(t, s, a, 100)
		if int64(len(list)) != wantCount[a] {
			t.Errorf("%s lists %d messages, want %d", a, len(list), wantCount[a])
		}
		want = append(want, store.Mailbox{Address: a, Messages: wantCount[a], LatestAt: list[0].StoredAt})
	}
	wantMailboxes(t, s, want...)
}
