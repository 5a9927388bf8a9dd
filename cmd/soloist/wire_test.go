package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// The embedded etcd gets serve's limits, revision-based compaction and an
// explicit quota, by default and from the flags.
func TestEmbedConfig(t *testing.T) {
	t.Parallel()
	cu, _ := url.Parse("http://127.0.0.1:23790")
	pu, _ := url.Parse("http://127.0.0.1:23791")
	for _, c := range []struct {
		args              []string
		requestBytes, ops uint
		quota             int64
		retention         string
	}{
		{nil, 1536 << 10, 128, 2 << 30, "10000"},
		{[]string{"--etcd-max-request-bytes", "3MiB", "--etcd-max-txn-ops", "512", "--embedded-etcd-quota", "4GiB",
			"--embedded-etcd-compaction-revisions", "50000", "--max-payload", "2MiB"}, 3 << 20, 512, 4 << 30, "50000"},
	} {
		o, err := parseServe(append([]string{"--data-dir", t.TempDir()}, c.args...), mapEnv())
		if err != nil {
			t.Fatal(err)
		}
		cfg := embedConfig(o.embeddedSettings(), cu, pu)
		if cfg.MaxRequestBytes != c.requestBytes || cfg.MaxTxnOps != c.ops || cfg.QuotaBackendBytes != c.quota ||
			cfg.AutoCompactionMode != embed.CompactorModeRevision || cfg.AutoCompactionRetention != c.retention {
			t.Errorf("%q: embed.Config max-request-bytes %d, max-txn-ops %d, quota %d, auto-compaction %s %s; want %d, %d, %d, revision %s",
				c.args, cfg.MaxRequestBytes, cfg.MaxTxnOps, cfg.QuotaBackendBytes, cfg.AutoCompactionMode, cfg.AutoCompactionRetention,
				c.requestBytes, c.ops, c.quota, c.retention)
		}
		if cfg.Dir != o.DataDir || cfg.Name != "soloist" || cfg.ListenClientUrls[0] != *cu || cfg.ListenPeerUrls[0] != *pu {
			t.Errorf("%q: embed.Config dir %s name %s urls %v %v", c.args, cfg.Dir, cfg.Name, cfg.ListenClientUrls, cfg.ListenPeerUrls)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%q: etcd refuses the configuration: %v", c.args, err)
		}
		// The client may send what the server accepts: --max-request-bytes
		// plus etcd's gRPC overhead.
		if got, want := sendLimit(o.limits()), int(c.requestBytes)+512<<10; got != want {
			t.Errorf("%q: client MaxCallSendMsgSize %d, want %d", c.args, got, want)
		}
		o.EtcdEndpoints = "http://e1:2379"
		if tg, err := o.etcdConfig(); err != nil || tg.cfg.MaxCallSendMsgSize != int(c.requestBytes)+512<<10 {
			t.Errorf("%q: external etcd client MaxCallSendMsgSize %d (%v)", c.args, tg.cfg.MaxCallSendMsgSize, err)
		}
	}
}

// wire maps the flags onto the parts: etcd's limits reach the client, the
// role the node, and the metrics of real requests reach the node's
// registry with bounded labels, next to soloist_build_info and a zero
// soloist_instances_held for every function.
func TestWireMetrics(t *testing.T) {
	t.Parallel()
	etcd := leasetest.Start(t)
	o, err := parseServe([]string{"--demo", "--node-id", "n1", "--role", "api", "--etcd-max-request-bytes", "2MiB", "--etcd-max-txn-ops", "256"}, mapEnv())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, schedules, err := buildRegistry(o, log)
	if err != nil {
		t.Fatal(err)
	}
	metrics := newMetricsRegistry(buildInfo{Version: "v1.2.3", Commit: "abc123", GoVersion: "go1.99"})
	node, api, err := wire(o, parts{etcd: etcd.Client(), registry: reg, schedules: schedules, metrics: metrics, log: log,
		endpoints: etcd.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	if l := node.Client().Limits(); l.RequestBytes != 2<<20 || l.TxnOps != 256 {
		t.Errorf("client limits %+v, want the flags'", l)
	}
	if node.Role() != scheduler.RoleAPI {
		t.Errorf("node role %s, want api", node.Role())
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	for _, r := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/livez", 200},
		{"GET", httpapi.BasePath + "/instances/wire-secret-id", 404},
		{"POST", "/api/orchestrators/HelloCities/wire-secret-id", 503}, // the node has no session: not ready
		{"GET", "/nowhere/wire-secret-id", 404},
	} {
		req, _ := http.NewRequest(r.method, srv.URL+r.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.code {
			t.Errorf("%s %s: %d, want %d", r.method, r.path, resp.StatusCode, r.code)
		}
	}
	text := gatherText(t, metrics)
	for _, want := range []string{
		`soloist_http_requests_total{code="200",route="GET /livez"} 1`,
		`soloist_http_requests_total{code="404",route="GET /runtime/webhooks/durabletask/instances/{id}"} 1`,
		`soloist_http_requests_total{code="503",route="POST /api/orchestrators/{functionName}/{instanceId...}"} 1`,
		`soloist_http_requests_total{code="404",route="unmatched"} 1`,
		`soloist_http_request_duration_seconds_count{route="GET /livez"} 1`,
		`soloist_build_info{goversion="go1.99",revision="abc123",version="v1.2.3"} 1`,
		`soloist_instances_held{function="HelloCities"} 0`,
		`soloist_instances_held{function="Approval"} 0`,
		`soloist_instances_held{function="Countdown"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "wire-secret-id") || strings.Contains(text, "/nowhere") {
		t.Errorf("a request's path reached a label:\n%s", text)
	}
	// The real build: revision from debug.ReadBuildInfo, or unknown.
	if bi := readBuildInfo(); !strings.Contains(gatherText(t, newMetricsRegistry(bi)), `revision="`+bi.Commit+`"`) || bi.Commit == "" {
		t.Errorf("soloist_build_info lacks revision %q", bi.Commit)
	}
}

// gatherText is the registry in the Prometheus text format.
func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	rec := httptest.NewRecorder()
	httpapi.MetricsHandler(g, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// --pprof serves net/http/pprof on the metrics listener, and only there.
func TestPprof(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Config{
		Client: orchestrator.NewClient(nil, orchestrator.ClientConfig{}), Function: func(string, string) (string, bool) { return "", false },
		Gatherer: reg, Registerer: reg, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, pprof := range []bool{true, false} {
		args := []string{"--listen", freeAddr(t), "--metrics-listen", freeAddr(t), "--request-timeout", "5s"}
		if pprof {
			args = append(args, "--pprof")
		}
		o, err := parseServe(args, mapEnv())
		if err != nil {
			t.Fatal(err)
		}
		lns, err := listen(o)
		if err != nil {
			t.Fatal(err)
		}
		srv := newServers(o, lns, reg, log)
		srv.setAPI(api)
		srv.serve()
		metricsURL, apiURL := "http://"+o.MetricsListen, "http://"+o.Listen
		code, body := get(metricsURL + "/debug/pprof/")
		switch {
		case pprof && (code != 200 || !strings.Contains(body, "goroutine")):
			t.Errorf("--pprof: /debug/pprof/ on --metrics-listen: %d\n%.300s", code, body)
		case !pprof && (code != 404 || !strings.Contains(body, "serves GET /metrics only")):
			t.Errorf("without --pprof: /debug/pprof/ on --metrics-listen: %d %s", code, body)
		}
		if pprof {
			if code, body := get(metricsURL + "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
				t.Errorf("/debug/pprof/goroutine: %d %.200s", code, body)
			}
			if code, _ := get(metricsURL + "/debug/pprof/cmdline"); code != 200 {
				t.Errorf("/debug/pprof/cmdline: %d", code)
			}
			// A 30s CPU profile fits the listener's write timeout, even with
			// a --request-timeout of 5s.
			if srv.metrics.WriteTimeout < 5*time.Minute {
				t.Errorf("metrics listener WriteTimeout %s with --pprof; profiles of minutes would be refused", srv.metrics.WriteTimeout)
			}
		}
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine"} {
			if code, body := get(apiURL + p); code != 404 || !strings.Contains(body, "no route") {
				t.Errorf("pprof %v: %s on --listen: %d %s", pprof, p, code, body)
			}
		}
		if code, _ := get(metricsURL + "/metrics"); code != 200 {
			t.Errorf("/metrics on --metrics-listen: %d", code)
		}
		srv.close()
		lns.Close()
	}
}
