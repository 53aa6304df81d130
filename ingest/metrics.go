package ingest

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values. No addresses, hosts or message ids ever become labels.
const (
	resultAccepted  = "accepted"
	resultDuplicate = "duplicate"
	resultRejected  = "rejected"
	resultDeferred  = "deferred"
	// resultRecipientLimit: 452 4.5.3 for a RCPT beyond smtp.max_recipients.
	// Not a transaction outcome (the transaction goes on with the
	// recipients so far; the client sends the rest in another one) nor a
	// sign of load, so not counted as deferred: one mailing to a thousand
	// recipients would otherwise look like a deferral storm.
	resultRecipientLimit = "recipient_limit"

	sessionAccepted         = "accepted"
	sessionRejectedLimit    = "rejected_limit"
	sessionRejectedShutdown = "rejected_shutdown"

	parseOK         = "ok"
	parseUnreadable = "unreadable"
)

// timeoutReasons label levee_smtp_timeouts_total by the reply that ended
// the connection.
var timeoutReasons = map[reply]string{
	replyIdleTimeout:    "idle",
	replyDataTooSlow:    "data_rate",
	replySessionTooLong: "session_duration",
	replyStalled:        "stalled",
}

type metrics struct {
	sessions    *prometheus.CounterVec
	active      prometheus.Gauge
	messages    *prometheus.CounterVec
	size        prometheus.Histogram
	dataSeconds prometheus.Histogram
	watermark   prometheus.Gauge
	parse       *prometheus.CounterVec
	timeouts    *prometheus.CounterVec
	rateLimited *prometheus.CounterVec

	// The same outcomes as plain counters, for Stats (the ops API sums
	// them over processes without scraping).
	accepted, deferred, rejected atomic.Uint64
	sessionsOpen                 atomic.Int64
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_smtp_sessions_total",
			Help: "SMTP connections by admission result: accepted, rejected_limit (over smtp.max_connections or smtp.max_connections_per_ip), rejected_shutdown.",
		}, []string{"result"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_smtp_active_sessions",
			Help: "SMTP connections currently open (admitted ones only).",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_smtp_messages_total",
			Help: "Transaction outcomes Levee decided, by result (accepted, duplicate, rejected = 5xx, deferred = 4xx, recipient_limit = 452 4.5.3 for a RCPT beyond smtp.max_recipients) and SMTP reply code: one per end of DATA, plus one per MAIL or RCPT that Levee refused.",
		}, []string{"result", "code"}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_smtp_message_size_bytes",
			Help:    "Size of accepted messages as queued (including the Received header), in bytes.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 10), // 1 KiB .. 256 MiB
		}),
		dataSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_smtp_data_duration_seconds",
			Help:    "Time from the start of DATA to its reply being decided (reading, parsing and publishing), in seconds.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms .. ~4 min
		}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_smtp_watermark_engaged",
			Help: "1 while MAIL is refused with 452 4.3.1 because the queue fill crossed smtp.high_watermark (until it drops below smtp.low_watermark), else 0.",
		}),
		parse: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_smtp_parse_total",
			Help: "Header blocks of received messages read at the receiver, by result: ok, unreadable. All are accepted; the MIME parse is the worker's (levee_worker_parse_total).",
		}, []string{"result"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_smtp_timeouts_total",
			Help: "SMTP connections closed with 421 4.4.2 by a deadline, by reason: idle (smtp.read_timeout), data_rate (smtp.min_data_rate), session_duration (smtp.max_session_duration), stalled (slot given to a new client after smtp.stress_timeout).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_smtp_rate_limited_total",
			Help: "Messages refused at MAIL with 451 4.7.1 by a rate limit, by scope: client (smtp.max_messages_per_client), network (smtp.max_messages_per_network).",
		}, []string{"scope"}),
	}
	for _, c := range []prometheus.Collector{m.sessions, m.active, m.messages, m.size, m.dataSeconds, m.watermark, m.parse, m.timeouts, m.rateLimited} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest: register metrics: %w", err)
		}
	}
	// Pre-create the label values a dashboard expects to see at zero.
	for _, r := range []string{sessionAccepted, sessionRejectedLimit, sessionRejectedShutdown} {
		m.sessions.WithLabelValues(r)
	}
	for _, r := range []string{parseOK, parseUnreadable} {
		m.parse.WithLabelValues(r)
	}
	for _, r := range timeoutReasons {
		m.timeouts.WithLabelValues(r)
	}
	for _, s := range []rateScope{rateClientLimited, rateNetLimited} {
		m.rateLimited.WithLabelValues(string(s))
	}
	return m, nil
}

func (m *metrics) outcome(result string, r reply) {
	m.messages.WithLabelValues(result, r.codeLabel()).Inc()
	switch result {
	case resultAccepted, resultDuplicate:
		m.accepted.Add(1)
	case resultDeferred:
		m.deferred.Add(1)
	case resultRejected:
		m.rejected.Add(1)
	}
}

// Stats are a receiver's transaction outcomes since it started (accepted
// includes duplicates: both were answered 250) and its open sessions.
type Stats struct {
	Accepted, Deferred, Rejected uint64
	Sessions                     int64
}

// Stats returns the outcomes so far; cheap and safe to call at any time.
func (s *Server) Stats() Stats {
	m := s.metrics
	return Stats{Accepted: m.accepted.Load(), Deferred: m.deferred.Load(), Rejected: m.rejected.Load(), Sessions: m.sessionsOpen.Load()}
}
