package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// A W3C traceparent of a caller: trace 4bf9..., span 00f0..., sampled.
const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan   = "00f067aa0ba902b7"
	callerParent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

// newTracedEnv is newEnv with a client that traces into an in-memory
// exporter.
func newTracedEnv(t *testing.T) (*env, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := leasetest.Start(t)
	c := orchestrator.NewClient(e.Client(), orchestrator.ClientConfig{Prefix: testPrefix(t), Logger: quiet, TracerProvider: tp})
	return &env{e: e, cli: e.Client(), raw: e.Client(), c: c, keys: c.Keys()}, exp
}

func spansNamed(spans tracetest.SpanStubs, name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attrOf(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, s tracetest.SpanStub, key string, want any) {
	t.Helper()
	v, ok := attrOf(s, key)
	if !ok {
		t.Errorf("span %q has no attribute %s (has %v)", s.Name, key, s.Attributes)
		return
	}
	if got := v.AsInterface(); got != want {
		t.Errorf("span %q: %s = %v (%T), want %v (%T)", s.Name, key, got, got, want, want)
	}
}

// A start with a trace context stores it in the record; the run is a
// child of it, each activity attempt a child of the run (with its attempt
// number, and a failure with its FailureDetails' type and message), and
// the final write a short child span that says the status.
func TestTraceRunContinuesTheStartsTrace(t *testing.T) {
	t.Parallel()
	v, exp := newTracedEnv(t)
	reg := orchestrator.NewRegistry()
	calls := 0
	_ = reg.AddActivity("flaky", func(ctx context.Context, _ json.RawMessage) (any, error) {
		if sc := trace.SpanContextFromContext(ctx); sc.TraceID().String() != callerTrace {
			return nil, errors.New("the activity's context is not in the start's trace: " + sc.TraceID().String())
		}
		calls++
		if calls == 1 {
			return nil, &orchestrator.ApplicationError{Type: "Flaky", Message: "first attempt fails"}
		}
		return "ok", nil
	})
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallActivity("flaky", nil, orchestrator.WithRetry(orchestrator.RetryPolicy{MaxAttempts: 2, FirstInterval: time.Millisecond})).Await(&s)
		return s, err
	})
	r, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "traced",
		Trace: orchestrator.TraceContext{Parent: callerParent, State: "vendor=x"}})
	if err != nil {
		t.Fatal(err)
	}
	var raw struct{ TraceParent, TraceState string }
	if err := json.Unmarshal([]byte(v.record(t, "traced").Value), &raw); err != nil || raw.TraceParent != callerParent || raw.TraceState != "vendor=x" {
		t.Fatalf("record's trace context: %+v (%v); want %s and vendor=x", raw, err, callerParent)
	}
	h := v.hold(t, "traced", r.Status.ExecutionID)
	x, err := v.c.Open(ctxT(t), "traced", r.Status.ExecutionID, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Run(ctxT(t), x); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := v.decode(t, "traced"); st.RuntimeStatus != orchestrator.StatusCompleted {
		t.Fatalf("status %s", st.RuntimeStatus)
	}

	spans := exp.GetSpans()
	runs := spansNamed(spans, "run fn")
	if len(runs) != 1 {
		t.Fatalf("run spans: %d of %v", len(runs), spans)
	}
	run := runs[0]
	if run.SpanContext.TraceID().String() != callerTrace || run.Parent.SpanID().String() != callerSpan || !run.Parent.IsRemote() {
		t.Fatalf("run span: trace %s parent %s (remote %v); want trace %s parent %s", run.SpanContext.TraceID(), run.Parent.SpanID(),
			run.Parent.IsRemote(), callerTrace, callerSpan)
	}
	if run.SpanContext.TraceState().Get("vendor") != "x" {
		t.Errorf("run span's tracestate %q, want the start's vendor=x", run.SpanContext.TraceState())
	}
	wantAttr(t, run, "soloist.instance_id", "traced")
	wantAttr(t, run, "soloist.execution_id", r.Status.ExecutionID)
	wantAttr(t, run, "soloist.function", "fn")
	wantAttr(t, run, "soloist.fencing_token", h.fence.Token)
	wantAttr(t, run, "soloist.runtime_status", "Completed")

	acts := spansNamed(spans, "activity flaky")
	if len(acts) != 2 {
		t.Fatalf("activity spans: %d, want one per attempt", len(acts))
	}
	for i, a := range acts {
		if a.Parent.SpanID() != run.SpanContext.SpanID() || a.SpanContext.TraceID() != run.SpanContext.TraceID() {
			t.Errorf("activity span %d is not a child of the run span", i)
		}
		wantAttr(t, a, "soloist.attempt", int64(i+1))
		wantAttr(t, a, "soloist.activity", "flaky")
	}
	failed := acts[0]
	if failed.Status.Code != codes.Error || failed.Status.Description != "first attempt fails" {
		t.Errorf("failed attempt's status %+v", failed.Status)
	}
	wantAttr(t, failed, "error.type", "Flaky")
	if len(failed.Events) != 1 || failed.Events[0].Name != "exception" {
		t.Fatalf("failed attempt's events %+v, want one exception", failed.Events)
	}
	ev := tracetest.SpanStub{Name: "exception event", Attributes: failed.Events[0].Attributes}
	wantAttr(t, ev, "exception.type", "Flaky")
	wantAttr(t, ev, "exception.message", "first attempt fails")
	if acts[1].Status.Code == codes.Error {
		t.Errorf("the succeeding attempt's status is %+v", acts[1].Status)
	}

	done := spansNamed(spans, "complete fn")
	if len(done) != 1 || done[0].Parent.SpanID() != run.SpanContext.SpanID() {
		t.Fatalf("complete spans %v, want one child of the run span", done)
	}
	wantAttr(t, done[0], "soloist.runtime_status", "Completed")
}

// A Failed execution's run span is an error with the failure.
func TestTraceFailedRun(t *testing.T) {
	t.Parallel()
	v, exp := newTracedEnv(t)
	r := v.start(t, "fails", `null`)
	h := v.hold(t, "fails", r.Status.ExecutionID)
	x, err := v.c.Open(ctxT(t), "fails", r.Status.ExecutionID, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.Run(ctxT(t), x, func(*orchestrator.OrchestrationContext) (any, error) {
		return nil, &orchestrator.ApplicationError{Type: "Nope", Message: "it cannot"}
	}); err != nil {
		t.Fatal(err)
	}
	runs := spansNamed(exp.GetSpans(), "run fn")
	if len(runs) != 1 {
		t.Fatalf("run spans %v", exp.GetSpans())
	}
	if runs[0].Status.Code != codes.Error || runs[0].Status.Description != "it cannot" || runs[0].Parent.IsValid() {
		t.Errorf("run span: status %+v, parent %v; want an error status and no parent (the start had no trace)", runs[0].Status, runs[0].Parent)
	}
	wantAttr(t, runs[0], "soloist.runtime_status", "Failed")
	wantAttr(t, runs[0], "error.type", "Nope")
	if raw := v.record(t, "fails").Value; strings.Contains(raw, "traceParent") {
		t.Errorf("a start without a trace context stored one: %s", raw)
	}
}

// A trace context that is not W3C is refused before anything is written.
func TestTraceContextValidated(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	for _, tc := range []orchestrator.TraceContext{
		{Parent: "not-a-traceparent"},
		{Parent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{State: "vendor=x"},
		{Parent: callerParent, State: strings.Repeat("a", 600)},
	} {
		_, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "bad-trace", Trace: tc})
		if !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("Start with %+v: %v, want a validation error", tc, err)
		}
	}
	if kv := v.record(t, "bad-trace"); kv != nil {
		t.Fatalf("a refused start wrote %v", kv)
	}
}

// With no TracerProvider nothing is recorded, not even by a global
// provider, yet a start's trace context still reaches the run's code (as
// the OpenTelemetry API passes context on without an SDK). Not parallel:
// it sets the global provider.
func TestTraceOffRecordsNothing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	global := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(global)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = global.Shutdown(context.Background())
	})
	v := newEnv(t)
	if _, ok := v.c.TracerProvider().(noop.TracerProvider); !ok {
		t.Fatalf("default TracerProvider is %T, want a no-op one", v.c.TracerProvider())
	}
	r, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "off", Trace: orchestrator.TraceContext{Parent: callerParent}})
	if err != nil {
		t.Fatal(err)
	}
	h := v.hold(t, "off", r.Status.ExecutionID)
	x, err := v.c.Open(ctxT(t), "off", r.Status.ExecutionID, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	var seen orchestrator.TraceContext
	if err := orchestrator.Run(ctxT(t), x, func(ctx *orchestrator.OrchestrationContext) (any, error) {
		seen = orchestrator.TraceContextFrom(ctx.Context())
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen.Parent != callerParent {
		t.Errorf("the run's context carries %q, want the start's %s passed on", seen.Parent, callerParent)
	}
	for _, s := range exp.GetSpans() {
		if s.InstrumentationScope.Name == orchestrator.TracerName {
			t.Errorf("span %q recorded with tracing off", s.Name)
		}
	}
}

// A long tracestate loses its last entries rather than refuse the start.
func TestTraceContextFromTruncatesState(t *testing.T) {
	t.Parallel()
	var members []string
	for i := 0; i < 30; i++ {
		members = append(members, fmt.Sprintf("v%02d=%s", i, strings.Repeat("x", 40)))
	}
	ts, err := trace.ParseTraceState(strings.Join(members, ","))
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceState: ts})
	tc := orchestrator.TraceContextFrom(trace.ContextWithSpanContext(context.Background(), sc))
	if len(tc.State) > 512 || !strings.HasPrefix(tc.State, members[0]+",") || strings.Contains(tc.State, "v29=") {
		t.Fatalf("tracestate of %d bytes: %q", len(tc.State), tc.State)
	}
	v := newEnv(t)
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "long-state", Trace: tc}); err != nil {
		t.Fatalf("Start with the truncated context: %v", err)
	}
}
