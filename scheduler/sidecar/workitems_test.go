package sidecar_test

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/soloist-dev/soloist/orchestrator"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// gauge reads one metric of the server's registry (summed over labels).
func (s *server) gauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// Through the real server (with API keys, on a node): a worker's stream is
// counted while connected, refused without a key, and ended with
// UNAVAILABLE when the server shuts down (the node drains).
func TestWorkItemsStreamOnServer(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{keys: []string{"k1"}, reg: orchestrator.NewRegistry()})
	stream, err := s.stub.GetWorkItems(callCtx(t), &pb.GetWorkItemsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unauthenticated)
	ctx, cancel := context.WithCancel(callCtx(t, "k1"))
	defer cancel()
	stream, err = s.stub.GetWorkItems(ctx, &pb.GetWorkItemsRequest{WorkItemFilters: &pb.WorkItemFilters{
		Orchestrations: []*pb.OrchestrationFilter{{Name: "Greet"}}, Activities: []*pb.ActivityFilter{{Name: "Say"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.gauge(t, "soloist_sidecar_workers") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("soloist_sidecar_workers = %v, want 1", s.gauge(t, "soloist_sidecar_workers"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.gauge(t, "soloist_sidecar_worker_functions"); got != 2 {
		t.Fatalf("soloist_sidecar_worker_functions sums to %v, want 2 (Greet, Say)", got)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	s.srv.Shutdown(sctx)
	select {
	case err := <-ended:
		wantCode(t, err, codes.Unavailable, "draining")
	case <-time.After(5 * time.Second):
		t.Fatal("the worker's stream did not end on shutdown")
	}
	if got := s.gauge(t, "soloist_sidecar_workers"); got != 0 {
		t.Fatalf("soloist_sidecar_workers = %v after shutdown, want 0", got)
	}
}

// Malformed work-item requests get a clear error and the server goes on.
func TestWorkItemsMalformed(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: orchestrator.NewRegistry()})
	_, err := s.stub.CompleteOrchestratorTask(callCtx(t), &pb.OrchestratorResponse{})
	wantCode(t, err, codes.InvalidArgument, "neither completionToken nor instanceId")
	_, err = s.stub.CompleteOrchestratorTask(callCtx(t), &pb.OrchestratorResponse{CompletionToken: "%%%"})
	wantCode(t, err, codes.InvalidArgument, "not one this server issued")
	// Well formed, but for nothing this node dispatched: stale.
	tok := base64.RawURLEncoding.EncodeToString([]byte("v1.99.3.e1.i1"))
	_, err = s.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "i1", TaskId: 1, CompletionToken: tok})
	wantCode(t, err, codes.FailedPrecondition, "stale")
	_, err = s.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "i1", TaskId: 1})
	wantCode(t, err, codes.FailedPrecondition, "stale")
	_, err = s.stub.AbandonTaskOrchestratorWorkItem(callCtx(t), &pb.AbandonOrchestrationTaskRequest{})
	wantCode(t, err, codes.InvalidArgument, "completionToken is required")
	stream, err := s.stub.GetWorkItems(callCtx(t), &pb.GetWorkItemsRequest{WorkItemFilters: &pb.WorkItemFilters{
		Orchestrations: []*pb.OrchestrationFilter{{Name: ""}},
	}})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "empty name")
	if got := s.gauge(t, "soloist_sidecar_workers"); got != 0 {
		t.Fatalf("a refused stream is counted: %v", got)
	}
	if _, err := s.stub.Hello(callCtx(t), &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello after the refusals: %v", err)
	}
}
