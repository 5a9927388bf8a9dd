package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
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
}

// wire builds the node and its HTTP API. It is the one place that maps the
// serve options onto orchestrator.ClientConfig, scheduler.Config and
// httpapi.Config.
func wire(o *serveOptions, p parts) (*scheduler.Node, http.Handler, error) {
	client := orchestrator.NewClient(p.etcd, orchestrator.ClientConfig{
		Prefix: o.EtcdPrefix, MaxPayload: int(o.MaxPayload), Logger: p.log,
	})
	node, err := scheduler.New(scheduler.Config{
		Etcd:          p.etcd,
		Prefix:        o.EtcdPrefix,
		NodeID:        o.NodeID,
		Address:       p.address,
		Version:       p.version,
		LeaseTTL:      o.LeaseTTL,
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
		Client: client,
		HasFunction: func(name string) bool {
			_, ok := p.registry.Orchestrator(name)
			return ok
		},
		Ready:          node.Ready,
		Gatherer:       p.metrics,
		Registerer:     p.metrics,
		APIKeys:        p.apiKeys,
		MaxPayload:     int(o.MaxPayload),
		PublicURL:      o.PublicURL,
		OmitCodeInURLs: o.NoCodeInURLs,
		Logger:         p.log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("configure HTTP API: %w", err)
	}
	return node, api, nil
}
