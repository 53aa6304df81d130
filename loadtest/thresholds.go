package loadtest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Thresholds are the gates a run must pass (for CI and releases). A
// negative count or a zero duration is not checked.
type Thresholds struct {
	MaxLost       int64
	MaxDuplicates int64
	MaxFailed     int64
	MaxLate       int64
	// MaxReaderP99 bounds the worst per-phase reader p99.
	MaxReaderP99 time.Duration
	// MaxSMTPP99 bounds arrival -> 250 at the 99th percentile.
	MaxSMTPP99 time.Duration
}

// NoThresholds checks nothing.
var NoThresholds = Thresholds{MaxLost: -1, MaxDuplicates: -1, MaxFailed: -1, MaxLate: -1}

// NeedsAudit tells whether a threshold reads the audit.
func (t Thresholds) NeedsAudit() bool {
	return t.MaxLost >= 0 || t.MaxDuplicates >= 0 || t.MaxLate >= 0
}

// CheckResult is one threshold's verdict.
type CheckResult struct {
	Name  string `json:"name"`
	Limit string `json:"limit"`
	Value string `json:"value"`
	OK    bool   `json:"ok"`
}

// Check evaluates the thresholds against res, records the verdicts in
// res.Checks and res.Pass, and returns whether every one passed. A
// threshold whose figure the run could not measure (no audit, no reader
// probe) fails: a gate that cannot see must not open.
func (t Thresholds) Check(res *Result) bool {
	res.Checks = nil
	count := func(name string, limit int64, value int64, have bool) {
		if limit < 0 {
			return
		}
		c := CheckResult{Name: name, Limit: strconv.FormatInt(limit, 10)}
		if have {
			c.Value, c.OK = strconv.FormatInt(value, 10), value <= limit
		} else {
			c.Value = "not measured"
		}
		res.Checks = append(res.Checks, c)
	}
	a := res.Audit
	count("lost", t.MaxLost, val(a, func(a *AuditResult) int64 { return a.Lost }), a != nil)
	count("duplicated", t.MaxDuplicates, val(a, func(a *AuditResult) int64 { return a.Duplicated }), a != nil)
	count("late", t.MaxLate, val(a, func(a *AuditResult) int64 { return a.Late }), a != nil)
	count("failed", t.MaxFailed, res.Counts.Failed, true)
	if t.MaxReaderP99 > 0 {
		c := CheckResult{Name: "reader p99", Limit: t.MaxReaderP99.String(), Value: "not measured"}
		if res.Readers != nil && res.Readers.Requests > 0 {
			worst, phase := res.Readers.worstP99()
			c.Value, c.OK = fmt.Sprintf("%s (%s)", fmtDur(worst), phase), worst <= t.MaxReaderP99
		}
		res.Checks = append(res.Checks, c)
	}
	if t.MaxSMTPP99 > 0 {
		p99 := time.Duration(res.SMTPLatency.P99 * float64(time.Second))
		c := CheckResult{Name: "smtp p99", Limit: t.MaxSMTPP99.String(), Value: "not measured"}
		if res.SMTPLatency.Count > 0 {
			c.Value, c.OK = fmtDur(p99), p99 <= t.MaxSMTPP99
		}
		res.Checks = append(res.Checks, c)
	}
	if a != nil && a.Error != "" {
		// Whatever the thresholds: an audit that could not see fails the run.
		res.Checks = append(res.Checks, CheckResult{Name: "audit", Limit: "complete", Value: "failed: " + a.Error})
	}
	res.Pass = true
	for _, c := range res.Checks {
		res.Pass = res.Pass && c.OK
	}
	return res.Pass
}

func val(a *AuditResult, f func(*AuditResult) int64) int64 {
	if a == nil {
		return 0
	}
	return f(a)
}

// MarshalJSON writes a phase's bounds in seconds, like every other time
// in the result.
func (p Phase) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name  string  `json:"name"`
		Start float64 `json:"start"`
		End   float64 `json:"end"`
	}{p.Name, p.Start.Seconds(), p.End.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (p *Phase) UnmarshalJSON(b []byte) error {
	var v struct {
		Name       string
		Start, End float64
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.Name = v.Name
	p.Start = time.Duration(v.Start * float64(time.Second))
	p.End = time.Duration(v.End * float64(time.Second))
	return nil
}
