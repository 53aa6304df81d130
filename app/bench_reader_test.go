package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store/postgres/pgtest"
	"github.com/levee-mail/levee/worker"
)

// BenchmarkReaderDuringDrain is the Help Scout question: while workers drain
// a backlog into the store, what does the web app reading the same store
// see? A synthetic reader pages a mailbox through the HTTP API, first with
// the store idle, then during a drain at a fixed concurrency of 16 loops
// (autoscale=off), then during a drain led by the autoscaler with its
// latency budget (autoscale=on). It reports the drain rate and the reader's
// p99 in both phases. Run it with -benchtime=1x; the backlog is 4 KiB
// messages.
func BenchmarkReaderDuringDrain(b *testing.B) {
	backlog := 4000
	if v := os.Getenv("LEVEE_BENCH_BACKLOG"); v != "" {
		fmt.Sscan(v, &backlog)
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, autoscale := range []bool{false, true} {
			b.Run(fmt.Sprintf("store=%s/autoscale=%t", backend, autoscale), func(b *testing.B) {
				for range b.N {
					benchReaderDuringDrain(b, backend, autoscale, backlog)
				}
			})
		}
	}
}

func benchReaderDuringDrain(b *testing.B, backend string, autoscale bool, backlog int) {
	b.StopTimer()
	cfg := benchConfig(b)
	cfg.Worker.Concurrency = 0
	cfg.Queue.SyncAlways = false // filling the queue is not what is measured
	if backend == "postgres" {
		cfg.Store = pgtest.NewDatabase(b)
	}
	l := startBenchLevee(b, cfg)
	ctx := context.Background()
	// Some mail to read before the drain starts.
	publishN(b, l, 0, 200)
	l.Worker.SetConcurrency(2)
	for {
		if n, _, err := l.Queue.Backlog(ctx); err == nil && n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.Worker.SetConcurrency(0)
	publishN(b, l, 200, backlog)

	url := "http://" + l.HTTP.Addr().String() + "/api/v1/mailboxes/rcpt@example.test/messages?limit=50"
	idle := readFor(b, url, 2*time.Second, nil)

	stop := make(chan struct{})
	var during []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); during = readFor(b, url, time.Hour, stop) }()

	b.StartTimer()
	start := time.Now()
	var cancel context.CancelFunc = func() {}
	if autoscale {
		as, err := worker.NewAutoscaler(worker.AutoscaleConfig{Enabled: true, Min: 1, Max: 16,
			LatencyBudget: 25 * time.Millisecond}.WithDefaults(), l.Worker, worker.AutoscalerDeps{Backlog: l.Queue, Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		l.Worker.SetConcurrency(1)
		actx, c := context.WithCancel(ctx)
		cancel = c
		go as.Run(actx)
	} else {
		l.Worker.SetConcurrency(16)
	}
	for {
		if n, _, err := l.Queue.Backlog(ctx); err == nil && n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(backlog-200)/elapsed.Seconds(), "drain_msgs/s")
	b.ReportMetric(p99ms(idle), "reader_idle_p99_ms")
	b.ReportMetric(p99ms(during), "reader_drain_p99_ms")
}

func publishN(b *testing.B, l *app.Levee, from, to int) {
	b.Helper()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + g; i < to; i += 8 {
				body := apptest.Message(i, 4096)
				env := mail.Envelope{From: "s@bench.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
				m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
				if _, err := l.Queue.Publish(context.Background(), m); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// readFor pages the mailbox like a web app (one reader, back to back) for d
// or until stop closes, and returns each request's latency.
func readFor(b *testing.B, url string, d time.Duration, stop <-chan struct{}) []time.Duration {
	var lat []time.Duration
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		select {
		case <-stop:
			return lat
		default:
		}
		t0 := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Error(err)
			return lat
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(t0))
		time.Sleep(5 * time.Millisecond)
	}
	return lat
}

func p99ms(lat []time.Duration) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[(len(s)*99)/100]) / float64(time.Millisecond)
}
