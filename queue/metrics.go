package queue

import (
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Publish results, as the result label of levee_queue_publish_duration_seconds.
const (
	resultOK          = "ok"
	resultDuplicate   = "duplicate"
	resultFull        = "full"
	resultTooLarge    = "too_large"
	resultUnavailable = "unavailable"
	resultInvalid     = "invalid"
)

type metrics struct {
	publish     *prometheus.HistogramVec
	batchSize   prometheus.Histogram
	fallbacks   *prometheus.CounterVec
	messages    prometheus.Gauge
	partition   *prometheus.GaugeVec
	bytes       prometheus.Gauge
	fill        *prometheus.GaugeVec
	pending     prometheus.Gauge
	ackPending  prometheus.Gauge
	redelivered prometheus.Gauge
	oldestAge   prometheus.Gauge
	deadLetters prometheus.Gauge
	up          prometheus.Gauge
	drift       *prometheus.GaugeVec
	restarts    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "levee_queue_publish_duration_seconds",
			Help:    "Time from Publish to the JetStream acknowledgement (or failure) and, under group sync, the sync after it: what a sender waits after DATA. By result: ok, duplicate, full, too_large, unavailable, invalid.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_queue_publish_batch_size",
			Help:    "Messages per JetStream commit: an atomic batch (group commit) or 1 for a single publish.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_queue_publish_batch_fallbacks_total",
			Help: "Atomic batches that failed as a whole and were republished one message at a time, by reason: duplicate, full, too_large, incomplete, unavailable, other.",
		}, []string{"reason"}),
		messages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_messages", Help: "Messages in the mail queue: every partition (mail stream), those of an old layout still draining included.",
		}),
		partition: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_queue_partition_messages", Help: "Messages in one partition of the mail queue, by stream.",
		}, []string{"stream"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_bytes", Help: "Bytes in the mail queue, every partition.",
		}),
		fill: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_queue_fill_ratio",
			Help: "Mail stream usage against its limit, by limit: messages, bytes. At 1 new mail gets 452.",
		}, []string{"limit"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_consumer_pending", Help: "Messages not yet delivered to the workers.",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_consumer_ack_pending", Help: "Messages delivered to the workers and not yet acknowledged.",
		}),
		redelivered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_consumer_redelivered", Help: "Unacknowledged messages delivered more than once.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_oldest_message_age_seconds", Help: "Age of the oldest message in the mail stream; 0 when empty.",
		}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_dead_letters", Help: "Messages in the dead-letter stream.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_queue_up",
			Help: "1 while JetStream answers this process's status refresh (every 500ms), 0 after one failed (the other levee_queue_* gauges then hold their last values) and while the embedded server cannot write its store (a full disk).",
		}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_queue_limit_drift",
			Help: "1 while the mail stream's live limit differs from this process's config (a start leaves live limits as they are), by limit: max_msgs, max_bytes, max_age, max_msg_size, per_domain_max_msgs.",
		}, []string{"limit"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "levee_queue_server_restarts_total",
			Help: "Restarts of the embedded JetStream server to reopen a store that met a write error (a full disk), once there was room again.",
		}),
	}
	for _, c := range []prometheus.Collector{m.publish, m.batchSize, m.fallbacks, m.messages, m.partition, m.bytes, m.fill,
		m.pending, m.ackPending, m.redelivered, m.oldestAge, m.deadLetters, m.up, m.drift, m.restarts} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{resultOK, resultDuplicate, resultFull, resultTooLarge, resultUnavailable} {
		m.publish.WithLabelValues(r)
	}
	m.fill.WithLabelValues("messages")
	m.fill.WithLabelValues("bytes")
	m.setDrift(nil)
	return m, nil
}

// setDrift sets the drift gauge of every limit: 1 for those in drift.
func (m *metrics) setDrift(drift []LimitDrift) {
	for _, k := range limitKeys {
		v := 0.0
		for _, d := range drift {
			if d.Key == k {
				v = 1
			}
		}
		m.drift.WithLabelValues(k).Set(v)
	}
}

func (m *metrics) observePublish(start time.Time, res PublishResult, err error) {
	m.publish.WithLabelValues(resultLabel(res, err)).Observe(time.Since(start).Seconds())
}

func resultLabel(res PublishResult, err error) string {
	switch {
	case err == nil && res.Duplicate:
		return resultDuplicate
	case err == nil:
		return resultOK
	case errors.Is(err, ErrQueueFull):
		return resultFull
	case errors.Is(err, ErrTooLarge):
		return resultTooLarge
	case errors.Is(err, ErrInvalidMessage):
		return resultInvalid
	}
	return resultUnavailable
}

func fallbackReason(err error) string {
	switch apiCode(err) {
	case codeBatchDuplicate:
		return "duplicate"
	case codeBatchIncomplete:
		return "incomplete"
	case 0:
		return "unavailable"
	}
	switch Classify(err) {
	case ErrQueueFull:
		return "full"
	case ErrTooLarge:
		return "too_large"
	}
	return "other"
}

// atomicFloat is a float64 read and written without a lock.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) Load() float64   { return math.Float64frombits(f.bits.Load()) }
func (f *atomicFloat) Store(v float64) { f.bits.Store(math.Float64bits(v)) }
