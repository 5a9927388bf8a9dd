package sidecar

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// wiMetrics are the work-item side's metrics.
type wiMetrics struct {
	workers prometheus.Gauge
	serving *prometheus.GaugeVec
	items   *prometheus.CounterVec
}

func newWIMetrics(reg prometheus.Registerer) (*wiMetrics, error) {
	m := &wiMetrics{
		workers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "soloist_sidecar_workers",
			Help: "Durable Task workers connected to this node (GetWorkItems streams).",
		}),
		serving: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "soloist_sidecar_worker_functions",
			Help: "Connected workers serving each orchestration or activity (function \"*\": a worker without work-item filters, which serves any).",
		}, []string{"kind", "function"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_sidecar_work_items_total",
			Help: "Work items by kind (orchestration, activity) and outcome: dispatched (sent to a worker), completed, abandoned (given back), lost (its worker disconnected), refused (the answer was refused and the item sent again), stale (an answer for an older dispatch or a lost lease, refused); for activities also queued (put in etcd's task queue by this node, which holds the instance and has no worker serving the activity) and claimed (taken from the task queue by this node for one of its workers).",
		}, []string{"kind", "outcome"}),
	}
	// A collector already there (a second server on one registry) is shared.
	if err := reg.Register(m.workers); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		m.workers = are.ExistingCollector.(prometheus.Gauge)
	}
	for _, v := range []**prometheus.GaugeVec{&m.serving} {
		if err := reg.Register(*v); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			*v = are.ExistingCollector.(*prometheus.GaugeVec)
		}
	}
	if err := reg.Register(m.items); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		m.items = are.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, k := range []string{kindOrchestration, kindActivity} {
		for _, o := range []string{"dispatched", "completed", "abandoned", "lost", "refused", "stale"} {
			m.items.WithLabelValues(k, o)
		}
	}
	m.items.WithLabelValues(kindActivity, "queued")
	m.items.WithLabelValues(kindActivity, "claimed")
	return m, nil
}
