package httpapi

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// A start is a server span: a child of the request's W3C traceparent if
// it has a valid one (else a new trace), with the status code of the
// answer (a 409 is no error of the server's); the instance's record keeps
// the span's context for its runs.
func TestTraceStart(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	etcd := leasetest.Start(t)
	client := orchestrator.NewClient(etcd.Client(), orchestrator.ClientConfig{Prefix: testPrefix, TracerProvider: tp})
	reg := prometheus.NewRegistry()
	h, err := New(Config{Client: client, Function: anyFunction, Gatherer: reg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	e := &env{t: t, srv: srv}

	const traceID, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if r := e.do("POST", "/api/orchestrators/hello/t-1", "", "traceparent", "00-"+traceID+"-"+caller+"-01", "tracestate", "vendor=x"); r.code != 202 {
		t.Fatalf("start: %d %s", r.code, r.body)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("spans %v", spans)
	}
	s := spans[0]
	if s.Name != "POST /api/orchestrators/{functionName}/{instanceId...}" || s.SpanKind != trace.SpanKindServer ||
		s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != caller || s.SpanContext.TraceState().String() != "vendor=x" {
		t.Fatalf("start span %q kind %s trace %s parent %s state %q", s.Name, s.SpanKind, s.SpanContext.TraceID(), s.Parent.SpanID(), s.SpanContext.TraceState())
	}
	attrs := map[string]string{}
	for _, a := range s.Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	st, err := client.Status(context.Background(), "t-1")
	if err != nil {
		t.Fatal(err)
	}
	if attrs["http.response.status_code"] != "202" || attrs["soloist.instance_id"] != "t-1" || attrs["soloist.function"] != "hello" ||
		attrs["soloist.execution_id"] != st.ExecutionID || attrs["http.route"] != "/api/orchestrators/{functionName}/{instanceId...}" {
		t.Errorf("start span's attributes %v", attrs)
	}
	resp, err := etcd.Client().Get(context.Background(), client.Keys().Instance("t-1"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("record: %v", err)
	}
	var rec orchestrator.Record
	_ = json.Unmarshal(resp.Kvs[0].Value, &rec)
	if want := "00-" + traceID + "-" + s.SpanContext.SpanID().String() + "-01"; rec.TraceParent != want || rec.TraceState != "vendor=x" {
		t.Errorf("record's trace context %q %q, want %q vendor=x (the start span's)", rec.TraceParent, rec.TraceState, want)
	}

	exp.Reset()
	if r := e.do("POST", "/api/orchestrators/hello/t-1", "", "traceparent", "00-"+traceID+"-"+caller+"-01"); r.code != 409 {
		t.Fatalf("second start: %d", r.code)
	}
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Status.Code == codes.Error {
		t.Errorf("a 409's span %v is an error, or missing", spans)
	}

	exp.Reset()
	if r := e.do("POST", "/api/orchestrators/hello", "", "traceparent", "garbage"); r.code != 202 {
		t.Fatalf("start with a garbage traceparent: %d %s", r.code, r.body)
	}
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Parent.IsValid() || !spans[0].SpanContext.IsValid() {
		t.Errorf("a garbage traceparent: spans %v, want one root span", spans)
	}
}
