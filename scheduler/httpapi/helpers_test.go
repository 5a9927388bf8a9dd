package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

const testPrefix = "/t/"

// testFunction is the registry of the test handlers: "hello" (unversioned)
// and "other", whose versions are v1 and v2 (the default).
func testFunction(name, version string) (string, bool) {
	switch {
	case name == "hello":
		return version, version == ""
	case name == "other" && version == "":
		return "v2", true
	case name == "other":
		return version, version == "v1" || version == "v2"
	}
	return "", false
}

// anyFunction knows every function, unversioned.
func anyFunction(string, string) (string, bool) { return "", true }

// env is one handler on its own embedded etcd, registry and test server.
type env struct {
	t      *testing.T
	etcd   *clientv3.Client
	client *orchestrator.Client
	reg    *prometheus.Registry
	srv    *httptest.Server
	logs   *syncBuffer
	cfg    Config

	mu       sync.Mutex
	notReady error
}

// newEnv starts an etcd and a server whose known functions are "hello" and
// "other". opts may change the Config before New.
func newEnv(t *testing.T, opts ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, logs: &syncBuffer{}}
	etcd := leasetest.Start(t)
	e.etcd = etcd.Client()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.client = orchestrator.NewClient(e.etcd, orchestrator.ClientConfig{Prefix: testPrefix, Logger: log})
	e.reg = prometheus.NewRegistry()
	e.cfg = Config{
		Client:   e.client,
		Function: testFunction,
		Ready: func() error {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.notReady
		},
		Gatherer:   e.reg,
		Registerer: e.reg,
		Logger:     log,
	}
	for _, o := range opts {
		o(&e.cfg)
	}
	h, err := New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close) // runs before the etcd's cleanup
	return e
}

func (e *env) setReady(err error) {
	e.mu.Lock()
	e.notReady = err
	e.mu.Unlock()
}

// response is a read response.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// do sends a request to the test server; path is escaped as it is given
// and headers are name, value pairs.
func (e *env) do(method, path, body string, headers ...string) *response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request %s %s: %v", method, path, err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) *response {
	e.t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body of %s %s: %v", req.Method, req.URL, err)
	}
	return &response{code: resp.StatusCode, header: resp.Header, body: b}
}

// get follows an absolute URL from a response.
func (e *env) get(method, absURL string, headers ...string) *response {
	e.t.Helper()
	if !strings.HasPrefix(absURL, e.srv.URL) {
		e.t.Fatalf("URL %q is not on the test server %s", absURL, e.srv.URL)
	}
	return e.do(method, strings.TrimPrefix(absURL, e.srv.URL), "", headers...)
}

func (r *response) want(t *testing.T, code int) *response {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body: %s", r.code, code, r.body)
	}
	return r
}

func (r *response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json; body: %s", ct, r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorMessage asserts a JSON error body {"error": "..."} and returns the message.
func (r *response) errorMessage(t *testing.T) string {
	t.Helper()
	var e ErrorResponse
	r.decode(t, &e)
	if strings.TrimSpace(e.Error) == "" {
		t.Fatalf("empty error message in %s", r.body)
	}
	if strings.Contains(e.Error, "goroutine ") || strings.Contains(e.Error, ".go:") {
		t.Fatalf("error message leaks a stack: %s", e.Error)
	}
	return e.Error
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// keyCount is the number of keys under the test prefix.
func (e *env) keyCount() int64 {
	e.t.Helper()
	resp, err := e.etcd.Get(e.ctx(), testPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatalf("count keys: %v", err)
	}
	return resp.Count
}

// status reads an instance through the Go client (not the HTTP API).
func (e *env) status(id string) *orchestrator.Status {
	e.t.Helper()
	st, err := e.client.Status(e.ctx(), id)
	if err != nil {
		e.t.Fatalf("status of %q: %v", id, err)
	}
	return st
}

// startCount is soloist_start_requests_total{function,result}, 0 if absent.
func (e *env) startCount(function, result string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "soloist_start_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["function"] == function && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func (e *env) wantStartCount(function, result string, want float64) {
	e.t.Helper()
	if got := e.startCount(function, result); got != want {
		e.t.Errorf("soloist_start_requests_total{function=%q,result=%q} = %v, want %v", function, result, got, want)
	}
}

// instanceURL is the absolute status URL of id on the test server.
func (e *env) instanceURL(escapedID string) string {
	return e.srv.URL + BasePath + "/instances/" + escapedID
}

// syncBuffer is a log sink safe for concurrent writes.
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

var errDraining = errors.New("scheduler: node is draining")
