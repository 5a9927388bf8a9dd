package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Config configures the HTTP API handler. (Stub: being written.)
type Config struct {
	// Client performs the operations. Required.
	Client *orchestrator.Client
	// HasFunction reports whether an orchestration name is known (404 otherwise). Required.
	HasFunction func(name string) bool
	// Ready returns nil while the node can serve (/readyz 200), an error otherwise (503).
	// Starts are refused with 503 while Ready returns an error.
	Ready func() error
	// Gatherer is served at /metrics. Required.
	Gatherer prometheus.Gatherer
	// Registerer receives soloist_start_requests_total. Required.
	Registerer prometheus.Registerer
	// APIKeys, if not empty, are required on every route but /livez, /readyz, /healthz.
	APIKeys []string
	// MaxPayload limits request bodies in bytes. Defaults to orchestrator.DefaultMaxPayload.
	MaxPayload int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// New returns the handler of every route of SPEC section 3.
func New(cfg Config) (http.Handler, error) { return http.NotFoundHandler(), nil }
