package loadtest

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

func secs(f float64) string { return fmtDur(time.Duration(f * float64(time.Second))) }

func quant(q Quantiles) string {
	if q.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", secs(q.P50), secs(q.P90), secs(q.P99), secs(q.Max))
}

// WriteSummary writes the end-of-run table: the three answers first (did
// it keep up, what did senders see, was anything lost or stored twice),
// then the details.
func (res *Result) WriteSummary(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, a...)) }
	c := res.Counts
	fmt.Fprintf(tw, "levee loadtest %s against %s\n", res.RunID, res.Target)
	row("schedule", "%s", res.Schedule)
	row("messages", "%s", res.Source)
	row("sessions", "%d (pipelining %s, STARTTLS %s)", res.Connections, yesNo(res.Pipelining), yesNo(res.StartTLS))
	if res.Interrupted {
		row("interrupted", "yes: the load was stopped early")
	}
	fmt.Fprintln(tw, "Did it keep up?")
	row("offered", "%d in %s (%.1f/s)", c.Offered, secs(res.LoadDuration), res.OfferedRate)
	row("accepted", "%d in %s (%.1f/s)", c.Accepted, secs(res.SendDuration), res.AcceptedRate)
	if a := res.Audit; a != nil && a.Stored > 0 {
		row("caught up", "%s after the last arrival (last message stored)", secs(a.CatchUp))
	}
	if len(res.Queue) > 0 {
		var peak QueuePoint
		for _, q := range res.Queue {
			if q.Messages >= peak.Messages {
				peak = q
			}
		}
		row("queue peak", "%d messages (fill %.0f%%) at %s", peak.Messages, peak.Fill*100, secs(peak.T))
	}
	if sc := res.Server; sc != nil {
		row("server cost", "%.3f ms CPU a message accepted (%.1f s in all, drain and audit included); peak RSS %.0f MB",
			sc.CPUPerMessage*1000, sc.CPUSeconds, sc.PeakRSSBytes/1e6)
	}
	fmt.Fprintln(tw, "What did senders see?")
	row("deferred (4xx)", "%d replies, %d retries", c.Deferred, c.Retries)
	row("failed (5xx)", "%d", c.Failed)
	if c.Expired+c.Unsent > 0 {
		row("given up", "%d expired after retrying, %d unsent when the run ended", c.Expired, c.Unsent)
	}
	if c.ConnErrors+c.NetErrors > 0 {
		row("connection errors", "%d failed connects, %d broken sessions", c.ConnErrors, c.NetErrors)
	}
	if c.RcptRejected > 0 {
		row("recipients refused", "%d (5xx, message delivered to the others)", c.RcptRejected)
	}
	if len(res.Replies) > 0 {
		var parts []string
		for i, r := range res.Replies {
			if i == 6 {
				parts = append(parts, "...")
				break
			}
			parts = append(parts, fmt.Sprintf("%s ×%d", r.Reply, r.Count))
		}
		row("replies", "%s", strings.Join(parts, ", "))
	}
	row("arrival -> 250", "%s", quant(res.SMTPLatency))
	row("transaction", "%s", quant(res.TransactionLatency))
	fmt.Fprintln(tw, "Was anything lost or stored twice?")
	if a := res.Audit; a != nil {
		complete := "complete"
		if !a.Complete {
			complete = "INCOMPLETE: deadline passed"
		}
		if a.Error != "" {
			complete = "FAILED: " + a.Error
		}
		row("audit", "%d accepted, %d stored (%s, %s)", a.Accepted, a.Stored, complete, secs(a.Duration))
		row("lost", "%d", a.Lost)
		if a.Unchecked > 0 {
			row("unchecked", "%d accepted, not looked up: the API did not answer", a.Unchecked)
		}
		row("duplicated", "%d (%d extra copies)", a.Duplicated, a.ExtraCopies)
		row("late", "%d stored more than %s after their 250", a.Late, secs(a.LateAfter))
		if a.StoredDespiteRefusal > 0 {
			row("stored, not 250", "%d stored although the sender saw no 250", a.StoredDespiteRefusal)
		}
		row("250 -> stored", "%s", quant(a.EndToEnd))
	} else {
		row("audit", "not run (it needs --api; --no-audit skips it)")
	}
	if rd := res.Readers; rd != nil {
		fmt.Fprintln(tw, "Reader probe (mailbox API)")
		row("requests", "%d by %d readers, %d errors", rd.Requests, rd.Readers, rd.Errors)
		for _, p := range rd.Phases {
			row(p.Phase, "%s", quant(p.Latency))
		}
	}
	if d := res.Diagnosis; d != nil {
		fmt.Fprintln(tw, "Where did it bind?")
		row("bottleneck", "%s: %s", d.Bottleneck, d.Why)
		row("senders", "%.0f%% of the offered mail accepted during the load; at most %d messages waiting at the senders", d.AcceptedShare*100, d.SenderBacklogPeak)
		if d.ReaderDuringOverBefore > 0 {
			drain := fmt.Sprintf("no drain after the load to judge (caught up within %s)", drainJudged)
			if d.ReaderDrainOverBefore > 0 {
				drain = fmt.Sprintf("%.2fx while draining", d.ReaderDrainOverBefore)
			}
			row("readers", "p99 %.2fx before during the load, %.2fx after it, %s", d.ReaderDuringOverBefore, d.ReaderAfterOverBefore, drain)
		}
	}
	if len(res.Checks) > 0 {
		fmt.Fprintln(tw, "Thresholds")
		for _, ch := range res.Checks {
			verdict := "ok"
			if !ch.OK {
				verdict = "FAIL"
			}
			row(ch.Name, "%s (limit %s) %s", ch.Value, ch.Limit, verdict)
		}
		if res.Pass {
			fmt.Fprintln(tw, "PASS")
		} else {
			fmt.Fprintln(tw, "FAIL")
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
