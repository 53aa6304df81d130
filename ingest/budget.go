package ingest

import "sync/atomic"

// memoryBudget bounds the bytes of message bodies that all sessions hold at
// once, from the first byte of DATA until the queue has answered the
// publish. Without it memory grew with the number of senders: 40 concurrent
// 9 MiB messages peaked at 1.5 GB (issue 12), and at the defaults (1,000
// connections of 10 MiB) the bound was tens of GB. A session takes its
// buffer from the budget as it grows; when the budget is spent the
// message is read to its end, dropped and answered 452 4.3.1, and new
// transactions are refused at MAIL until there is room again.
type memoryBudget struct {
	limit int64
	used  atomic.Int64
}

// minRoomAtMail is the room MAIL wants without SIZE=: a small message's.
const minRoomAtMail = 64 << 10

func newMemoryBudget(limit int64) *memoryBudget { return &memoryBudget{limit: limit} }

// take reserves n bytes, or reports false and reserves nothing.
func (b *memoryBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (b *memoryBudget) give(n int64) { b.used.Add(-n) }

// room is what is left of the budget.
func (b *memoryBudget) room() int64 { return b.limit - b.used.Load() }

// inFlight is what sessions hold now.
func (b *memoryBudget) inFlight() int64 { return b.used.Load() }
