package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/dashboard"
	"github.com/soloist-dev/soloist/scheduler/dashboard/browsertest"
	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

const testKey = "s3cret-key"

var quiet = slog.New(slog.DiscardHandler)

// registry has "Wait": it waits for the event "go" and returns its data.
func registry() *orchestrator.Registry {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v any
		err := ctx.WaitForExternalEvent("go", 0).Await(&v)
		return v, err
	})
	// Loop continues as new n times, then waits for "go" like Wait.
	_ = reg.AddOrchestrator("Loop", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var n int
		if err := ctx.GetInput(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			ctx.ContinueAsNew(n - 1)
			return nil, nil
		}
		var v any
		err := ctx.WaitForExternalEvent("go", 0).Await(&v)
		return v, err
	})
	return reg
}

// site is a node with its API and dashboard behind one test server.
type site struct {
	t      *testing.T
	e      *leasetest.Etcd
	nodes  []*scheduler.Node
	client *orchestrator.Client
	srv    *httptest.Server
	dash   *dashboard.Dashboard
	prefix string
	clis   []*clientv3.Client
}

type siteOpts struct {
	keys     bool
	readOnly bool
	nodes    int
	ttl      time.Duration
	schedule bool
	workers  dashboard.Workers
}

func newSite(t *testing.T, o siteOpts) *site {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 1
	}
	if o.ttl == 0 {
		o.ttl = 5 * time.Second
	}
	s := &site{t: t, e: leasetest.Start(t), prefix: "/" + t.Name() + "/"}
	reg := registry()
	for i := 0; i < o.nodes; i++ {
		cli := s.e.Client()
		if i > 0 { // a client of its own, so that a test can cut it off
			var err error
			cli, err = clientv3.New(clientv3.Config{Endpoints: s.e.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
		}
		s.clis = append(s.clis, cli)
		cfg := scheduler.Config{Etcd: cli, Prefix: s.prefix, NodeID: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("10.0.0.%d:8080", i+1),
			Version: "test", LeaseTTL: o.ttl, Registry: reg, Logger: quiet, PreferenceDelay: 20 * time.Millisecond}
		if o.schedule {
			cfg.Schedules = []scheduler.Schedule{{Name: "nightly", Spec: "0 2 * * *", Function: "Wait"}}
		}
		n, err := scheduler.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = n.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Drain(ctx)
		})
		s.nodes = append(s.nodes, n)
	}
	n := s.nodes[0]
	s.client = n.Client()
	var keys []string
	if o.keys {
		keys = []string{testKey}
	}
	preg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Config{Client: n.Client(), Function: httpapi.RegistryFunction(reg), Ready: n.Ready,
		Gatherer: preg, Registerer: preg, APIKeys: keys, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(dashboard.Config{Node: n, API: api, APIKeys: keys, ReadOnly: o.readOnly, Workers: o.workers, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.dash = d
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, dashboard.Prefix) {
			d.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		d.Stop()
	})
	return s
}

// do sends one request to the site with the key (if key != "").
func (s *site) do(method, path, key string, body string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *site) start(id string) time.Time {
	s.t.Helper()
	code, body := s.do("POST", httpapi.BasePath+"/orchestrators/Wait/"+id, testKey, `{"n":1}`)
	if code != http.StatusAccepted {
		s.t.Fatalf("start %s: %d %s", id, code, body)
	}
	return time.Now()
}

func (s *site) status(id string) (orchestrator.RuntimeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.client.Status(ctx, id)
	if err != nil {
		return "", err
	}
	return st.RuntimeStatus, nil
}

// eventually polls cond until it holds, failing t after d.
var eventually = browsertest.Eventually
