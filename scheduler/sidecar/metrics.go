package sidecar

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	calls *prometheus.CounterVec
}

// newMetrics registers the metrics on reg, sharing ones already there.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "soloist_grpc_calls_total",
		Help: "Calls of the Durable Task sidecar gRPC service (--grpc-listen), by method and gRPC status code.",
	}, []string{"method", "code"})
	if err := reg.Register(calls); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		calls = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return &metrics{calls: calls}, nil
}

// observe counts a call that ended with err.
func (m *metrics) observe(method string, err error) {
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
}
