package httpfn_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator/httpfn"
)

// Each attempt is a client span, a child of the caller's; the request
// carries its context as traceparent (and tracestate), over a configured
// header of that name; a failed attempt's span has the status code.
func TestTraceHeader(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ts, _ := trace.ParseTraceState("vendor=x")
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 2}, SpanID: trace.SpanID{0x00, 0xf0, 2}, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})
	ctx, run := tp.Tracer("test").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "run")
	defer run.End()

	var mu sync.Mutex
	var headers []http.Header
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		n := len(headers)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`"ok"`))
	})
	spec := httpfn.Spec{URL: srv.URL, Headers: map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}}
	if _, err := httpfn.Run(ctx, spec, testInv(), httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 2}}); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 || len(headers) != 2 {
		t.Fatalf("%d spans and %d requests, want 2 of each", len(spans), len(headers))
	}
	for i, s := range spans {
		if s.Name != "POST" || s.SpanKind != trace.SpanKindClient || s.Parent.SpanID() != run.SpanContext().SpanID() {
			t.Errorf("attempt %d's span %q kind %s parent %s", i+1, s.Name, s.SpanKind, s.Parent.SpanID())
		}
		want := "00-" + parent.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if got := headers[i].Get("traceparent"); got != want || headers[i].Get("tracestate") != "vendor=x" {
			t.Errorf("attempt %d sent traceparent %q tracestate %q, want %q and vendor=x", i+1, got, headers[i].Get("tracestate"), want)
		}
	}
	status := func(s tracetest.SpanStub) string {
		for _, a := range s.Attributes {
			if a.Key == "http.response.status_code" {
				return a.Value.Emit()
			}
		}
		return ""
	}
	if status(spans[0]) != "503" || spans[0].Status.Code != codes.Error || status(spans[1]) != "200" || spans[1].Status.Code == codes.Error {
		t.Errorf("spans' status codes %s (%v), %s (%v)", status(spans[0]), spans[0].Status, status(spans[1]), spans[1].Status)
	}
}
