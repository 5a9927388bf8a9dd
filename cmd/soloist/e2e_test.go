package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestEndToEnd builds the binary, runs "soloist serve" with an embedded etcd
// and drives it with the CLI verbs, then stops it with SIGTERM.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	dir := t.TempDir()

	pidFile := filepath.Join(dir, "slow.pid")
	// The receiver of an HTTP function: it answers with what it was sent.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"body": json.RawMessage(body), "instance": r.Header.Get("Soloist-Instance-Id"),
			"token": r.Header.Get("Soloist-Fencing-Token"), "team": r.Header.Get("X-Team"),
		})
	}))
	defer hook.Close()
	config := filepath.Join(dir, "soloist.yaml")
	writeFile(t, config, fmt.Sprintf(`functions:
  - name: echo
    exec: ["/bin/sh", "-c", "cat; echo"]
  - name: hook
    http: {url: %q, headers: {X-Team: search}}
  - name: slow
    exec: ['/bin/sh', '-c', 'echo $$ > %s; exec sleep 60']
    timeout: 2m
schedules:
  - name: ticker
    cron: "@every 1s"
    function: echo
    input: {from: schedule, n: 1}
    timeZone: Asia/Tokyo
`, hook.URL+"/reindex", pidFile))

	const shutdownTimeout = 10 * time.Second
	srv := startServe(t, "--demo", "--config", config, "--shutdown-timeout", shutdownTimeout.String(), "--log-level", "debug")
	srv.waitReady()
	server := srv.url
	cli := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		return srv.cli(nil, args...)
	}
	mustOK := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(args...)
		if code != 0 {
			t.Fatalf("soloist %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	mustFail := func(wantErr string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(args...)
		if code != 1 || !strings.Contains(errOut, wantErr) || !strings.HasPrefix(errOut, "soloist: ") {
			t.Fatalf("soloist %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(args, " "), code, errOut, wantErr)
		}
		return out
	}

	// The demo, start to finish.
	var started struct {
		ID                string `json:"id"`
		StatusQueryGetURI string `json:"statusQueryGetUri"`
	}
	decode(t, mustOK("start", "HelloCities", "hello-1", "--input", "{}"), &started)
	if started.ID != "hello-1" || !strings.HasSuffix(started.StatusQueryGetURI, "/instances/hello-1") {
		t.Fatalf("start printed %+v", started)
	}
	st := decodeStatus(t, mustOK("wait", "hello-1", "--timeout", "30s"))
	if st.RuntimeStatus != "Completed" || !jsonEqual(st.Output, `["Hello Tokyo!","Hello Seattle!","Hello London!"]`) {
		t.Fatalf("wait: %s with output %s", st.RuntimeStatus, st.Output)
	}
	mustFail("An instance with ID 'hello-1' already exists. (HTTP 409)", "start", "HelloCities", "hello-1", "--reuse-policy", "reject")
	if st := decodeStatus(t, mustOK("status", "hello-1")); st.RuntimeStatus != "Completed" || st.InstanceID != "hello-1" {
		t.Fatalf("status: %+v", st)
	}
	var list []instanceStatus
	decode(t, mustOK("list", "--status", "Completed", "--prefix", "hello-"), &list)
	if len(list) != 1 || list[0].InstanceID != "hello-1" {
		t.Fatalf("list printed %+v, want hello-1 alone", list)
	}
	mustFail("(HTTP 410)", "terminate", "hello-1")
	mustFail("(HTTP 404)", "start", "NoSuchFunction", "x-1")

	// A generated ID: 32 hex characters.
	decode(t, mustOK("start", "HelloCities"), &started)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(started.ID) {
		t.Fatalf("generated ID %q", started.ID)
	}

	// An exec function from the config file: its output is its input.
	input := `{"a":[1,2,"x"],"b":{"c":null}}`
	mustOK("start", "echo", "echo-1", "--input", input, "--server", server)
	if st := decodeStatus(t, mustOK("wait", "echo-1", "--timeout", "30s")); !jsonEqual(st.Output, input) {
		t.Fatalf("echo output %s, want %s", st.Output, input)
	}

	// An HTTP function gets the input as its body and the Soloist headers.
	mustOK("start", "hook", "hook-1", "--input", `{"full":true}`, "--server", server)
	hookSt := decodeStatus(t, mustOK("wait", "hook-1", "--timeout", "30s"))
	var got struct {
		Body     json.RawMessage `json:"body"`
		Instance string          `json:"instance"`
		Token    string          `json:"token"`
		Team     string          `json:"team"`
	}
	if err := json.Unmarshal(hookSt.Output, &got); err != nil || !jsonEqual(got.Body, `{"full":true}`) ||
		got.Instance != "hook-1" || got.Token == "" || got.Token == "0" || got.Team != "search" {
		t.Fatalf("http function output %s (%v)", hookSt.Output, err)
	}

	// A long exec function: a second start is refused while it runs, and a
	// terminate kills its process.
	mustOK("start", "slow", "slow-1")
	mustFail("already exists. (HTTP 409)", "start", "slow", "slow-1")
	pid := waitPIDFile(t, pidFile)
	mustOK("terminate", "slow-1", "--reason", "e2e test")
	out := mustFail("instance 'slow-1' is Terminated", "wait", "slow-1", "--timeout", "30s")
	if st := decodeStatus(t, out); st.RuntimeStatus != "Terminated" {
		t.Fatalf("wait printed %s, want the Terminated status", out)
	}
	waitProcessGone(t, pid, 15*time.Second)

	// The schedule starts echo under its name every second.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, _, code := cli("status", "ticker"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the schedule did not start ticker within 15s")
		}
	}
	if st := decodeStatus(t, mustOK("wait", "ticker", "--timeout", "30s")); st.Name != "echo" || !jsonEqual(st.Output, `{"from":"schedule","n":1}`) {
		t.Fatalf("scheduled run: %+v", st)
	}

	// Purge, version, metrics.
	if out := mustOK("purge", "hello-1"); !jsonEqual(json.RawMessage(out), `{"instancesDeleted":1}`) {
		t.Fatalf("purge printed %s", out)
	}
	mustFail("(HTTP 404)", "status", "hello-1")
	if out := mustOK("version"); !strings.HasPrefix(out, "soloist ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version printed %q", out)
	}
	resp, err := http.Get(server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	_, _ = metrics.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(metrics.String(), `soloist_build_info{goversion="go1.`) {
		t.Fatalf("/metrics has no soloist_build_info:\n%.2000s", metrics.String())
	}
	if m := regexp.MustCompile(`soloist_schedule_ticks_total\{result="started",schedule="ticker"\} ([0-9]+)`).FindStringSubmatch(metrics.String()); m == nil || m[1] == "0" {
		t.Fatalf("/metrics counts no started tick of ticker: %v", m)
	}

	// SIGTERM: exit 0 within --shutdown-timeout.
	start := time.Now()
	if code := srv.stop(shutdownTimeout + 5*time.Second); code != 0 {
		t.Fatalf("serve exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("serve stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	checkLogs(t, srv.logLines())
}

type instanceStatus struct {
	Name          string          `json:"name"`
	InstanceID    string          `json:"instanceId"`
	RuntimeStatus string          `json:"runtimeStatus"`
	Output        json.RawMessage `json:"output"`
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("not the JSON of %T: %v\n%s", v, err, s)
	}
}

func decodeStatus(t *testing.T, s string) instanceStatus {
	t.Helper()
	var st instanceStatus
	decode(t, s, &st)
	return st
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cleanEnv is the test's environment without SOLOIST_* and OTEL_*
// variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOLOIST_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitPIDFile(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if err == nil && bytes.HasSuffix(b, []byte("\n")) {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("pid file %q: %v", b, err)
			}
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the slow function did not start within 30s")
	return 0
}

// waitProcessGone waits until pid is gone or a zombie (a container's PID 1
// may never reap it).
func waitProcessGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(b, ')'); err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d of the terminated instance still runs after %s", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
