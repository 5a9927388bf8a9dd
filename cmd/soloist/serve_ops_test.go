package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// httpDo sends one request and returns the status code and body.
func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logLine is a JSON log line of serve.
type logLine struct {
	Level, Msg, Error, Node string
	Endpoints               []string
	UnreachableFor          string `json:"unreachable_for"`
}

// findLog waits up to d for a log line that match accepts.
func (p *serveProc) findLog(d time.Duration, match func(logLine) bool) (logLine, bool) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range p.logLines() {
			var e logLine
			if json.Unmarshal([]byte(l), &e) == nil && match(e) {
				return e, true
			}
		}
		if time.Now().After(deadline) {
			return logLine{}, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --max-payload is checked against etcd's limits at startup, and the
// limits reach both the embedded etcd and the client: a 1.4 MB
// --max-payload fits etcd's defaults and such a start runs; 8 MiB does not
// and serve refuses to start; with --etcd-max-request-bytes raised, a start
// larger than the etcd client's default send limit (2 MiB) goes through.
func TestServeEtcdLimits(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	run := func(t *testing.T, srv *serveProc, id string, inputBytes int) {
		t.Helper()
		srv.waitReady()
		in := `{"pad":"` + strings.Repeat("x", inputBytes) + `"}`
		if code, body := httpDo(t, "POST", srv.url+"/api/orchestrators/HelloCities/"+id, in); code != http.StatusAccepted {
			t.Fatalf("start with a %d-byte input: %d %.300s", len(in), code, body)
		}
		out, errOut, code := srv.cli(nil, "wait", id, "--timeout", "60s")
		if code != 0 {
			t.Fatalf("wait: exit %d %s", code, errOut)
		}
		var st struct {
			RuntimeStatus string
			Input         struct{ Pad string }
		}
		decode(t, out, &st)
		if st.RuntimeStatus != "Completed" || len(st.Input.Pad) != inputBytes {
			t.Fatalf("instance %s: %s with an input of %d bytes, want Completed with %d", id, st.RuntimeStatus, len(st.Input.Pad), inputBytes)
		}
		if code := srv.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		checkLogs(t, srv.logLines())
	}
	t.Run("1.4MB fits the defaults", func(t *testing.T) {
		t.Parallel()
		if most := orchestrator.MaxPayloadFor(orchestrator.Limits{}); most < 1_400_000 {
			t.Fatalf("etcd's default limits fit payloads of %d bytes, less than 1.4 MB", most)
		}
		run(t, startServe(t, "--demo", "--max-payload", "1.4MB"), "big-1", 1_300_000)
	})
	t.Run("8MiB does not", func(t *testing.T) {
		t.Parallel()
		srv := startServe(t, "--demo", "--max-payload", "8MiB")
		if code := srv.exitCode(30 * time.Second); code != exitUsage {
			t.Fatalf("exit %d, want %d (usage)", code, exitUsage)
		}
		for _, w := range []string{"soloist serve: --max-payload 8388608 bytes cannot fit etcd's request limit of 1572864 bytes",
			fmt.Sprintf("the largest payload that fits is %d bytes", orchestrator.MaxPayloadFor(orchestrator.Limits{})), "raise etcd's --max-request-bytes and --etcd-max-request-bytes together"} {
			if !strings.Contains(srv.logs.String(), w) {
				t.Errorf("output lacks %q:\n%s", w, srv.logs.String())
			}
		}
	})
	t.Run("raised limits", func(t *testing.T) {
		t.Parallel()
		run(t, startServe(t, "--demo", "--etcd-max-request-bytes", "4MiB", "--max-payload", "3MiB"), "big-2", 2_500_000)
	})
}

// A runner node serves health checks and metrics only and refuses a start
// with a 404 that says where starts go; an api node takes the start and
// runs nothing; the runner on the same etcd runs it.
func TestServeRoles(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	endpoint := startEtcd(t, t.TempDir(), nil)
	metricsAddr := freeAddr(t)
	runner := startServe(t, "--etcd-endpoints", endpoint, "--demo", "--role", "runner", "--node-id", "runner-1", "--metrics-listen", metricsAddr)
	api := startServe(t, "--etcd-endpoints", endpoint, "--demo", "--role", "api", "--node-id", "api-1")
	runner.waitReady()
	api.waitReady()

	for _, r := range []struct{ method, path string }{
		{"POST", "/api/orchestrators/Countdown/role-1"},
		{"POST", "/api/orchestrators/Countdown"},
		{"GET", "/runtime/webhooks/durabletask/instances"},
	} {
		code, body := httpDo(t, r.method, runner.url+r.path, `{"n":1}`)
		var e struct{ Error string }
		if code != http.StatusNotFound || json.Unmarshal([]byte(body), &e) != nil ||
			!strings.Contains(e.Error, "runs instances only (--role runner)") || !strings.Contains(e.Error, "node of --role all or --role api") {
			t.Errorf("runner: %s %s: %d %s", r.method, r.path, code, body)
		}
	}
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		if code, body := httpDo(t, "GET", runner.url+p, ""); code != 200 {
			t.Errorf("runner %s: %d %s", p, code, body)
		}
	}
	for _, u := range []string{runner.url + "/metrics", "http://" + metricsAddr + "/metrics"} {
		if code, body := httpDo(t, "GET", u, ""); code != 200 || !strings.Contains(body, `soloist_instances_held{function="Countdown"} 0`) {
			t.Errorf("runner %s: %d\n%.500s", u, code, body)
		}
	}

	if code, body := httpDo(t, "POST", api.url+"/api/orchestrators/Countdown/role-1", `{"n":1}`); code != http.StatusAccepted {
		t.Fatalf("api: start: %d %s", code, body)
	}
	out, errOut, code := api.cli(nil, "wait", "role-1", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("wait on the api node: exit %d %s %s", code, out, errOut)
	}
	var st struct {
		RuntimeStatus string
		Output        []string
	}
	decode(t, out, &st)
	if st.RuntimeStatus != "Completed" || len(st.Output) != 1 || st.Output[0] != "runner-1" {
		t.Fatalf("role-1: %s, ticks by %v; want Completed, run by runner-1", st.RuntimeStatus, st.Output)
	}
	if _, body := httpDo(t, "GET", api.url+"/metrics", ""); strings.Contains(body, `soloist_orchestrations_completed_total{function="Countdown",status="Completed"} 1`) ||
		!strings.Contains(body, `soloist_start_requests_total{function="Countdown",result="started"} 1`) {
		t.Errorf("api node metrics: it must count the start and complete nothing:\n%.3000s", body)
	}
	for _, p := range []*serveProc{runner, api} {
		if code := p.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		checkLogs(t, p.logLines())
	}
	if _, ok := api.findLog(0, func(e logLine) bool { return e.Msg == "node started" && e.Node == "api-1" }); !ok {
		t.Error("the api node did not log node started with node api-1")
	}
}

// When etcd stops answering after startup, reads fail fast with a 503
// that names the endpoints, serve warns naming them until etcd answers
// again, then says so once, and the node is ready again.
func TestServeEtcdUnreachable(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	endpoint := startEtcd(t, t.TempDir(), nil)
	proxy := leasetest.NewProxy(t, endpoint)
	srv := startServe(t, "--etcd-endpoints", proxy.URL(), "--demo", "--lease-ttl", "4s")
	srv.waitReady()
	if out, errOut, code := srv.cli(nil, "start", "Approval", "cut-1", "--input", `{"timeoutSeconds":600}`); code != 0 {
		t.Fatalf("start: exit %d %s %s", code, out, errOut)
	}
	status := srv.url + "/runtime/webhooks/durabletask/instances/cut-1"
	if code, body := httpDo(t, "GET", status, ""); code != http.StatusAccepted {
		t.Fatalf("status: %d %s", code, body)
	}

	proxy.Blackhole(true, true)
	began := time.Now()
	code, body := httpDo(t, "GET", status, "")
	if took := time.Since(began); code != http.StatusServiceUnavailable || took > 6*time.Second ||
		!strings.Contains(body, "etcd at "+proxy.URL()+" did not answer in time") {
		t.Errorf("status while etcd is cut off: %d after %s: %s", code, took.Round(time.Millisecond), body)
	}
	warn, ok := srv.findLog(20*time.Second, func(e logLine) bool {
		return e.Level == "WARN" && strings.HasPrefix(e.Msg, "etcd does not answer") && len(e.Endpoints) == 1 && e.Endpoints[0] == proxy.URL()
	})
	if !ok {
		t.Fatal("no warning naming the endpoint while etcd was cut off")
	}
	t.Logf("warned: %+v", warn)
	// Every few seconds while it lasts.
	if _, ok := srv.findLog(15*time.Second, func(e logLine) bool {
		return e.Level == "WARN" && strings.HasPrefix(e.Msg, "etcd does not answer") && e.UnreachableFor != warn.UnreachableFor
	}); !ok {
		t.Error("the warning was not repeated while etcd stayed cut off")
	}

	proxy.Heal()
	if _, ok := srv.findLog(30*time.Second, func(e logLine) bool {
		return e.Level == "INFO" && e.Msg == "etcd answers again" && len(e.Endpoints) == 1 && e.Endpoints[0] == proxy.URL() && e.UnreachableFor != ""
	}); !ok {
		t.Fatal("no info line once etcd answered again")
	}
	srv.waitReady()
	if code, body := httpDo(t, "GET", status, ""); code != http.StatusAccepted {
		t.Errorf("status once etcd answers again: %d %s", code, body)
	}
	if code := srv.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := srv.logLines()
	again := 0
	for _, l := range lines {
		if strings.Contains(l, `"msg":"etcd answers again"`) {
			again++
		}
	}
	if again != 1 {
		t.Errorf("%d 'etcd answers again' lines, want 1", again)
	}
	checkLogs(t, lines)
}
