package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const alertsFile = "prometheus/levee-alerts.yaml"

// ruleFile is Prometheus's rule file format (rulefmt), decoded strictly:
// Prometheus refuses a rule file with an unknown key.
type ruleFile struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name        string            `json:"name"`
	Interval    string            `json:"interval,omitempty"`
	QueryOffset string            `json:"query_offset,omitempty"`
	Limit       int               `json:"limit,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Rules       []rule            `json:"rules"`
}

type rule struct {
	Record        string            `json:"record,omitempty"`
	Alert         string            `json:"alert,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func loadAlerts(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var rf ruleFile
	if err := decodeStrict(js, &rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return rf
}

// templateDefs are the variables Prometheus defines before expanding an
// alert's annotations (rules/alerting.go).
const templateDefs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"

// templateFuncs stands in for the functions Prometheus offers to alert
// templates, so that annotations can be parsed (not run) here.
var templateFuncs = func() template.FuncMap {
	m := template.FuncMap{}
	for _, name := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage",
		"humanizeTimestamp", "title", "toUpper", "toLower", "first", "label", "value", "query",
		"match", "reReplaceAll", "args", "safeHtml", "externalURL", "pathPrefix", "graphLink", "tableLink", "stripPort", "parseDuration"} {
		m[name] = func(...any) any { return nil }
	}
	return m
}()

func TestAlertRules(t *testing.T) {
	l := leveeFacts(t)
	rf := loadAlerts(t)
	alerts := map[string]rule{}
	groups := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group %q: empty or duplicate name", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			id := g.Name + "/" + r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("%s: a rule is either an alert or a recording rule", id)
				continue
			}
			if r.Alert != "" {
				if _, dup := alerts[r.Alert]; dup {
					t.Errorf("alert %s defined twice", r.Alert)
				}
				alerts[r.Alert] = r
			}
			if _, _, err := checkExpr(l, r.Expr); err != nil {
				t.Errorf("%s: %v\n  expr: %s", id, err, r.Expr)
			}
			for what, d := range map[string]string{"for": r.For, "keep_firing_for": r.KeepFiringFor} {
				if d == "" {
					continue
				}
				if _, err := model.ParseDuration(d); err != nil {
					t.Errorf("%s: %s: %v", id, what, err)
				}
			}
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", id, s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", id, a)
				}
			}
			for k, text := range r.Annotations {
				if _, err := template.New(k).Funcs(templateFuncs).Parse(templateDefs + text); err != nil {
					t.Errorf("%s: annotation %s: %v", id, k, err)
				}
			}
		}
	}

	// The alerts the deployment promises, each on the metric that shows
	// the condition.
	for name, metric := range map[string]string{
		"LeveeQueueFilling":         "levee_queue_fill_ratio",
		"LeveeOldestMessageTooOld":  "levee_queue_oldest_message_age_seconds",
		"LeveeDeadLettersGrowing":   "levee_queue_dead_letters",
		"LeveeSMTPDeferralRateHigh": "levee_smtp_messages_total",
		"LeveeStoreUnavailable":     "levee_worker_store_available",
		"LeveeQueueUnavailable":     "levee_queue_publish_duration_seconds_count",
		"LeveePublishSlow":          "levee_queue_publish_duration_seconds_bucket",
		"LeveeQueueDown":            "levee_queue_up",
		"LeveeWorkersNotDraining":   "levee_worker_deliveries_total",
		"LeveeWorkerScaleMismatch":  "levee_worker_concurrency",
		"LeveeMetricsAbsent":        "levee_queue_messages",
	} {
		r, ok := alerts[name]
		if !ok {
			t.Errorf("alert %s missing", name)
			continue
		}
		if _, names, _ := checkExpr(l, r.Expr); !slices.Contains(names, metric) {
			t.Errorf("alert %s does not read %s (reads %v)", name, metric, names)
		}
	}
	if r, ok := alerts["LeveeQueueFilling"]; ok && (!strings.Contains(r.Expr, "> 0.8") || r.For != "5m") {
		t.Errorf("LeveeQueueFilling: want fill ratio > 0.8 for 5m, got %q for %q", r.Expr, r.For)
	}
}

// TestScaleMismatchAlertUsesKEDAsThreshold keeps the alert's idea of how
// many workers the backlog needs equal to the ScaledObject's.
func TestScaleMismatchAlertUsesKEDAsThreshold(t *testing.T) {
	l := leveeFacts(t)
	var expr string
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "LeveeWorkerScaleMismatch" {
				expr = r.Expr
			}
		}
	}
	if expr == "" {
		t.Fatal("no LeveeWorkerScaleMismatch alert")
	}
	e, _, err := checkExpr(l, expr)
	if err != nil {
		t.Fatal(err)
	}
	// The divisor of the backlog: (pending + ack pending) / lagThreshold.
	var divisors []float64
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		b, ok := node.(*parser.BinaryExpr)
		if !ok || b.Op != parser.DIV {
			return nil
		}
		if n, ok := b.RHS.(*parser.NumberLiteral); ok && strings.Contains(b.LHS.String(), "levee_queue_consumer_pending") {
			divisors = append(divisors, n.Val)
		}
		return nil
	})
	_, triggers := workerTriggers(t, renderKustomization(t))
	lag := poolLagThreshold(t, triggers)
	if len(divisors) != 1 || divisors[0] != lag {
		t.Errorf("LeveeWorkerScaleMismatch divides the backlog by %v, but the ScaledObject's lagThreshold over the partitions is %v", divisors, lag)
	}
}
