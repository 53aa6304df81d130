package worker

import (
	"sync"
	"time"
)

// tokenBucket is the ceiling on messages taken for store writes per second
// (worker.max_writes_per_second). A loop reserves a whole batch before it
// fetches and gives back what the fetch did not fill: waiting for tokens
// before the fetch means no message sits unacknowledged (its ack deadline
// running) while the loop waits. Reservations may run into debt, so loops
// are served in the order they asked and each waits for its own share.
//
// golang.org/x/time/rate cannot give back part of a reservation, which the
// refund of an unfilled batch needs; hence this small one.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64 // negative while in debt
	last   time.Time
	now    func() time.Time
}

func newTokenBucket(perSecond float64, burst int, now func() time.Time) *tokenBucket {
	if now == nil {
		now = time.Now
	}
	b := float64(max(burst, 1))
	return &tokenBucket{rate: perSecond, burst: b, tokens: b, last: now(), now: now}
}

func (b *tokenBucket) refill() {
	now := b.now()
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
	}
	b.last = now
}

// reserve takes n tokens and returns how long to wait before using them.
func (b *tokenBucket) reserve(n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// refund gives back n unused tokens.
func (b *tokenBucket) refund(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	b.tokens = min(b.burst, b.tokens+float64(n))
}
