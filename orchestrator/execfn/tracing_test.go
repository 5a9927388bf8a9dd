package execfn

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Each attempt is a span, a child of the caller's, and the program gets
// that span's context as TRACEPARENT (with TRACESTATE); a failed attempt's
// span has the exit code and the failure. Not parallel: it sets the
// process's own TRACEPARENT, which a program must not inherit.
func TestTraceEnv(t *testing.T) {
	t.Setenv("TRACEPARENT", "00-11111111111111111111111111111111-2222222222222222-01")
	t.Setenv("TRACESTATE", "node=own")
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ts, _ := trace.ParseTraceState("vendor=x")
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 1}, SpanID: trace.SpanID{0x00, 0xf0, 1}, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})
	ctx, run := tp.Tracer("test").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "run")
	defer run.End()

	out, err := Run(ctx, sh(`echo "$TRACEPARENT $TRACESTATE"`), testInv(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	_ = json.Unmarshal(out, &seen)
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "exec job" || spans[0].Parent.SpanID() != run.SpanContext().SpanID() {
		t.Fatalf("spans %v, want one exec span, a child of the run", spans)
	}
	want := "00-" + parent.TraceID().String() + "-" + spans[0].SpanContext.SpanID().String() + "-01 vendor=x"
	if seen != want {
		t.Fatalf("the program saw %q, want %q", seen, want)
	}

	// Without a trace context the program gets none, not the node's own.
	out, err = Run(context.Background(), sh(`echo "[$TRACEPARENT][$TRACESTATE]"`), testInv(), Options{})
	if err != nil || !strings.Contains(string(out), "[][]") {
		t.Fatalf("without a trace context: %s, %v", out, err)
	}

	exp.Reset()
	_, err = Run(ctx, sh(`echo broken >&2; exit 3`), testInv(), Options{Retry: Retry{MaxAttempts: 2}})
	if err == nil {
		t.Fatal("exit 3 succeeded")
	}
	spans = exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans for 2 attempts", len(spans))
	}
	for i, s := range spans {
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if attrs["soloist.attempt"] != string(rune('1'+i)) || attrs["process.exit.code"] != "3" || attrs["error.type"] != "ExitError" ||
			s.Status.Code != codes.Error || !strings.Contains(s.Status.Description, "exited with code 3") {
			t.Errorf("attempt %d's span: %v, status %+v", i+1, attrs, s.Status)
		}
	}
}
