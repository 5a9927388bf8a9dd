package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracing is what serve traces with: the provider handed to the
// orchestrator client (and so to the runs and the HTTP API), and how to
// flush it.
type tracing struct {
	provider trace.TracerProvider
	// exporter is the OTEL_TRACES_EXPORTER in use; empty when tracing is off.
	exporter string
	sdk      *sdktrace.TracerProvider // nil when off
}

// shutdown flushes the spans not yet exported and stops the exporter,
// within the budget ctx has left but at least minFlush. It may be called
// again (then it does nothing).
func (t *tracing) shutdown(ctx context.Context, log *slog.Logger) {
	if t.sdk == nil {
		return
	}
	budget := minFlush
	if d, ok := ctx.Deadline(); ok && time.Until(d) > budget {
		budget = time.Until(d)
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	if err := t.sdk.Shutdown(fctx); err != nil {
		log.Warn("tracing: not every span was exported", "exporter", t.exporter, "error", err)
	}
}

// minFlush is the least time the flush of spans at exit gets.
const minFlush = time.Second

// The samplers of OTEL_TRACES_SAMPLER, as the SDK reads them.
var tracesSamplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// setupTracing reads the standard OTEL_* variables. Tracing is on only if
// OTEL_TRACES_EXPORTER names an exporter other than "none" and
// OTEL_SDK_DISABLED is not true; off, it returns a no-op provider and
// makes no exporter and no goroutine. On, the exporter comes from
// autoexport (otlp over http/protobuf or grpc per
// OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, or console), spans go through a
// batch processor (OTEL_BSP_*), the sampler is OTEL_TRACES_SAMPLER's
// (default parentbased_always_on) and the resource is service.name
// "soloist", service.version and service.instance.id (the node ID), under
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func setupTracing(ctx context.Context, nodeID, version string, log *slog.Logger) (*tracing, error) {
	name := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))
	if name == "" || name == "none" || strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return &tracing{provider: noop.NewTracerProvider()}, nil
	}
	if strings.Contains(name, ",") {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: give one exporter (otlp, console or none)", name)
	}
	if s := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER"))); s != "" {
		if !slices.Contains(tracesSamplers, s) {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%s: use one of %s", s, strings.Join(tracesSamplers, ", "))
		}
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: %w; use otlp (with OTEL_EXPORTER_OTLP_PROTOCOL grpc or http/protobuf), console or none", name, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "soloist"),
			attribute.String("service.version", version),
			attribute.String("service.instance.id", nodeID),
		),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The SDK reports export failures to the process's error handler;
	// they go to the node's log instead of the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: "+err.Error(), "exporter", name)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on", "exporter", name, "endpoint", otlpEndpoint(name), "sampler", sampler(),
		"service_name", serviceName(res))
	return &tracing{provider: tp, exporter: name, sdk: tp}, nil
}

// otlpEndpoint is where an otlp exporter sends, for the log line.
func otlpEndpoint(exporter string) string {
	if exporter != "otlp" {
		return ""
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto == "grpc" {
		return "localhost:4317 (default)"
	}
	return "localhost:4318 (default)"
}

func sampler() string {
	if s := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")); s != "" {
		if a := os.Getenv("OTEL_TRACES_SAMPLER_ARG"); a != "" {
			return s + ":" + a
		}
		return s
	}
	return "parentbased_always_on (default)"
}

func serviceName(res *resource.Resource) string {
	if v, ok := res.Set().Value("service.name"); ok {
		return v.AsString()
	}
	return ""
}
