package main

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The README is the newcomer's reference: these tests keep its config table
// and metrics list true to the code.

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestREADMEListsEveryConfigKey(t *testing.T) {
	doc := readme(t)
	for _, o := range serveOptions() {
		row := "| `" + o.key + "` | `--" + o.flag() + "` | `" + o.env() + "` |"
		if !strings.Contains(doc, row) {
			t.Errorf("README config table lacks the row for %s: %s", o.key, row)
		}
	}
}

func TestREADMEListsEveryMetric(t *testing.T) {
	cfg := testConfig(t)
	l := startLevee(t, cfg)
	// Touch the labelled metrics so that they appear in Gather.
	if err := send(l.smtpAddr, "s@client.test", []string{"rcpt@example.test"}, testMessage(1, 100)); err != nil {
		t.Fatal(replyCode(err))
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
