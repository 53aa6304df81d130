package app_test

import (
	"os"
	"strings"
	"testing"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// The README is the newcomer's reference: these tests keep its config table
// and metrics list true to the code.

const readmePath = "../README.md"

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestREADMEConfigTableIsTheKeyTable: the README's configuration table is
// the one the config's keys render (internal/config), row for row, so it
// cannot drift from what Levee reads. LEVEE_UPDATE_README=1 rewrites it.
func TestREADMEConfigTableIsTheKeyTable(t *testing.T) {
	doc := readme(t)
	cfg := app.DefaultConfig()
	want := config.Markdown(&cfg)
	start := strings.Index(doc, "| key (YAML) |")
	end := strings.Index(doc, "| | `--config` |")
	if start < 0 || end < start {
		t.Fatal("README: no configuration table (from \"| key (YAML) |\" to the --config row)")
	}
	if got := doc[start:end]; got != want {
		if os.Getenv("LEVEE_UPDATE_README") == "1" {
			if err := os.WriteFile(readmePath, []byte(doc[:start]+want+doc[end:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README config table differs from the keys (LEVEE_UPDATE_README=1 go test -run TestREADMEConfigTable ./app/ rewrites it):\n--- README\n%s\n--- keys\n%s", got, want)
	}
}

func TestREADMEListsEveryMetric(t *testing.T) {
	cfg := apptest.Config(t)
	l := apptest.Start(t, cfg)
	// Touch the labelled metrics so that they appear in Gather.
	if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(1, 100)); err != nil {
		t.Fatal(apptest.ReplyCode(err))
	}
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc := readme(t)
	seen := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "levee_") {
			continue
		}
		seen++
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("README metrics list lacks %s", name)
		}
	}
	if seen < 10 {
		t.Fatalf("only %d levee_ metrics gathered", seen)
	}
	var _ prometheus.Gatherer = l.Registry
}

// TestMetricsShowSchedulerLatency: /metrics has how long goroutines wait
// for a CPU, next to the Go collector's defaults.
func TestMetricsShowSchedulerLatency(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"go_sched_latencies_seconds": false, "go_goroutines": false, "go_memstats_heap_alloc_bytes": false}
	for _, mf := range mfs {
		if _, ok := want[mf.GetName()]; ok {
			want[mf.GetName()] = true
			if mf.GetName() == "go_sched_latencies_seconds" && mf.GetMetric()[0].GetHistogram().GetSampleCount() == 0 {
				t.Error("go_sched_latencies_seconds has no samples")
			}
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
