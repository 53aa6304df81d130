package deploy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// leveeRoot is the main module, whose sources are the ground truth for
// metric names, configuration keys and queue names. The deployment files
// are checked against what the code does, not against a copy of it.
const leveeRoot = ".."

// levee is what the deployment files may refer to, read from Levee's
// non-test Go sources.
type levee struct {
	// metrics maps each registered levee_* metric to its type: counter,
	// gauge, histogram or summary.
	metrics map[string]string
	// envVars are the LEVEE_* variables Levee reads: the environment column
	// of the README's configuration table, which the main module's tests
	// keep equal to Levee's one table of keys (internal/config).
	envVars map[string]bool
	// literals are every Go string literal, for checking label values.
	literals map[string]bool
	// stream and durable are the queue's default stream and consumer.
	stream, durable string
}

var (
	// Name: "levee_..." in a client_golang Opts literal.
	metricNameRE = regexp.MustCompile(`Name:\s*"(levee_[a-z0-9_]+)"`)
	// The Opts type that precedes a Name gives the metric's type.
	metricOptsRE = regexp.MustCompile(`(Counter|Gauge|Histogram|Summary)Opts\s*\{`)
	// | `queue.max_msgs` | `--queue-max-msgs` | `LEVEE_QUEUE_MAX_MSGS` | in the README.
	configRowRE  = regexp.MustCompile("(?m)^\\| `[a-z0-9_.]+` \\| `--[a-z0-9-]+` \\| `(LEVEE_[A-Z0-9_]+)` \\|")
	stringLitRE  = regexp.MustCompile(`"((?:[^"\\\n]|\\.)*)"`)
	streamRE     = regexp.MustCompile(`DefaultStream\s*=\s*"([^"]+)"`)
	durableRE    = regexp.MustCompile(`DefaultDurable\s*=\s*"([^"]+)"`)
	loadLeveeRun = sync.OnceValues(loadLevee)
)

func leveeFacts(t *testing.T) *levee {
	t.Helper()
	l, err := loadLeveeRun()
	if err != nil {
		t.Fatalf("reading Levee's sources in %s: %v", leveeRoot, err)
	}
	return l
}

func loadLevee() (*levee, error) {
	l := &levee{metrics: map[string]string{}, envVars: map[string]bool{"LEVEE_CONFIG": true}, literals: map[string]bool{}}
	err := filepath.WalkDir(leveeRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			// This module, and what Go itself ignores.
			if path != leveeRoot && (name == "deploy" || name == "testdata" || name == "vendor" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		l.scan(filepath.ToSlash(path), string(src))
		return nil
	})
	if err != nil {
		return nil, err
	}
	readme, err := os.ReadFile(filepath.Join(leveeRoot, "README.md"))
	if err != nil {
		return nil, err
	}
	for _, m := range configRowRE.FindAllStringSubmatch(string(readme), -1) {
		l.envVars[m[1]] = true
	}
	// A guard against this scanner going blind when the code changes shape:
	// Levee registers a couple of dozen metrics and as many options.
	switch {
	case len(l.metrics) < 10:
		return nil, fmt.Errorf("found only %d levee_* metrics (%v): has the registration code changed shape?", len(l.metrics), sortedKeys(l.metrics))
	case len(l.envVars) < 10:
		return nil, fmt.Errorf("found only %d configuration keys: has the README's configuration table changed shape?", len(l.envVars))
	case l.stream == "" || l.durable == "":
		return nil, fmt.Errorf("queue/config.go: DefaultStream or DefaultDurable not found")
	}
	return l, nil
}

func (l *levee) scan(path, src string) {
	for _, m := range metricNameRE.FindAllStringSubmatchIndex(src, -1) {
		name := src[m[2]:m[3]]
		kind := ""
		if opts := metricOptsRE.FindAllStringSubmatch(src[:m[0]], -1); len(opts) > 0 {
			kind = strings.ToLower(opts[len(opts)-1][1])
		}
		l.metrics[name] = kind
	}
	if strings.HasSuffix(path, "queue/config.go") {
		if m := streamRE.FindStringSubmatch(src); m != nil {
			l.stream = m[1]
		}
		if m := durableRE.FindStringSubmatch(src); m != nil {
			l.durable = m[1]
		}
	}
	for _, m := range stringLitRE.FindAllStringSubmatch(src, -1) {
		if s, err := strconv.Unquote(`"` + m[1] + `"`); err == nil {
			l.literals[s] = true
		}
	}
}

// knownMetric reports whether name is a series Levee exports: a registered
// metric, or a histogram's _bucket/_sum/_count (a summary's _sum/_count).
func (l *levee) knownMetric(name string) bool {
	if _, ok := l.metrics[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch l.metrics[base] {
		case "histogram":
			return true
		case "summary":
			return suffix != "_bucket"
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestLeveeSourcesAreReadable(t *testing.T) {
	l := leveeFacts(t)
	// Spot checks that the scanner reads names and types correctly, on
	// metrics the README documents.
	for name, kind := range map[string]string{
		"levee_queue_fill_ratio":               "gauge",
		"levee_smtp_messages_total":            "counter",
		"levee_smtp_data_duration_seconds":     "histogram",
		"levee_queue_publish_duration_seconds": "histogram",
	} {
		if got, ok := l.metrics[name]; !ok || got != kind {
			t.Errorf("metric %s: got type %q (found: %t), want %q", name, got, ok, kind)
		}
	}
	if !l.knownMetric("levee_smtp_data_duration_seconds_bucket") {
		t.Error("a histogram's _bucket series is not recognised")
	}
	if l.knownMetric("levee_queue_fill_ratio_bucket") || l.knownMetric("levee_no_such_metric") {
		t.Error("an unknown series is accepted")
	}
	for _, v := range []string{"LEVEE_QUEUE_NATS_URL", "LEVEE_SHUTDOWN_TIMEOUT", "LEVEE_SMTP_DOMAINS", "LEVEE_WORKER_CONCURRENCY"} {
		if !l.envVars[v] {
			t.Errorf("configuration variable %s not found in the README's configuration table", v)
		}
	}
}
