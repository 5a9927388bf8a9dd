package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/execfn"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// tracedCluster is a one-node cluster and its HTTP API whose client traces
// into an in-memory exporter.
type tracedCluster struct {
	*cluster
	exp    *tracetest.InMemoryExporter
	client *orchestrator.Client
	api    *httptest.Server
}

func newTracedCluster(t *testing.T, reg *orchestrator.Registry) *tracedCluster {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c := newCluster(t, 0, 2*time.Second, reg)
	client := orchestrator.NewClient(c.e.Client(), orchestrator.ClientConfig{Prefix: c.prefix, TracerProvider: tp})
	c.configure = func(cfg *scheduler.Config) { cfg.Client = client }
	c.addNode("node-0")
	preg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Config{
		Client: client, Gatherer: preg, Registerer: preg,
		Function: httpapi.RegistryFunction(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &tracedCluster{cluster: c, exp: exp, client: client, api: srv}
}

// start posts a start of fn as id with a traceparent header.
func (c *tracedCluster) start(fn, id, traceparent string) {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.api.URL+"/api/orchestrators/"+fn+"/"+id, strings.NewReader("null"))
	req.Header.Set("traceparent", traceparent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("start %s: %d %s", id, resp.StatusCode, body)
	}
}

// span waits for the one ended span named name whose instance attribute
// (soloist.instance_id, or soloist.child_instance_id) is id.
func (c *tracedCluster) span(name, id string) tracetest.SpanStub {
	c.t.Helper()
	var found []tracetest.SpanStub
	eventually(c.t, 10*time.Second, fmt.Sprintf("span %q of %s", name, id), func() bool {
		found = c.spans(name, id)
		return len(found) > 0
	})
	if len(found) != 1 {
		c.t.Fatalf("%d spans %q of %s, want 1", len(found), name, id)
	}
	return found[0]
}

func (c *tracedCluster) spans(name, id string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range c.exp.GetSpans() {
		if s.Name != name {
			continue
		}
		for _, a := range s.Attributes {
			if a.Key == orchestrator.AttrInstanceID && a.Value.AsString() == id {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() || child.SpanContext.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("span %q (trace %s, parent %s) is not a child of %q (trace %s, span %s)", child.Name,
			child.SpanContext.TraceID(), child.Parent.SpanID(), parent.Name, parent.SpanContext.TraceID(), parent.SpanContext.SpanID())
	}
}

const (
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
	traceparent = "00-" + traceID + "-" + callerSpan + "-01"
)

// An HTTP start with a traceparent: its server span is in the caller's
// trace, the run on the node a child of it, each activity a child of the
// run, and the final write a short span with the status.
func TestTraceHTTPStartToRun(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("SayHello", orchestrator.Activity(func(ctx context.Context, city string) (string, error) {
		return "Hello " + city + "!", nil
	}))
	_ = reg.AddOrchestrator("HelloCities", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var out []string
		for _, city := range []string{"Tokyo", "Seattle", "London"} {
			var s string
			if err := ctx.CallActivity("SayHello", city).Await(&s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	})
	c := newTracedCluster(t, reg)
	c.start("HelloCities", "hello-1", traceparent)
	waitStatus(t, c.client, "hello-1", orchestrator.StatusCompleted, 10*time.Second)

	start := c.span("POST /api/orchestrators/{functionName}/{instanceId...}", "hello-1")
	if start.SpanContext.TraceID().String() != traceID || start.Parent.SpanID().String() != callerSpan || start.SpanKind != trace.SpanKindServer {
		t.Fatalf("start span: trace %s parent %s kind %s; want trace %s, parent %s, server", start.SpanContext.TraceID(),
			start.Parent.SpanID(), start.SpanKind, traceID, callerSpan)
	}
	if got := attr(start, "http.response.status_code"); got != "202" {
		t.Errorf("start span's status code %q", got)
	}
	run := c.span("run HelloCities", "hello-1")
	childOf(t, run, start)
	for key, want := range map[string]string{
		"soloist.run.reason": "start", "soloist.function": "HelloCities", "soloist.runtime_status": "Completed",
		"soloist.execution_id": attr(start, "soloist.execution_id"),
	} {
		if got := attr(run, key); got != want || want == "" {
			t.Errorf("run span: %s = %q, want %q", key, got, want)
		}
	}
	if attr(run, "soloist.fencing_token") == "" || attr(run, "soloist.fencing_token") == "0" {
		t.Errorf("run span has no fencing token: %v", run.Attributes)
	}
	acts := c.spans("activity SayHello", "hello-1")
	if len(acts) != 3 {
		t.Fatalf("%d activity spans, want 3", len(acts))
	}
	for _, a := range acts {
		childOf(t, a, run)
		if attr(a, "soloist.attempt") != "1" {
			t.Errorf("activity attempt %q", attr(a, "soloist.attempt"))
		}
	}
	done := c.span("complete HelloCities", "hello-1")
	childOf(t, done, run)
	if attr(done, "soloist.runtime_status") != "Completed" {
		t.Errorf("complete span: %v", done.Attributes)
	}
}

// A sub-orchestration's start is a child span of the parent's run, and the
// child's run a child of that start, on whichever node it runs.
func TestTraceSubOrchestration(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Child", func(ctx *orchestrator.OrchestrationContext) (any, error) { return "child done", nil })
	_ = reg.AddOrchestrator("Parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallSubOrchestrator("Child", orchestrator.WithSubOrchestrationInstanceID("the-child")).Await(&s)
		return s, err
	})
	c := newTracedCluster(t, reg)
	c.start("Parent", "parent-1", traceparent)
	waitStatus(t, c.client, "parent-1", orchestrator.StatusCompleted, 10*time.Second)

	run := c.span("run Parent", "parent-1")
	sub := c.span("start sub-orchestration Child", "parent-1")
	childOf(t, sub, run)
	if attr(sub, "soloist.child_instance_id") != "the-child" {
		t.Errorf("sub-orchestration start span: %v", sub.Attributes)
	}
	childOf(t, c.span("run Child", "the-child"), sub)
}

// Exec functions get TRACEPARENT, HTTP functions the traceparent header:
// the context of their attempt's span, a child of the run's, in the
// start's trace.
func TestTraceReachesFunctions(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got http.Header
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		_, _ = io.WriteString(w, `"ok"`)
	}))
	defer hook.Close()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("env", execfn.New([]string{"sh", "-c", `echo "$TRACEPARENT"`}, execfn.Options{}))
	hookFn, err := httpfn.New(httpfn.Spec{URL: hook.URL}, httpfn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = reg.AddOrchestrator("hook", hookFn)
	c := newTracedCluster(t, reg)

	c.start("env", "env-1", traceparent)
	st := waitStatus(t, c.client, "env-1", orchestrator.StatusCompleted, 10*time.Second)
	var seen string
	if err := json.Unmarshal(st.Output, &seen); err != nil {
		t.Fatalf("exec output %s: %v", st.Output, err)
	}
	execSpan := c.span("exec env", "env-1")
	childOf(t, execSpan, c.span("run env", "env-1"))
	if want := "00-" + traceID + "-" + execSpan.SpanContext.SpanID().String() + "-01"; seen != want {
		t.Errorf("the exec program saw TRACEPARENT=%q, want %q (its attempt's span)", seen, want)
	}
	if attr(execSpan, "soloist.attempt") != "1" || attr(execSpan, "process.executable.name") != "sh" {
		t.Errorf("exec span: %v", execSpan.Attributes)
	}

	c.start("hook", "hook-1", traceparent)
	waitStatus(t, c.client, "hook-1", orchestrator.StatusCompleted, 10*time.Second)
	call := c.span("POST", "hook-1")
	childOf(t, call, c.span("run hook", "hook-1"))
	mu.Lock()
	defer mu.Unlock()
	if want := "00-" + traceID + "-" + call.SpanContext.SpanID().String() + "-01"; got.Get("traceparent") != want {
		t.Errorf("the HTTP function got traceparent %q, want %q (its attempt's span)", got.Get("traceparent"), want)
	}
	if call.SpanKind != trace.SpanKindClient || attr(call, "http.response.status_code") != "200" {
		t.Errorf("HTTP call span: kind %s, %v", call.SpanKind, call.Attributes)
	}
}
