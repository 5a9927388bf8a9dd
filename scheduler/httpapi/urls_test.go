package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
)

// With Config.PublicURL the URLs of answers use it, not the Host header.
func TestPublicURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.PublicURL = "https://soloist.example.com/base/"
		c.APIKeys = []string{"k1"}
	})
	r := e.do("POST", "/api/orchestrators/hello/p1?code=k1", "", "Host", "attacker.example", "X-Forwarded-Proto", "http").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	const base = "https://soloist.example.com/base" + BasePath + "/instances/p1"
	if cs.StatusQueryGetURI != base+"?code=k1" || cs.TerminatePostURI != base+"/terminate?reason={text}&code=k1" || r.header.Get("Location") != cs.StatusQueryGetURI {
		t.Errorf("URLs %+v, Location %q; want them under %s", cs, r.header.Get("Location"), base)
	}
	r = e.do("GET", BasePath+"/instances/p1", "", "Authorization", "Bearer k1").want(t, http.StatusAccepted)
	if loc := r.header.Get("Location"); loc != base {
		t.Errorf("status Location %q, want %s", loc, base)
	}
	r = e.do("POST", "/api/orchestrators/hello/p1?code=k1", "").want(t, http.StatusConflict)
	var conflict ConflictResponse
	r.decode(t, &conflict)
	if conflict.StatusQueryGetURI != base+"?code=k1" {
		t.Errorf("409 statusQueryGetUri %q", conflict.StatusQueryGetURI)
	}
}

// With Config.OmitCodeInURLs a ?code= key is not echoed into the URLs.
func TestOmitCodeInURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.APIKeys = []string{"k1"}
		c.OmitCodeInURLs = true
	})
	r := e.do("POST", "/api/orchestrators/hello/c1?code=k1", "").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	for _, u := range []string{cs.StatusQueryGetURI, cs.SendEventPostURI, cs.TerminatePostURI, cs.PurgeHistoryDeleteURI,
		cs.RestartPostURI, cs.SuspendPostURI, cs.ResumePostURI, r.header.Get("Location")} {
		if strings.Contains(u, "code=") || strings.Contains(u, "k1") {
			t.Errorf("URL %q carries the key", u)
		}
	}
	if cs.StatusQueryGetURI != e.instanceURL("c1") || cs.TerminatePostURI != e.instanceURL("c1")+"/terminate?reason={text}" {
		t.Errorf("URLs %+v", cs)
	}
}

func TestNewRejectsBadPublicURL(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	for _, u := range []string{"soloist.example.com", "ftp://h", "https://h/?x=1", "https://h/#f", "https://user@h"} {
		cfg := Config{Client: orchestrator.NewClient(nil, orchestrator.ClientConfig{}), Function: anyFunction, Gatherer: reg, Registerer: reg, PublicURL: u}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "PublicURL") {
			t.Errorf("PublicURL %q: %v", u, err)
		}
	}
}

// A request without a valid key gets its 401 at once, without the server
// waiting for a body that does not come, and the connection is closed.
func TestUnauthorizedDoesNotWaitForTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.APIKeys = []string{"k1"} })
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 100 bytes announced, 1 sent.
	fmt.Fprintf(conn, "POST /api/orchestrators/hello/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is incomplete: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Fatalf("status %d, close %v; want 401 and Connection: close", resp.StatusCode, resp.Close)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the 401 took %s", d)
	}
	// And the server does not keep the connection to drain the body.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the connection was closed after %s", d)
	}
}

// A scraper that hangs up in the middle of /metrics is not an error.
func TestMetricsClientGoneIsNotAnError(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	for i := range 50 {
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: fmt.Sprintf("g%d", i), Help: "a gauge"}))
	}
	h := MetricsHandler(reg, log)
	h.ServeHTTP(&failingWriter{header: http.Header{}, err: &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}}, httptest.NewRequest("GET", "/metrics", nil))
	if out := logs.String(); strings.Contains(out, "level=ERROR") || !strings.Contains(out, "the client went away") {
		t.Errorf("a broken pipe logged:\n%s", out)
	}
	// Other errors still are.
	logs2 := &syncBuffer{}
	bad := prometheus.NewRegistry()
	bad.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return 1 }))
	bad.MustRegister(brokenCollector{})
	MetricsHandler(bad, slog.New(slog.NewTextHandler(logs2, nil))).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(logs2.String(), "level=ERROR") {
		t.Errorf("a gathering error was not logged at error level:\n%s", logs2.String())
	}
}

type failingWriter struct {
	header http.Header
	err    error
}

func (w *failingWriter) Header() http.Header         { return w.header }
func (w *failingWriter) WriteHeader(int)             {}
func (w *failingWriter) Write(b []byte) (int, error) { return 0, w.err }

type brokenCollector struct{}

var brokenDesc = prometheus.NewDesc("broken", "always fails", nil, nil)

func (brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- brokenDesc }
func (brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(brokenDesc, fmt.Errorf("collector failed"))
}
