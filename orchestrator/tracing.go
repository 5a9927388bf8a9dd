package orchestrator

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of the spans of this package and
// of the packages built on it (scheduler/httpapi, execfn, httpfn).
const TracerName = "github.com/soloist-dev/soloist"

// The attribute keys of Soloist's spans (the log keys, under "soloist.").
const (
	AttrInstanceID      = attribute.Key("soloist.instance_id")
	AttrExecutionID     = attribute.Key("soloist.execution_id")
	AttrFunction        = attribute.Key("soloist.function")
	AttrVersion         = attribute.Key("soloist.version")
	AttrFencingToken    = attribute.Key("soloist.fencing_token")
	AttrRunReason       = attribute.Key("soloist.run.reason")
	AttrRuntimeStatus   = attribute.Key("soloist.runtime_status")
	AttrActivity        = attribute.Key("soloist.activity")
	AttrTaskID          = attribute.Key("soloist.task_id")
	AttrAttempt         = attribute.Key("soloist.attempt")
	AttrChildInstanceID = attribute.Key("soloist.child_instance_id")
	AttrStopCause       = attribute.Key("soloist.stop_cause")
)

// maxTraceState bounds the tracestate a record keeps (W3C allows 32
// entries; 512 bytes is what propagators are asked to carry at least).
const maxTraceState = 512

// TraceContext is a W3C trace context as it travels with an instance: the
// traceparent and tracestate header values. The zero value is no context.
type TraceContext struct {
	// Parent is a traceparent, "00-<32 hex trace ID>-<16 hex span ID>-<2
	// hex flags>".
	Parent string
	// State is the tracestate that goes with it; empty if none.
	State string
}

var w3c = propagation.TraceContext{}

// TraceContextFrom returns the W3C trace context of the span in ctx (a
// local span or a remote span context); zero if ctx has no valid one. A
// tracestate longer than a start accepts (512 bytes) loses its last
// entries, as W3C lets a propagator truncate it.
func TraceContextFrom(ctx context.Context) TraceContext {
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return TraceContext{Parent: c["traceparent"], State: truncateTraceState(c["tracestate"])}
}

// truncateTraceState keeps the leading entries of a tracestate that fit
// maxTraceState bytes.
func truncateTraceState(s string) string {
	if len(s) <= maxTraceState {
		return s
	}
	var kept []string
	n := 0
	for _, m := range strings.Split(s, ",") {
		if n+len(m)+len(kept) > maxTraceState { // len(kept): the commas
			break
		}
		kept = append(kept, m)
		n += len(m)
	}
	return strings.Join(kept, ",")
}

// IsZero reports whether tc carries no context.
func (tc TraceContext) IsZero() bool { return tc.Parent == "" }

// context returns ctx with tc as its remote span context; ctx as it is if
// tc is zero or does not parse.
func (tc TraceContext) context(ctx context.Context) context.Context {
	if tc.Parent == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": tc.Parent}
	if tc.State != "" {
		c["tracestate"] = tc.State
	}
	return w3c.Extract(ctx, c)
}

// validate checks a trace context given to a start.
func (tc TraceContext) validate() error {
	if tc.Parent == "" {
		if tc.State != "" {
			return &ValidationError{Field: "tracestate", Value: tc.State, Reason: "it needs a traceparent"}
		}
		return nil
	}
	if !trace.SpanContextFromContext(tc.context(context.Background())).IsValid() {
		return &ValidationError{Field: "traceparent", Value: tc.Parent,
			Reason: "it is not a W3C traceparent (00-<32 hex trace ID>-<16 hex span ID>-<2 hex flags>, not all zeros)"}
	}
	if len(tc.State) > maxTraceState {
		return &ValidationError{Field: "tracestate", Reason: "it is longer than 512 bytes"}
	}
	if _, err := trace.ParseTraceState(tc.State); err != nil {
		return &ValidationError{Field: "tracestate", Value: tc.State, Reason: "it is not a W3C tracestate: " + err.Error()}
	}
	return nil
}

// tracerOf is the package's tracer of tp; a no-op one for nil.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(TracerName)
}

// RecordFailure marks span failed as Soloist's spans are: error.type is
// the failure's ErrorType, an "exception" event carries its type and
// message, and the status is Error with the message. execfn and httpfn use
// it for their attempts.
func RecordFailure(span trace.Span, d *FailureDetails) {
	if d == nil || !span.IsRecording() {
		return
	}
	typ := d.ErrorType
	if typ == "" {
		typ = "Error"
	}
	span.SetAttributes(attribute.String("error.type", typ))
	span.AddEvent("exception", trace.WithAttributes(
		attribute.String("exception.type", typ),
		attribute.String("exception.message", d.ErrorMessage),
	))
	span.SetStatus(codes.Error, firstLine(d.ErrorMessage))
}

// firstLine keeps a status description short: a panic's message carries
// no stack, but an exec function's stderr may run to many lines.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > 256 {
		s = s[:256] + "..."
	}
	return strings.ToValidUTF8(s, "")
}

// runAttrs are the attributes of a run's span.
func runAttrs(rec *Record, token int64, reason string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		AttrInstanceID.String(rec.InstanceID),
		AttrExecutionID.String(rec.ExecutionID),
		AttrFunction.String(rec.Name),
		AttrFencingToken.Int64(token),
	}
	if rec.Version != "" {
		attrs = append(attrs, AttrVersion.String(rec.Version))
	}
	if reason != "" {
		attrs = append(attrs, AttrRunReason.String(reason))
	}
	return attrs
}
