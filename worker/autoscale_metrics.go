package worker

import "github.com/prometheus/client_golang/prometheus"

type autoscaleMetrics struct {
	wanted  prometheus.Gauge
	limit   prometheus.Gauge
	p95     prometheus.Gauge
	budget  prometheus.Gauge
	duty    prometheus.Gauge
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
			Help: "95th percentile of store write (transaction) duration over the autoscaler's latency window, of full batches or of the smaller writes, whichever is further over its budget; 0 when nothing was written in it.",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_store_write_budget_seconds",
			Help: "The store write p95 the autoscaler holds those writes under: worker.autoscale.latency_budget, or when that is 0 latency_budget_factor times the store's idle write p95 for writes of that kind, full batches or smaller ones (at least latency_floor; 0.1 s until a minute of them was measured).",
		}),
		duty: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "levee_worker_autoscale_duty",
			Help: "Share of time each delivery loop works (1: without rest); below 1 when the store or the readers are over budget with the fewest loops running.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_worker_autoscale_changes_total",
			Help: "Concurrency changes made by the autoscaler, by direction: up, down.",
		}, []string{"direction"}),
	}
	m.changes.WithLabelValues("up")
	m.changes.WithLabelValues("down")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.wanted, m.limit, m.p95, m.budget, m.duty, m.changes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
