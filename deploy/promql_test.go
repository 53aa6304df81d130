package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// promQL parses expressions with Prometheus's own parser.
var promQL = parser.NewParser(parser.Options{})

// grafanaVars are Grafana's built-in interval variables, replaced by a
// duration before parsing (they are not PromQL).
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m",
	"$__interval", "1m", "${__interval}", "1m", "$__range", "1h", "${__range}", "1h")

// labelsWithFixedValues are the labels whose values Levee's code spells
// out as string literals (result, limit, reason): a matcher on them must
// use one of those spellings, or the expression silently matches nothing.
var labelsWithFixedValues = map[string]bool{"result": true, "limit": true, "reason": true}

// alternationRE is a regex matcher that is a plain list of values.
var alternationRE = regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`)

// checkExpr parses expr and checks every selector in it against what
// Levee exports. It returns the levee_* metrics the expression reads.
func checkExpr(l *levee, expr string) (parser.Expr, []string, error) {
	e, err := promQL.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, nil, fmt.Errorf("PromQL: %w", err)
	}
	var names []string
	var problems []string
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if !strings.HasPrefix(name, "levee_") {
			return nil
		}
		names = append(names, name)
		if !l.knownMetric(name) {
			problems = append(problems, fmt.Sprintf("%s is not a metric Levee exports", name))
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if !labelsWithFixedValues[m.Name] {
				continue
			}
			var values []string
			switch m.Type {
			case labels.MatchEqual, labels.MatchNotEqual:
				values = []string{m.Value}
			case labels.MatchRegexp, labels.MatchNotRegexp:
				if alternationRE.MatchString(m.Value) {
					values = strings.Split(m.Value, "|")
				}
			}
			for _, v := range values {
				if !l.literals[v] {
					problems = append(problems, fmt.Sprintf("%s{%s=%q}: Levee never sets that value", name, m.Name, v))
				}
			}
		}
		return nil
	})
	if len(problems) > 0 {
		return e, names, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return e, names, nil
}

// TestCheckExprCatchesMistakes proves the checks used on the rules and
// the dashboard can fail.
func TestCheckExprCatchesMistakes(t *testing.T) {
	l := leveeFacts(t)
	for _, expr := range []string{
		`max(levee_queue_fill_ratio`,                                   // syntax
		`max(levee_queue_fil_ratio) > 0.8`,                             // no such metric
		`rate(levee_queue_fill_ratio_bucket[5m])`,                      // a gauge has no buckets
		`rate(levee_smtp_messages_total{result="defered"}[5m])`,        // no such label value
		`rate(levee_smtp_messages_total{result=~"deferred|oops"}[5m])`, // nor in a list
	} {
		if _, _, err := checkExpr(l, expr); err == nil {
			t.Errorf("%s: accepted", expr)
		}
	}
	for _, expr := range []string{
		`sum(rate(levee_smtp_messages_total{result="deferred"}[$__rate_interval]))`,
		`histogram_quantile(0.99, sum by (le) (rate(levee_smtp_data_duration_seconds_bucket[5m])))`,
		`up{job="levee"} == 0`,
	} {
		if _, _, err := checkExpr(l, expr); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
}
