package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.APIKeys = []string{"k1", "key-two"} })

	// Without a valid key every route but the health ones is refused, and a
	// refused start writes nothing.
	for _, c := range []struct {
		method, path string
		headers      []string
	}{
		{"POST", "/api/orchestrators/hello/a", nil},
		{"POST", "/api/orchestrators/hello", nil},
		{"GET", BasePath + "/instances/a", nil},
		{"GET", BasePath + "/instances", nil},
		{"DELETE", BasePath + "/instances/a", nil},
		{"POST", BasePath + "/instances/a/terminate", nil},
		{"GET", "/metrics", nil},
		{"GET", "/no/such/route", nil},
		{"POST", "/api/orchestrators/hello/a", []string{"Authorization", "Bearer nope"}},
		{"POST", "/api/orchestrators/hello/a", []string{"Authorization", "Basic k1"}},
		{"POST", "/api/orchestrators/hello/a", []string{"Authorization", "Bearer k"}},
		{"POST", "/api/orchestrators/hello/a", []string{"x-functions-key", "k1x"}},
		{"POST", "/api/orchestrators/hello/a?code=", nil},
		{"POST", "/api/orchestrators/hello/a?code=key-tw", nil},
	} {
		r := e.do(c.method, c.path, "", c.headers...).want(t, http.StatusUnauthorized)
		if msg := r.errorMessage(t); !strings.Contains(msg, "x-functions-key") {
			t.Errorf("401 message %q does not say how to authenticate", msg)
		}
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: %v", r.header)
		}
	}
	if n := e.keyCount(); n != 0 {
		t.Fatalf("%d keys written by unauthenticated requests", n)
	}
	e.wantStartCount("hello", "invalid", 0)

	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		e.do("GET", p, "").want(t, http.StatusOK)
	}

	// Each of the three places for a key works.
	r := e.do("POST", "/api/orchestrators/hello/a", "", "Authorization", "Bearer k1").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if strings.Contains(cs.StatusQueryGetURI, "code=") {
		t.Errorf("a key sent in a header leaked into the URLs: %+v", cs)
	}
	e.do("GET", BasePath+"/instances/a", "", "x-functions-key", "key-two").want(t, http.StatusAccepted)
	e.do("GET", BasePath+"/instances/a", "", "authorization", "bearer key-two").want(t, http.StatusAccepted)
	e.do("GET", BasePath+"/instances?code=k1", "").want(t, http.StatusOK)
	e.do("GET", "/metrics", "", "Authorization", "Bearer k1").want(t, http.StatusOK)

	// With ?code= the handed-out URLs carry it, so a client that only
	// follows links keeps working.
	r = e.do("POST", "/api/orchestrators/hello/b?code=key-two", "").want(t, http.StatusAccepted)
	r.decode(t, &cs)
	if !strings.HasSuffix(cs.StatusQueryGetURI, "/instances/b?code=key-two") ||
		!strings.HasSuffix(cs.TerminatePostURI, "/terminate?reason={text}&code=key-two") ||
		r.header.Get("Location") != cs.StatusQueryGetURI {
		t.Errorf("URLs with ?code=: %+v, Location %q", cs, r.header.Get("Location"))
	}
	e.get("GET", cs.StatusQueryGetURI).want(t, http.StatusAccepted)
	e.get("POST", strings.Replace(cs.TerminatePostURI, "{text}", "done", 1)).want(t, http.StatusAccepted)
	if st := e.status("b"); st.RuntimeStatus != orchestrator.StatusTerminated || string(st.Output) != `"done"` {
		t.Errorf("terminate through the handed-out URL: %+v", st)
	}
	e.wantStartCount("hello", "started", 2)
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	oc := orchestrator.NewClient(nil, orchestrator.ClientConfig{})
	reg := prometheus.NewRegistry()
	good := func() Config {
		return Config{Client: oc, Function: anyFunction, Gatherer: reg, Registerer: reg}
	}
	for name, mut := range map[string]func(*Config){
		"no client":       func(c *Config) { c.Client = nil },
		"no Function":     func(c *Config) { c.Function = nil },
		"no gatherer":     func(c *Config) { c.Gatherer = nil },
		"no registerer":   func(c *Config) { c.Registerer = nil },
		"empty key":       func(c *Config) { c.APIKeys = []string{"ok", ""} },
		"key with space":  func(c *Config) { c.APIKeys = []string{"a b"} },
		"key with LF":     func(c *Config) { c.APIKeys = []string{"ab\n"} },
		"negative limit":  func(c *Config) { c.MaxPayload = -1 },
		"negative timout": func(c *Config) { c.OperationTimeout = -1 },
	} {
		cfg := good()
		mut(&cfg)
		if h, err := New(cfg); err == nil || h != nil {
			t.Errorf("%s: New = %v, %v; want an error", name, h, err)
		}
	}

	// Two handlers on one registry share the counter.
	if _, err := New(good()); err != nil {
		t.Fatal(err)
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("second handler on the same registry: %v", err)
	}
	// A different collector under the same name is an error, not a panic.
	other := prometheus.NewRegistry()
	other.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "soloist_start_requests_total", Help: "x"}))
	cfg := good()
	cfg.Registerer = other
	if _, err := New(cfg); err == nil {
		t.Error("New registered over a different collector")
	}
}
