package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/levee-mail/levee/loadtest"
	"github.com/levee-mail/levee/queue"
)

// BenchmarkPipeline measures Levee whole, as a user runs it: `levee serve`
// in a process of its own on its embedded defaults (SyncAlways, the default
// partitions, SQLite), b.N messages of 4 KiB offered at once to 20 SMTP
// sessions, each message on a new connection (as compare.sh's default),
// every one audited stored exactly once. It reports the accept rate, the
// rate at which mail reached the mailboxes, and what the server process
// spent: its own CPU time (process_cpu_seconds_total) per message, from
// SMTP to mailbox, and its peak RSS. The client runs in this process, so
// its cost is not counted.
//
//	go test -run '^$' -bench Pipeline -benchtime 5000x ./cmd/levee/
func BenchmarkPipeline(b *testing.B) {
	for _, perConn := range []int{1, 0} {
		b.Run(fmt.Sprintf("messages_per_connection=%d", perConn), func(b *testing.B) {
			p := startProcess(b, "serve", "--data-dir", b.TempDir(), "--smtp-addr", "127.0.0.1:0",
				"--http-addr", "127.0.0.1:0", "--domains", "example.test")
			b.Cleanup(func() { _ = p.stop(time.Minute) })
			res := runPipelineLoad(b, p, b.N, perConn, true)
			c, a, sc := res.Counts, res.Audit, res.Server
			if c.Accepted != int64(b.N) || a == nil || !a.Complete || a.Lost != 0 || a.Duplicated != 0 {
				b.Fatalf("counts %+v, audit %+v: want all %d accepted and stored once", c, a, b.N)
			}
			if sc == nil {
				b.Fatal("no server cost: /metrics had no process_cpu_seconds_total")
			}
			b.ReportMetric(res.AcceptedRate, "accepted/s")
			b.ReportMetric(float64(a.Stored)/(res.LoadDuration+a.CatchUp), "stored/s")
			b.ReportMetric(sc.CPUPerMessage*1000, "cpu_ms/msg")
			b.ReportMetric(sc.PeakRSSBytes/1e6, "peak_RSS_MB")
		})
	}
}

// BenchmarkReceiver measures the receiver alone, as it runs on a node of its
// own: `levee smtpd` in a process of its own, publishing to a JetStream
// server (SyncAlways) that runs in this test process, b.N messages of 4 KiB
// offered at once to 20 SMTP sessions on new connections. It reports the
// accept rate and what the receiver process spent: CPU per message and peak
// RSS (the server's cost is not in them). Every message must be accepted
// and in the stream once.
//
//	go test -run '^$' -bench Receiver -benchtime 5000x ./cmd/levee/
func BenchmarkReceiver(b *testing.B) {
	js := jetStream(b)
	p := startProcess(b, "smtpd", "--data-dir", b.TempDir(), "--nats-url", js.ClientURL(),
		"--smtp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--domains", "example.test")
	b.Cleanup(func() { _ = p.stop(time.Minute) })
	// The receiver serves no queue API for the load tester to scrape: its
	// cost is read from /proc.
	pid := p.cmd.Process.Pid
	cpu0 := processCPU(b, pid)
	res := runPipelineLoad(b, p, b.N, 1, false)
	cpu := processCPU(b, pid) - cpu0
	if res.Counts.Accepted != int64(b.N) {
		b.Fatalf("counts %+v: want all %d accepted", res.Counts, b.N)
	}
	cfg := queue.DefaultConfig()
	cfg.URL = js.ClientURL()
	q, err := queue.Open(context.Background(), cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close(context.Background())
	if n, _, err := q.Backlog(context.Background()); err != nil || n != uint64(b.N) {
		b.Fatalf("the queue holds %d messages (%v), want the %d accepted", n, err, b.N)
	}
	b.ReportMetric(res.AcceptedRate, "accepted/s")
	b.ReportMetric(cpu.Seconds()*1000/float64(b.N), "cpu_ms/msg")
	b.ReportMetric(float64(peakRSS(b, pid))/1e6, "peak_RSS_MB")
}

// runPipelineLoad offers n messages at once to 20 sessions of p, audited
// through p's API when audit is set.
func runPipelineLoad(b *testing.B, p *process, n, perConn int, audit bool) *loadtest.Result {
	b.Helper()
	// Everything arrives in the first tenth of a second: the 20 sessions
	// send as fast as Levee answers.
	sched, err := loadtest.Constant(float64(n)*10, 100*time.Millisecond, loadtest.ArrivalOptions{})
	if err != nil {
		b.Fatal(err)
	}
	sizes, err := loadtest.ParseSizeDist("4KiB")
	if err != nil {
		b.Fatal(err)
	}
	runID := loadtest.NewRunID()
	src, err := loadtest.NewGenerator(sizes, 0, 1, runID)
	if err != nil {
		b.Fatal(err)
	}
	cfg := loadtest.Config{
		Target: p.SMTPAddr, API: "http://" + p.httpAddr, Schedule: sched, Source: src, RunID: runID,
		To: "rcpt{n}@example.test", Connections: 20, MessagesPerConnection: perConn,
		ScrapeEvery: 200 * time.Millisecond, Audit: loadtest.AuditConfig{Disabled: !audit},
	}
	b.ResetTimer()
	res, err := loadtest.Run(context.Background(), cfg)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	return res
}
