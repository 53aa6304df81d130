package worker

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	deliveries     *prometheus.CounterVec
	storeWrite     *prometheus.HistogramVec
	batchSize      prometheus.Histogram
	endToEnd       prometheus.Histogram
	concurrency    prometheus.Gauge
	storeAvailable prometheus.Gauge
	steppedBack    prometheus.Gauge
	usualRate      prometheus.Gauge
	parse          *prometheus.CounterVec
}

// MIME parse results, as the result label of levee_worker_parse_total.
const (
	parseOK       = "ok"
	parseWarnings = "warnings"
	parseHeaders  = "headers_only"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_worker_deliveries_total",
			Help: "Messages settled by workers, by result: stored, duplicate (already stored; acked), retry (handed back to the queue, to come again after a delay), dead_lettered.",
		}, []string{"result"}),
		storeWrite: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "levee_store_write_duration_seconds",
			Help:    "Duration of one store transaction (a batch of messages), by result: ok, error.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_store_write_batch_size",
			Help:    "Messages per committed store transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_end_to_end_latency_seconds",
			Help:    "Time from the SMTP 250 (message durable in the queue) to the message being stored.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 22),
		}),
		concurrency: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_concurrency",
			Help: "Delivery loops currently running.",
		}),
		steppedBack: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_stepped_back",
			Help: "1 while the delivery loops step back during a surge of senders waiting on the receiver on this machine (worker.intake_first), 0 while they drain.",
		}),
		usualRate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_intake_usual_rate",
			Help: "The receiver's usual intake rate on this machine, in msgs/s (worker.intake_first): the lowest 10 s average of levee_smtp_intake_rate over the last 10 minutes, 0 in a process's first minute; three times it is a surge.",
		}),
		storeAvailable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_store_available",
			Help: "1 while the store accepts writes, 0 while workers back off from a store outage.",
		}),
	}
	m.parse = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "levee_worker_parse_total",
		Help: "MIME parses of messages before they are stored (one per delivery), by result: ok, warnings (messy but readable: stored with its warnings), headers_only (over the parse limits or unparsable: stored with its headers and raw bytes).",
	}, []string{"result"})
	for _, r := range []string{parseOK, parseWarnings, parseHeaders} {
		m.parse.WithLabelValues(r)
	}
	m.storeAvailable.Set(1)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.storeWrite, m.batchSize, m.endToEnd, m.concurrency, m.storeAvailable, m.steppedBack, m.usualRate, m.parse} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
