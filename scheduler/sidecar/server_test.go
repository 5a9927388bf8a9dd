package sidecar_test

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func TestAuth(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{keys: []string{"k1", "k2"}})
	_, err := s.stub.Hello(callCtx(t), &emptypb.Empty{})
	wantCode(t, err, codes.Unauthenticated, "authorization: Bearer")
	_, err = s.stub.Hello(callCtx(t, "wrong"), &emptypb.Empty{})
	wantCode(t, err, codes.Unauthenticated)
	// A refused call is refused before its request is looked at.
	_, err = s.stub.GetInstance(callCtx(t, "k3"), &pb.GetInstanceRequest{InstanceId: "bad/id"})
	wantCode(t, err, codes.Unauthenticated)
	if _, err := s.stub.Hello(callCtx(t, "k2"), &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello with a valid key: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-functions-key", "k1")
	if _, err := s.stub.Hello(ctx, &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello with x-functions-key: %v", err)
	}
	// Streams are checked too.
	stream, err := s.stub.GetWorkItems(callCtx(t), &pb.GetWorkItemsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unauthenticated)
}

func TestEntitiesUnimplemented(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{})
	_, err := s.stub.SignalEntity(callCtx(t), &pb.SignalEntityRequest{InstanceId: "@counter@a", Name: "add"})
	wantCode(t, err, codes.Unimplemented, "durable entities")
	_, err = s.stub.QueryEntities(callCtx(t), &pb.QueryEntitiesRequest{})
	wantCode(t, err, codes.Unimplemented, "durable entities")
	_, err = s.stub.CreateTaskHub(callCtx(t), &pb.CreateTaskHubRequest{})
	wantCode(t, err, codes.Unimplemented, "task hubs")
	if _, err := s.stub.Hello(callCtx(t), &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello after refusals: %v", err)
	}
}

func TestTracingAndMetrics(t *testing.T) {
	v := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	s := v.startServer(serverOpts{tp: tp})
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "traceparent", parent)
	if _, err := s.stub.StartInstance(ctx, &pb.CreateInstanceRequest{Name: "F", InstanceId: "traced"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.stub.StartInstance(callCtx(t), &pb.CreateInstanceRequest{Name: "F", InstanceId: "traced"})
	wantCode(t, err, codes.AlreadyExists)
	var found bool
	for _, sp := range rec.Ended() {
		if strings.HasSuffix(sp.Name(), "TaskHubSidecarService/StartInstance") && sp.Parent().TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
			found = sp.SpanKind() == trace.SpanKindServer
		}
	}
	if !found {
		t.Fatalf("no server span of StartInstance continues the caller's trace; spans: %d", len(rec.Ended()))
	}
	counts := map[string]float64{}
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "soloist_grpc_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			counts[strings.TrimSpace(key)] = m.GetCounter().GetValue()
		}
	}
	if counts["code=OK method=StartInstance"] != 1 || counts["code=AlreadyExists method=StartInstance"] != 1 {
		t.Fatalf("soloist_grpc_calls_total: %v", counts)
	}
}
