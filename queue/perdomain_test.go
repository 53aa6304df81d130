package queue

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestPerDomainLimitDefersOnlyTheFloodingDomain: one tenant floods, another
// keeps sending. The flooding domain's mail beyond its cap is refused
// (ErrQueueFull: the sender gets 452 4.3.1) while the other domain's mail all
// goes through. It also checks the behaviour reported in nats-server #4247
// (a work-queue stream with discard-new per subject acknowledged publishes it
// had not stored): every acknowledged message is in the stream, and nothing
// else is, with publishes racing through group commit as in production.
func TestPerDomainLimitDefersOnlyTheFloodingDomain(t *testing.T) {
	cfg := testConfig(t)
	cfg.PerDomainMaxMsgs = 5
	q := openQueue(t, cfg)

	type outcome struct {
		id, domain string
		err        error
	}
	results := make(chan outcome, 40)
	var wg sync.WaitGroup
	for i := range 40 {
		domain := "flood.test"
		if i%10 == 0 { // 4 messages, under the cap
			domain = "calm.test"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := testMessage(fmt.Sprintf("%s-%d", domain, i), 512)
			m.Envelope.To = []string{"user@" + domain}
			_, err := q.Publish(ctxT(t), m)
			results <- outcome{m.ID, domain, err}
		}()
	}
	wg.Wait()
	close(results)

	accepted := map[string]bool{}
	count := map[string]int{}
	for r := range results {
		switch {
		case r.err == nil:
			accepted[r.id] = true
			count[r.domain]++
		case errors.Is(r.err, ErrQueueFull):
			if r.domain == "calm.test" {
				t.Errorf("calm.test was deferred by another domain's flood: %v", r.err)
			}
		default:
			t.Errorf("%s: unexpected error %v", r.id, r.err)
		}
	}
	if count["flood.test"] != 5 {
		t.Errorf("flood.test: %d accepted, want exactly its cap of 5", count["flood.test"])
	}
	if count["calm.test"] != 4 {
		t.Errorf("calm.test: %d accepted, want all 4", count["calm.test"])
	}
	stored := storedIDs(t, q, cfg.Stream)
	for id := range accepted {
		if stored[id] != 1 {
			t.Errorf("acknowledged %s is in the stream %d times (nats-server #4247: acked but not stored)", id, stored[id])
		}
	}
	for id := range stored {
		if !accepted[id] {
			t.Errorf("%s is in the stream but its publish was refused", id)
		}
	}
	info := streamInfo(t, q, cfg.Stream)
	if !info.Config.DiscardNewPerSubject || info.Config.MaxMsgsPerSubject != 5 {
		t.Errorf("stream config: discard_new_per_subject %v, max_msgs_per_subject %d", info.Config.DiscardNewPerSubject, info.Config.MaxMsgsPerSubject)
	}
}
