package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestStatusCode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		code int
	}{
		{nil, 200},
		{orchestrator.ErrInvalidInput, 400},
		{fmt.Errorf("wrapped: %w", orchestrator.ErrInvalidInstanceID), 400},
		{orchestrator.ValidateInstanceID("@x"), 400},
		{&orchestrator.ValidationError{Field: "top", Reason: "x"}, 400},
		{ErrUnauthorized, 401},
		{orchestrator.ErrUnknownFunction, 404},
		{fmt.Errorf("%w: 'x'", orchestrator.ErrInstanceNotFound), 404},
		{&orchestrator.ExistsError{Status: &orchestrator.Status{InstanceID: "x"}}, 409},
		{orchestrator.ErrInstanceActive, 409},
		{&orchestrator.TerminalError{InstanceID: "x", Status: orchestrator.StatusCompleted}, 410},
		{fmt.Errorf("%w: big", orchestrator.ErrPayloadTooLarge), 413},
		{orchestrator.ClassifyError(rpctypes.ErrRequestTooLarge), 413},
		{orchestrator.ClassifyError(rpctypes.ErrTooManyOps), 413},
		{orchestrator.ClassifyError(rpctypes.ErrNoSpace), 507},
		{orchestrator.ClassifyError(rpctypes.ErrPermissionDenied), 503},
		{orchestrator.ClassifyError(rpctypes.ErrAuthFailed), 503},
		{fmt.Errorf("start of 'x' was not written: %w", orchestrator.ErrNoSpace), 507},
		{fmt.Errorf("%w: %w", orchestrator.ErrUnavailable, context.Canceled), 503},
		{context.DeadlineExceeded, 503},
		{errors.New("something else"), 500},
		{orchestrator.ErrFenced, 500},
	} {
		if got := StatusCode(c.err); got != c.code {
			t.Errorf("StatusCode(%v) = %d, want %d", c.err, got, c.code)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		r := e.do("GET", p, "").want(t, http.StatusOK)
		var body map[string]string
		r.decode(t, &body)
		if body["status"] != "ok" {
			t.Errorf("%s body %s", p, r.body)
		}
	}
	e.setReady(errDraining)
	for _, p := range []string{"/readyz", "/healthz"} {
		r := e.do("GET", p, "").want(t, http.StatusServiceUnavailable)
		var body map[string]string
		r.decode(t, &body)
		if body["error"] != errDraining.Error() {
			t.Errorf("%s body %s, want the Ready error", p, r.body)
		}
	}
	e.do("GET", "/livez", "").want(t, http.StatusOK)
	e.setReady(nil)
	e.do("GET", "/readyz", "").want(t, http.StatusOK)
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("GET", "/no/such/route", "").want(t, http.StatusNotFound)
	if msg := r.errorMessage(t); !strings.Contains(msg, "/no/such/route") {
		t.Errorf("404 message %q", msg)
	}
	e.do("GET", BasePath+"/instances/x/bogus", "").want(t, http.StatusNotFound).errorMessage(t)

	for _, c := range []struct{ method, path, allow string }{
		{"PUT", BasePath + "/instances/x", "DELETE"},
		{"GET", "/api/orchestrators/hello", "POST"},
		{"GET", BasePath + "/instances/x/terminate", "POST"},
		{"POST", "/livez", "GET"},
	} {
		r := e.do(c.method, c.path, "").want(t, http.StatusMethodNotAllowed)
		if msg := r.errorMessage(t); !strings.Contains(msg, c.method) {
			t.Errorf("%s %s: 405 message %q", c.method, c.path, msg)
		}
		if !strings.Contains(r.header.Get("Allow"), c.allow) {
			t.Errorf("%s %s: Allow %q, want it to list %s", c.method, c.path, r.header.Get("Allow"), c.allow)
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/secret-id-123", "").want(t, http.StatusAccepted)
	e.do("POST", "/api/orchestrators/unknown-fn-xyz/a", "").want(t, http.StatusNotFound)
	r := e.do("GET", "/metrics", "").want(t, http.StatusOK)
	text := string(r.body)
	for _, want := range []string{
		`soloist_start_requests_total{function="hello",result="started"} 1`,
		`soloist_start_requests_total{function="",result="invalid"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, text)
		}
	}
	for _, leak := range []string{"secret-id-123", "unknown-fn-xyz"} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics carries the caller's string %q", leak)
		}
	}
}

func TestPanicIsA500WithoutStack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.Function = func(string, string) (string, bool) { panic("registry exploded") }
	})
	r := e.do("POST", "/api/orchestrators/hello/x", "").want(t, http.StatusInternalServerError)
	if msg := r.errorMessage(t); strings.Contains(msg, "exploded") {
		t.Errorf("500 message leaks the panic: %q", msg)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "registry exploded") || !strings.Contains(logs, "goroutine") {
		t.Errorf("the panic was not logged at error level with its stack:\n%s", logs)
	}
}

func TestFailHidesInternalErrors(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	h := &handler{log: slog.New(slog.NewTextHandler(logs, nil))}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/x", nil)
	h.fail(w, r, errors.New("dial tcp 10.0.0.7:2379: secret detail"))
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "secret detail") ||
		!strings.Contains(w.Body.String(), `"error":`) {
		t.Errorf("500 response %d %s", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "secret detail") {
		t.Errorf("500 not logged at error level: %s", logs)
	}
}

// noSpace is what a node's Ready returns while etcd has its NOSPACE alarm
// (scheduler.ErrNoSpace matches orchestrator.ErrNoSpace the same way).
type noSpace struct{}

func (noSpace) Error() string        { return "etcd raised its NOSPACE alarm" }
func (noSpace) Is(target error) bool { return target == orchestrator.ErrNoSpace }

// TestNoSpace: while etcd has its NOSPACE alarm, starts and restarts answer
// 507 with what an operator does about it, and so does a write that etcd
// refused with NOSPACE; /readyz answers 503 naming the alarm.
func TestNoSpace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/ns-1", `{}`).want(t, http.StatusAccepted)
	e.setReady(noSpace{})
	for _, r := range []*response{
		e.do("POST", "/api/orchestrators/hello/ns-2", `{}`),
		e.do("POST", BasePath+"/instances/ns-1/restart", ""),
	} {
		r.want(t, http.StatusInsufficientStorage)
		if b := string(r.body); !strings.Contains(b, "NOSPACE") || !strings.Contains(b, "compact") || !strings.Contains(b, "alarm disarm") {
			t.Errorf("507 body %s does not say what to do", b)
		}
		if r.header.Get("Retry-After") == "" {
			t.Errorf("507 without Retry-After")
		}
	}
	if r := e.do("GET", "/readyz", "").want(t, http.StatusServiceUnavailable); !strings.Contains(string(r.body), "NOSPACE") {
		t.Errorf("readyz body %s does not name the alarm", r.body)
	}

	// A write etcd refused: the handler's error path, which also tells the
	// node (StoreRefused) so it turns unready at once.
	var told []error
	h := &handler{log: slog.New(slog.DiscardHandler), refused: func(err error) { told = append(told, err) }}
	w := httptest.NewRecorder()
	refusal := fmt.Errorf("start of 'x' was not written: %w: etcdserver: mvcc: database space exceeded", orchestrator.ErrNoSpace)
	h.fail(w, httptest.NewRequest("POST", "/api/orchestrators/hello/x", nil), refusal)
	if w.Code != http.StatusInsufficientStorage || !strings.Contains(w.Body.String(), "alarm disarm") || !strings.Contains(w.Body.String(), "space exceeded") {
		t.Errorf("fail(NOSPACE) = %d %s, want 507 with the cause and what to do", w.Code, w.Body)
	}
	if len(told) != 1 || told[0] != refusal {
		t.Errorf("StoreRefused heard %v, want the one refusal", told)
	}
	h.fail(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil), fmt.Errorf("%w: gone", orchestrator.ErrUnavailable))
	if len(told) != 1 {
		t.Errorf("StoreRefused heard an unavailable store: %v", told)
	}
}
