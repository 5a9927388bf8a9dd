package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The result label values of soloist_start_requests_total.
const (
	resultStarted  = "started"  // 202: a new execution was committed
	resultExisting = "existing" // 200: useExisting or ignore returned the existing instance
	resultConflict = "conflict" // 409: refused by the conflict or reuse policy
	resultInvalid  = "invalid"  // 400, 404, 413: the request was wrong
	resultError    = "error"    // 5xx: the node or the store failed
)

type metrics struct {
	starts   *prometheus.CounterVec
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	starts, err := register(reg, "soloist_start_requests_total", prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "soloist_start_requests_total",
		Help: "Start requests of the HTTP API by function and result (started, existing, conflict, invalid, error). " +
			"function is empty for a function this node does not know.",
	}, []string{"function", "result"}))
	if err != nil {
		return nil, err
	}
	requests, err := register(reg, "soloist_http_requests_total", prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "soloist_http_requests_total",
		Help: "Requests of the HTTP API by route (the mux pattern, e.g. \"GET " + BasePath + "/instances/{id}\"; " +
			"\"" + unmatchedRoute + "\" for none) and status code.",
	}, []string{"route", "code"}))
	if err != nil {
		return nil, err
	}
	duration, err := register(reg, "soloist_http_request_duration_seconds", prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "soloist_http_request_duration_seconds",
		Help:    "Time to answer a request of the HTTP API, by route (as in soloist_http_requests_total).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"}))
	if err != nil {
		return nil, err
	}
	return &metrics{starts: starts, requests: requests, duration: duration}, nil
}

// register registers c, or returns the collector already registered under
// its name (a second handler on the same registry shares it).
func register[C prometheus.Collector](reg prometheus.Registerer, name string, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("httpapi: register %s: %w", name, err)
}

// request counts and times one request. route is a mux pattern or
// unmatchedRoute; code 0 means the handler wrote nothing (net/http answers
// 200).
func (m *metrics) request(route string, code int, d time.Duration) {
	if code == 0 {
		code = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
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
