package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator"
)

// traceStart starts the server span of a start request, with the tracer
// provider of the handler's client (orchestrator.ClientConfig): a child of
// the request's W3C traceparent (and tracestate) if it has a valid one,
// else the root of a new trace. The start passes the span's context to
// the instance (orchestrator.StartOptions.Trace), so its runs continue
// this trace.
func (h *handler) traceStart(ctx context.Context, r *http.Request, fn, id string) (context.Context, trace.Span) {
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
	route := r.Pattern
	if _, path, ok := strings.Cut(route, " "); ok {
		route = path
	}
	name := r.Method
	if route != "" {
		name += " " + route
	}
	return h.client.TracerProvider().Tracer(orchestrator.TracerName).Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
			attribute.String("url.path", r.URL.Path),
			orchestrator.AttrFunction.String(fn),
			orchestrator.AttrInstanceID.String(id),
		))
}

// traceStarted records on a start's span what the start did: the
// execution it started (or found, for useExisting) and the status code of
// the answer. A server span is an error only for a 5xx.
func traceStarted(span trace.Span, res *orchestrator.StartResult, err error) {
	if !span.IsRecording() {
		return
	}
	code := http.StatusAccepted
	switch {
	case err != nil:
		code = StatusCode(err)
		var exists *orchestrator.ExistsError
		if errors.As(err, &exists) && exists.Status != nil {
			code = http.StatusConflict
			span.SetAttributes(orchestrator.AttrExecutionID.String(exists.Status.ExecutionID))
		}
	case !res.Started:
		code = http.StatusOK
	}
	if res != nil && res.Status != nil {
		span.SetAttributes(orchestrator.AttrExecutionID.String(res.Status.ExecutionID))
	}
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	if code >= 500 {
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(code)))
		span.SetStatus(codes.Error, publicMessage(err))
	}
}
