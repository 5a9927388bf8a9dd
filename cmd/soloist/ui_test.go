package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/soloist-dev/soloist/lease/leasetest"
)

// --ui (default on) mounts the dashboard at /ui/, --ui=false and --role
// runner leave it out, and --ui-read-only refuses its action routes.
func TestWireDashboardFlags(t *testing.T) {
	t.Parallel()
	etcd := leasetest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	get := func(h http.Handler, method, path string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"action":"purge","ids":["x"]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		args        []string
		shell, bulk int
	}{
		{nil, 200, 200}, // the bulk purge of an unknown instance: 200, its result lists the failure
		{[]string{"--ui=false"}, 404, 404},
		{[]string{"--ui-read-only"}, 200, 403},
		{[]string{"--role", "runner"}, 404, 404},
	} {
		o, err := parseServe(append([]string{"--demo", "--node-id", "n1", "--role", "api"}, c.args...), mapEnv())
		if err != nil {
			t.Fatal(err)
		}
		reg, schedules, err := buildRegistry(o, log)
		if err != nil {
			t.Fatal(err)
		}
		metrics := newMetricsRegistry(buildInfo{Version: "v1"})
		_, h, err := wire(o, parts{etcd: etcd.Client(), registry: reg, schedules: schedules, metrics: metrics, log: log})
		if err != nil {
			t.Fatal(err)
		}
		code, body := get(h, "GET", "/ui/")
		if code != c.shell || (code == 200 && !strings.Contains(body, `id="login"`)) {
			t.Errorf("%v: GET /ui/ = %d, want %d\n%.200s", c.args, code, c.shell, body)
		}
		code, body = get(h, "POST", "/ui/api/bulk")
		want := c.bulk
		if code != want {
			t.Errorf("%v: POST /ui/api/bulk = %d, want %d: %s", c.args, code, want, body)
		}
		if code, _ := get(h, "GET", "/livez"); code != 200 {
			t.Errorf("%v: /livez = %d beside the dashboard", c.args, code)
		}
	}
}
