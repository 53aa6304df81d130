package worker

import (
	"sync/atomic"

	"github.com/levee-mail/levee/queue"
)

// batchSizer picks how many messages a loop fetches: worker.batch_size, or
// fewer when the messages are large, so that a batch holds about
// worker.batch_max_bytes. A loop holds its whole batch while it parses and
// stores it (the raw bytes, the parse, the driver's copy), so 32 messages of
// 9 MiB were ~300 MiB a loop, times the loops. The size that counts is the
// largest message of the last batch any loop fetched: it follows the mail
// at once in both directions. Before the first batch nothing is known and
// a full batch is fetched.
type batchSizer struct {
	max      int
	maxBytes int64
	largest  atomic.Int64 // bytes of the largest message in the last batch
}

// count is the number of messages to fetch next.
func (b *batchSizer) count() int {
	largest := b.largest.Load()
	if largest <= 0 {
		return b.max
	}
	return int(min(max(b.maxBytes/largest, 1), int64(b.max)))
}

// observe notes the sizes of a fetched batch.
func (b *batchSizer) observe(ds []queue.Delivery) {
	var largest int64
	for _, d := range ds {
		if m, err := d.Message(); err == nil && m != nil {
			largest = max(largest, int64(len(m.Raw)))
		}
	}
	if largest > 0 {
		b.largest.Store(largest)
	}
}
