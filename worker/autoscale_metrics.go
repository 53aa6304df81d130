package worker

import "github.com/prometheus/client_golang/prometheus"

type autoscaleMetrics struct {
	wanted  prometheus.Gauge
	limit   prometheus.Gauge
	p95     prometheus.Gauge
	changes *prometheus.CounterVec
}

func newAutoscaleMetrics(reg prometheus.Registerer) (*autoscaleMetrics, error) {
	m := &autoscaleMetrics{
		wanted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_autoscale_wanted",
			Help: "Delivery loops the backlog asks for (arrivals plus draining within the target time, at the measured throughput per loop), within min and max.",
		}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_autoscale_limit",
			Help: "Delivery loops the store's write latency allows (adaptive: additive increase under the budget, multiplicative decrease over it).",
		}),
		p95: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_store_write_p95_seconds",
			Help: "95th percentile of store write (transaction) duration over the autoscaler's latency window; 0 when nothing was written in it.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_worker_autoscale_changes_total",
			Help: "Concurrency changes made by the autoscaler, by direction: up, down.",
		}, []string{"direction"}),
	}
	m.changes.WithLabelValues("up")
	m.changes.WithLabelValues("down")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.wanted, m.limit, m.p95, m.changes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
