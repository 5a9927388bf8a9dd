package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/dashboard"
	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// parts are what serve has made before it wires the node.
type parts struct {
	etcd      *clientv3.Client
	registry  *orchestrator.Registry
	schedules []scheduler.Schedule
	metrics   *prometheus.Registry
	apiKeys   []string
	address   string // advertised in the node key
	version   string
	log       *slog.Logger
	// endpoints are etcd's, named in the API's 503s.
	endpoints []string
	// unreachable hears of requests that found etcd silent (may be nil).
	unreachable func(error)
	// tracer traces runs and starts (nil: a no-op provider).
	tracer trace.TracerProvider
	// stopping is closed when the node begins to drain: the API's waits
	// (start and wait, status long polls) answer at once (may be nil).
	stopping <-chan struct{}
	// workers lists the gRPC workers connected to the node, for the
	// dashboard; nil without a gRPC listener.
	workers dashboard.Workers
}

// runnerMessage is the 404 of every API route on a node of --role runner.
const runnerMessage = "this node runs instances only (--role runner) and serves no API besides /livez, /readyz, /healthz and /metrics; " +
	"send starts and every other API request to a node of --role all or --role api"

// wire builds the node and its HTTP API. It is the one place that maps the
// serve options onto orchestrator.ClientConfig, scheduler.Config and
// httpapi.Config.
func wire(o *serveOptions, p parts) (*scheduler.Node, http.Handler, error) {
	role, err := scheduler.ParseRole(o.Role)
	if err != nil {
		return nil, nil, err
	}
	client := orchestrator.NewClient(p.etcd, orchestrator.ClientConfig{
		Prefix: o.EtcdPrefix, MaxPayload: int(o.MaxPayload), Limits: o.limits(), Logger: p.log,
		TracerProvider: p.tracer,
	})
	node, err := scheduler.New(scheduler.Config{
		Etcd:          p.etcd,
		Prefix:        o.EtcdPrefix,
		NodeID:        o.NodeID,
		Address:       p.address,
		Version:       p.version,
		Role:          role,
		LeaseTTL:      o.LeaseTTL,
		Retention:     o.Retention,
		ParkAfter:     parkAfter(o.ParkAfter),
		BatchBudget:   o.BatchBudget,
		MaxConcurrent: o.MaxConcurrent,
		Registry:      p.registry,
		Client:        client,
		Logger:        p.log,
		Registerer:    p.metrics,
		Schedules:     p.schedules,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("configure node: %w", err)
	}
	api, err := httpapi.New(httpapi.Config{
		Client:         client,
		Function:       httpapi.RegistryFunction(p.registry),
		Start:          node.StartInstance, // start where you land
		Nodes:          node.Nodes,
		Stopping:       p.stopping,
		Ready:          node.Ready,
		Gatherer:       p.metrics,
		Registerer:     p.metrics,
		APIKeys:        p.apiKeys,
		MaxPayload:     int(o.MaxPayload),
		PublicURL:      o.PublicURL,
		OmitCodeInURLs: o.NoCodeInURLs,
		EtcdEndpoints:  p.endpoints,
		// A failed read is retried by its client: fail fast, and say why.
		ReadTimeout:       3 * time.Second,
		StoreUnreachable:  p.unreachable,
		StoreRefused:      node.ObserveStoreError,
		HealthOnly:        role == scheduler.RoleRunner,
		HealthOnlyMessage: runnerMessage,
		Logger:            p.log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("configure HTTP API: %w", err)
	}
	if !o.UI || role == scheduler.RoleRunner {
		return node, api, nil
	}
	ui, err := dashboard.New(dashboard.Config{Node: node, Client: client, API: api, APIKeys: p.apiKeys,
		ReadOnly: o.UIReadOnly, Workers: p.workers, Stopping: p.stopping, Logger: p.log})
	if err != nil {
		return nil, nil, fmt.Errorf("configure the dashboard: %w", err)
	}
	_ = ui.Start(context.Background()) // no goroutine: it lives as long as the node
	return node, withDashboard(api, ui), nil
}

// withDashboard serves /ui and /ui/... with ui and the rest with api.
func withDashboard(api, ui http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, dashboard.Prefix) {
			ui.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// parkAfter maps --park-after (0: never) to scheduler.Config.ParkAfter
// (negative: never).
func parkAfter(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
