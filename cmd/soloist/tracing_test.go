package main

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
)

// gotSpan is a span as a fake OTLP receiver got it.
type gotSpan struct {
	name, traceID, spanID, parentID string
	service, instance               string // the resource's service.name and service.instance.id
	attrs                           map[string]string
}

// otlpReceiver is a fake OTLP/HTTP collector: it decodes what is posted
// to /v1/traces.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []gotSpan
	bad   []string // requests it could not take
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		r.mu.Lock()
		defer r.mu.Unlock()
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &msg) != nil {
			r.bad = append(r.bad, req.Method+" "+req.URL.Path+" "+req.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, rs := range msg.ResourceSpans {
			res := map[string]string{}
			for _, a := range rs.Resource.GetAttributes() {
				res[a.Key] = a.Value.GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					g := gotSpan{name: s.Name, traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId),
						parentID: hex.EncodeToString(s.ParentSpanId), service: res["service.name"], instance: res["service.instance.id"],
						attrs: map[string]string{}}
					for _, a := range s.Attributes {
						v := a.Value.GetStringValue()
						if v == "" {
							v = strings.Trim(a.Value.String(), " ")
						}
						g.attrs[a.Key] = v
					}
					r.spans = append(r.spans, g)
				}
			}
		}
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) got() ([]gotSpan, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gotSpan(nil), r.spans...), append([]string(nil), r.bad...)
}

// Without OTEL_TRACES_EXPORTER (or with "none", or OTEL_SDK_DISABLED)
// tracing is off: a no-op provider, no exporter, no goroutine. Not
// parallel: it sets OTEL_* variables.
func TestTracingOffByDefault(t *testing.T) {
	for _, env := range [][]string{
		{"OTEL_TRACES_EXPORTER", ""},
		{"OTEL_TRACES_EXPORTER", "none"},
		{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_SDK_DISABLED", "true"},
	} {
		for i := 0; i+1 < len(env); i += 2 {
			t.Setenv(env[i], env[i+1])
		}
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1") // would be used if anything exported
		before := goleak.IgnoreCurrent()
		tr, err := setupTracing(context.Background(), "node-1", "v1", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if _, ok := tr.provider.(noop.TracerProvider); !ok || tr.sdk != nil || tr.exporter != "" {
			t.Errorf("%v: provider %T, exporter %q; want a no-op provider and no exporter", env, tr.provider, tr.exporter)
		}
		_, span := tr.provider.Tracer("t").Start(context.Background(), "x")
		span.End()
		if err := goleak.Find(before); err != nil {
			t.Errorf("%v: tracing off added goroutines: %v", env, err)
		}
		tr.shutdown(context.Background(), slog.New(slog.DiscardHandler))
		t.Setenv("OTEL_SDK_DISABLED", "")
	}
}

// OTEL_TRACES_EXPORTER=otlp sends to OTEL_EXPORTER_OTLP_ENDPOINT (here
// over http/protobuf), with OTEL_SERVICE_NAME and the node ID in the
// resource, and the shutdown flushes what is pending. Not parallel.
func TestTracingOTLPEndpoint(t *testing.T) {
	recv := newOTLPReceiver(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "soloist-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000") // only the shutdown exports
	tr, err := setupTracing(context.Background(), "node-7", "v1.2.3", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if tr.exporter != "otlp" || tr.sdk == nil {
		t.Fatalf("exporter %q", tr.exporter)
	}
	_, span := tr.provider.Tracer("t").Start(context.Background(), "flushed at shutdown")
	span.End()
	if spans, _ := recv.got(); len(spans) != 0 {
		t.Fatalf("exported before the shutdown: %v", spans)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr.shutdown(ctx, slog.New(slog.DiscardHandler))
	spans, bad := recv.got()
	if len(bad) > 0 || len(spans) != 1 {
		t.Fatalf("the receiver got %v (refused %v), want the one span", spans, bad)
	}
	if s := spans[0]; s.name != "flushed at shutdown" || s.service != "soloist-test" || s.instance != "node-7" {
		t.Errorf("span %+v", s)
	}
}

// Bad OTEL_* values stop serve with what to use.
func TestTracingBadVariables(t *testing.T) {
	for _, c := range []struct{ key, value, want string }{
		{"OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER=zipkin"},
		{"OTEL_TRACES_EXPORTER", "otlp,console", "give one exporter"},
		{"OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER=sometimes: use one of always_on"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "OTEL_TRACES_EXPORTER=otlp: invalid OTLP protocol"},
	} {
		t.Run(c.key+"="+c.value, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
			t.Setenv(c.key, c.value)
			_, err := setupTracing(context.Background(), "n", "v", slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// soloist serve with OTEL_* variables exports the spans of an HTTP start
// of HelloCities to the endpoint: the start in the caller's trace, the run
// a child of it, the activities and the final write children of the run,
// flushed when the node stops.
func TestServeExportsSpans(t *testing.T) {
	t.Parallel()
	recv := newOTLPReceiver(t)
	srv := startServeEnv(t, []string{
		"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.srv.URL, "OTEL_SERVICE_NAME=soloist-e2e",
	}, "--demo", "--node-id", "traced-node")
	srv.waitReady()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, srv.url+"/api/orchestrators/HelloCities/traced-1", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start: %d", resp.StatusCode)
	}
	if _, errOut, code := srv.cli(nil, "wait", "traced-1", "--timeout", "30s"); code != 0 {
		t.Fatalf("wait: exit %d: %s", code, errOut)
	}
	if code := srv.stop(30 * time.Second); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	spans, bad := recv.got()
	if len(bad) > 0 {
		t.Fatalf("the receiver refused %v", bad)
	}
	byName := map[string][]gotSpan{}
	for _, s := range spans {
		if s.traceID == traceID {
			byName[s.name] = append(byName[s.name], s)
		}
		if s.service != "soloist-e2e" || s.instance != "traced-node" {
			t.Errorf("span %q of service %q instance %q", s.name, s.service, s.instance)
		}
	}
	one := func(name string) gotSpan {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("%d spans %q in the trace, want 1; got %+v", len(byName[name]), name, spans)
		}
		return byName[name][0]
	}
	start := one("POST /api/orchestrators/{functionName}/{instanceId...}")
	run := one("run HelloCities")
	done := one("complete HelloCities")
	if start.parentID != "00f067aa0ba902b7" || run.parentID != start.spanID || done.parentID != run.spanID {
		t.Errorf("parents: start %s, run %s (start %s), complete %s (run %s)", start.parentID, run.parentID, start.spanID, done.parentID, run.spanID)
	}
	if acts := byName["activity SayHello"]; len(acts) != 3 {
		t.Errorf("%d activity spans, want 3", len(acts))
	} else {
		for _, a := range acts {
			if a.parentID != run.spanID {
				t.Errorf("activity span's parent %s, want the run %s", a.parentID, run.spanID)
			}
		}
	}
}
