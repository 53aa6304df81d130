package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/store/postgres/pgtest"
)

// BenchmarkSMTPAccept measures accepted messages per second over real SMTP:
// 4 KiB messages on 20 concurrent connections, each message answered 250
// only after JetStream's acknowledgement, with the embedded server's
// SyncAlways on and off. Workers are paused so that the figure is the
// receiver's and the queue's alone; BenchmarkDrain measures the other side.
func BenchmarkSMTPAccept(b *testing.B) {
	for _, syncAlways := range []bool{true, false} {
		for _, batch := range []int{50, 1} {
			b.Run(fmt.Sprintf("sync_always=%t/max_batch=%d", syncAlways, batch), func(b *testing.B) {
				cfg := benchConfig(b)
				cfg.Queue.SyncAlways = syncAlways
				cfg.Queue.MaxBatch = batch
				cfg.Worker.Concurrency = 0
				l := startBenchLevee(b, cfg)
				body := apptest.Message(0, 4096)
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				start := time.Now()
				sendConcurrently(b, l.SMTP.Addr().String(), 20, b.N, body)
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
				b.ReportMetric(rssMiB(), "RSS_MiB")
			})
		}
	}
}

// BenchmarkDrain measures how fast workers move a backlog of 4 KiB messages
// from the queue into SQLite and into PostgreSQL (a fresh database on the
// server pgtest finds), to compare with BenchmarkSMTPAccept: drain must keep
// up with accept. make bench runs both on 20,000 messages: a drain of 3,000
// lasted about a second and measured mostly the loops' start (SQLite
// 2,279-2,373 msgs/s, against 4,682-5,023 over 20,000 in the same session).
func BenchmarkDrain(b *testing.B) {
	for _, c := range []struct {
		store string
		batch int
	}{{"sqlite", 32}, {"sqlite", 1}, {"postgres", 32}} {
		b.Run(fmt.Sprintf("store=%s/worker_batch=%d", c.store, c.batch), func(b *testing.B) {
			batch := c.batch
			cfg := benchConfig(b)
			if c.store == "postgres" {
				cfg.Store = pgtest.NewDatabase(b)
			}
			cfg.Worker.Concurrency = 0
			cfg.Worker.BatchSize = batch
			cfg.Queue.SyncAlways = false // filling the queue is not what is measured
			l := startBenchLevee(b, cfg)
			body := apptest.Message(0, 4096)
			sendConcurrently(b, l.SMTP.Addr().String(), 20, b.N, body)
			b.ResetTimer()
			start := time.Now()
			l.Worker.SetConcurrency(4)
			for {
				if n, _, err := l.Queue.Backlog(context.Background()); err == nil && n == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.ReportMetric(rssMiB(), "RSS_MiB")
		})
	}
}

func benchConfig(b *testing.B) app.Config {
	cfg := app.DefaultConfig()
	cfg.DataDir = b.TempDir()
	cfg.SMTP.Addr = "127.0.0.1:0"
	cfg.SMTP.Domains = []string{"example.test"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.LogLevel = "error"
	return cfg
}

func startBenchLevee(b *testing.B, cfg app.Config) *app.Levee {
	b.Helper()
	l, err := app.Start(context.Background(), cfg, app.RoleAll, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = l.Shutdown(ctx)
	})
	return l
}

// sendConcurrently sends n messages over conns persistent SMTP sessions,
// each message with a distinct envelope so that none is a duplicate.
func sendConcurrently(b *testing.B, addr string, conns, n int, body []byte) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(addr)
			if err != nil {
				failed.Store(err)
				return
			}
			defer c.Close()
			if err := c.Hello("bench.test"); err != nil {
				failed.Store(err)
				return
			}
			for {
				i := next.Add(1)
				if i > int64(n) {
					_ = c.Quit()
					return
				}
				from := "s" + strconv.FormatInt(i, 10) + "@bench.test"
				if err := apptest.SendOn(c, from, []string{"rcpt@example.test"}, body); err != nil {
					failed.Store(fmt.Errorf("message %d: %s", i, apptest.ReplyCode(err)))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// rssMiB reads this process's resident set size from /proc (Linux).
func rssMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
