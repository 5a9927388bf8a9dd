package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// The result label values of soloist_start_requests_total.
const (
	resultStarted  = "started"  // 202: a new execution was committed
	resultExisting = "existing" // 200: useExisting returned the active instance
	resultConflict = "conflict" // 409: refused by the conflict or reuse policy
	resultInvalid  = "invalid"  // 400, 404, 413: the request was wrong
	resultError    = "error"    // 5xx: the node or the store failed
)

type metrics struct {
	starts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	starts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "soloist_start_requests_total",
		Help: "Start requests of the HTTP API by function and result (started, existing, conflict, invalid, error). " +
			"function is empty for a function this node does not know.",
	}, []string{"function", "result"})
	if err := reg.Register(starts); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("httpapi: register soloist_start_requests_total: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("httpapi: register soloist_start_requests_total: %w", err)
		}
		starts = existing
	}
	return &metrics{starts: starts}, nil
}

// start counts one start request. function must be a known function name
// or "": never the caller's string for an unknown function, so that the
// label's values stay bounded by the registry.
func (m *metrics) start(function string, code int) {
	m.starts.WithLabelValues(function, startResult(code)).Inc()
}

func startResult(code int) string {
	switch {
	case code == http.StatusAccepted:
		return resultStarted
	case code == http.StatusOK:
		return resultExisting
	case code == http.StatusConflict:
		return resultConflict
	case code >= 400 && code < 500:
		return resultInvalid
	}
	return resultError
}
