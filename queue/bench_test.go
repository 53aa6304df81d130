package queue

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// histogram returns a histogram's sample count and sum from reg.
func histogram(t testing.TB, reg *prometheus.Registry, name string) (count, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			count += float64(m.GetHistogram().GetSampleCount())
			sum += m.GetHistogram().GetSampleSum()
		}
	}
	return count, sum
}

// BenchmarkPublish measures acknowledged (and, but for sync=interval,
// durable) publishes per second from 20 concurrent publishers (as 20 SMTP
// sessions would) of 4 KiB messages: Levee's group sync (one syncfs for
// every publish waiting), the server's fsync per write with and without
// atomic batches sharing it, and the server's default 2-minute sync
// interval (not durable: the ceiling).
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct {
		name       string
		syncAlways bool
		groupSync  bool
		maxBatch   int
		publishers int
	}{
		{"sync=group", true, true, 50, 20},
		{"sync=always/batch=50", true, false, 50, 20},
		{"sync=always/batch=1", true, false, 1, 20},
		{"sync=interval/batch=50", false, false, 50, 20},
		{"sync=interval/batch=1", false, false, 1, 20},
		// A surge: ten times the sessions.
		{"sync=group/publishers=200", true, true, 50, 200},
		{"sync=always/batch=50/publishers=200", true, false, 50, 200},
		{"sync=always/batch=1/publishers=200", true, false, 1, 200},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.DataDir = b.TempDir()
			cfg.SyncAlways = bc.syncAlways
			cfg.GroupSync = bc.groupSync
			cfg.MaxBatch = bc.maxBatch
			if v, err := strconv.Atoi(os.Getenv("BENCH_MIN_BATCH")); err == nil {
				cfg.MinBatch = v
			}
			// Four partitions, as docs/design.md's group-commit figures
			// were measured; BENCH_PARTITIONS=1 for the default.
			cfg.Partitions = 4
			if v, err := strconv.Atoi(os.Getenv("BENCH_PARTITIONS")); err == nil {
				cfg.Partitions = v
			}
			cfg.MaxBytes = 4 << 30
			reg := prometheus.NewRegistry()
			q := openQueueReg(b, cfg, reg)
			publishers := bc.publishers
			proto := testMessage("proto", 4<<10)
			var next atomic.Int64
			var failed atomic.Int64
			var wg sync.WaitGroup
			ctx := context.Background()
			b.SetBytes(int64(len(proto.Raw)))
			b.ResetTimer()
			start := time.Now()
			for g := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						m := *proto
						m.ID = fmt.Sprintf("bench-%d-%d", g, i)
						if _, err := q.Publish(ctx, &m); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d publishes failed", n)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			if os.Getenv("BENCH_DEBUG") != "" {
				mfs, _ := reg.Gather()
				for _, mf := range mfs {
					if mf.GetName() == "levee_queue_publish_batch_size" {
						for _, bk := range mf.GetMetric()[0].GetHistogram().GetBucket() {
							fmt.Fprintf(os.Stderr, "N=%d <= %v: %d\n", b.N, bk.GetUpperBound(), bk.GetCumulativeCount())
						}
					}
				}
			}
			count, sum := histogram(b, reg, "levee_queue_publish_batch_size")
			if count > 0 {
				b.ReportMetric(sum/count, "msgs/commit")
			}
			b.ReportMetric(testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues("incomplete"))+
				testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues("unavailable"))+
				testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues("other")), "fallbacks")
		})
	}
}
