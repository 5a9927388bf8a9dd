package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// A health-only handler (a runner node) serves health and metrics, and
// answers every API route with 404 and a message that says where starts go.
func TestHealthOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.HealthOnly = true })
	for _, r := range []struct{ method, path string }{
		{"POST", "/api/orchestrators/hello/h1"},
		{"POST", "/api/orchestrators/hello"},
		{"GET", BasePath + "/instances/h1"},
		{"GET", BasePath + "/instances"},
		{"POST", BasePath + "/instances/h1/terminate"},
		{"GET", "/nowhere"},
	} {
		msg := e.do(r.method, r.path, `{"a":1}`).want(t, http.StatusNotFound).errorMessage(t)
		if msg != DefaultHealthOnlyMessage || !strings.Contains(msg, "runs instances only") || !strings.Contains(msg, "role all or api") {
			t.Errorf("%s %s: message %q", r.method, r.path, msg)
		}
	}
	if n := e.keyCount(); n != 0 {
		t.Errorf("a health-only handler wrote %d keys", n)
	}
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		e.do("GET", p, "").want(t, http.StatusOK)
	}
	r := e.do("GET", "/metrics", "").want(t, http.StatusOK)
	if !strings.Contains(string(r.body), `soloist_http_requests_total{code="404",route="unmatched"} 6`) {
		t.Errorf("/metrics of a health-only handler:\n%s", r.body)
	}
	e.wantStartCount("hello", "started", 0)

	custom := newEnv(t, func(c *Config) { c.HealthOnly, c.HealthOnlyMessage = true, "go to http://api:8080" })
	if msg := custom.do("POST", "/api/orchestrators/hello", "").want(t, http.StatusNotFound).errorMessage(t); msg != "go to http://api:8080" {
		t.Errorf("HealthOnlyMessage not used: %q", msg)
	}
}

// series is one gathered series: a counter's value, or a histogram's
// sample count and sum.
type series struct {
	value float64
	count uint64
	sum   float64
}

// series reads the registry and returns the series of name with exactly
// labels, and whether it exists.
func (e *env) series(name string, labels map[string]string) (series, bool) {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue next
				}
			}
			return series{m.GetCounter().GetValue(), m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()}, true
		}
	}
	return series{}, false
}

// soloist_http_requests_total and soloist_http_request_duration_seconds
// count real requests by mux pattern and code; no instance ID or other
// path reaches a label.
func TestRequestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.APIKeys = []string{"k1"} })
	const id = "metrics-instance-7f3a"
	auth := []string{"Authorization", "Bearer k1"}
	e.do("POST", "/api/orchestrators/hello/"+id, `{"n":1}`, auth...).want(t, http.StatusAccepted)
	e.do("POST", "/api/orchestrators/hello/"+id, `{"n":1}`, auth...).want(t, http.StatusConflict)
	e.do("GET", BasePath+"/instances/"+id, "", auth...).want(t, http.StatusAccepted)
	e.do("GET", BasePath+"/instances/"+url.PathEscape("no-such-"+id), "", auth...).want(t, http.StatusNotFound)
	e.do("GET", BasePath+"/instances/"+id, "").want(t, http.StatusUnauthorized)
	e.do("GET", "/no/route/"+id, "", auth...).want(t, http.StatusNotFound)
	e.do("PUT", BasePath+"/instances/"+id, "", auth...).want(t, http.StatusMethodNotAllowed)
	e.do("GET", "/livez", "").want(t, http.StatusOK)

	const startRoute = "POST /api/orchestrators/{functionName}/{instanceId...}"
	const statusRoute = "GET " + BasePath + "/instances/{id}"
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{startRoute, "202", 1},
		{startRoute, "409", 1},
		{statusRoute, "202", 1},
		{statusRoute, "404", 1},
		{statusRoute, "401", 1},
		{unmatchedRoute, "404", 1},
		{unmatchedRoute, "405", 1},
		{"GET /livez", "200", 1},
	} {
		s, ok := e.series("soloist_http_requests_total", map[string]string{"route": c.route, "code": c.code})
		if !ok || s.value != c.want {
			t.Errorf("soloist_http_requests_total{route=%q,code=%q} = %v (present %v), want %v", c.route, c.code, s.value, ok, c.want)
		}
	}
	for route, want := range map[string]uint64{startRoute: 2, statusRoute: 3, unmatchedRoute: 2} {
		s, ok := e.series("soloist_http_request_duration_seconds", map[string]string{"route": route})
		if !ok || s.count != want || s.sum <= 0 {
			t.Errorf("soloist_http_request_duration_seconds{route=%q}: %+v (present %v), want %d samples", route, s, ok, want)
		}
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "metrics-instance") || strings.Contains(l.GetValue(), "/no/route") {
					t.Errorf("%s has a label from the request's path: %s=%q", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	// The refusal of a start is the normal case of racing replicas: debug.
	logs := e.logs.String()
	if !strings.Contains(logs, `level=DEBUG msg="start refused: instance exists"`) || strings.Contains(logs, `level=INFO msg="start refused`) {
		t.Errorf("a 409 start is not logged at debug level:\n%s", logs)
	}
}
