package sidecar

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func TestStepToWorker(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	w := f.connect(&pb.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 1)
	ts := time.Date(2026, 12, 5, 15, 0, 0, 0, time.UTC)
	past := []orchestrator.HistoryEvent{
		{Seq: 0, EventType: orchestrator.EventExecutionStarted, Timestamp: ts, Name: "Greet", Input: []byte(`"Tokyo"`)},
		{Seq: 1, EventType: orchestrator.EventTaskScheduled, Timestamp: ts, TaskID: 0, Name: "Say", Input: []byte(`"Tokyo"`)},
	}
	news := []orchestrator.HistoryEvent{{Seq: 2, EventType: orchestrator.EventTaskCompleted, Timestamp: ts.Add(time.Second), TaskID: 0, Result: []byte(`"Hello Tokyo"`)}}
	req := stepRequest{x: Execution{InstanceID: "i1", ExecutionID: "e1"}, name: "Greet", fence: 9, past: past, news: news, maxPayload: 1024}
	complete := []*pb.OrchestratorAction{{Id: 1, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{CompleteOrchestration: &pb.CompleteOrchestrationAction{
		OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED, Result: wrap(`"Hello Tokyo"`)}}}}
	ctx := context.Background()

	// 1. The worker sees the history with the task's ID; its unknown action
	// is refused to it, and the step ends with that, committing nothing.
	commits := 0
	done := make(chan error, 1)
	go func() {
		done <- f.h.step(ctx, req, func(*pb.OrchestratorResponse) error { commits++; return nil })
	}()
	it := w.next(t)
	or := it.GetOrchestratorRequest()
	if or.GetInstanceId() != "i1" || or.GetExecutionId().GetValue() != "e1" || len(or.GetNewEvents()) == 0 {
		t.Fatalf("request %v", or)
	}
	var sawScheduled, sawCompleted bool
	for _, ev := range or.GetPastEvents() {
		if ev.GetTaskScheduled() != nil && ev.GetEventId() == 0 && ev.GetTaskScheduled().GetName() == "Say" {
			sawScheduled = true
		}
	}
	for _, ev := range or.GetNewEvents() {
		if c := ev.GetTaskCompleted(); c != nil && c.GetTaskScheduledId() == 0 && c.GetResult().GetValue() == `"Hello Tokyo"` {
			sawCompleted = true
		}
	}
	if !sawScheduled || !sawCompleted {
		t.Fatalf("past %v new %v: want TaskScheduled id 0 in past and its TaskCompleted in new", or.GetPastEvents(), or.GetNewEvents())
	}
	_, err := f.cli.CompleteOrchestratorTask(ctx, &pb.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken(),
		Actions: []*pb.OrchestratorAction{{Id: 1}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown action: worker told %v", err)
	}
	if err := waitRun(t, done); status.Code(err) != codes.InvalidArgument || commits != 0 {
		t.Fatalf("step: %v, %d commits", err, commits)
	}

	// 2. A step whose commit is fenced (the node lost the instance): the
	// worker is told its answer is stale.
	go func() {
		done <- f.h.step(ctx, req, func(*pb.OrchestratorResponse) error {
			return fmt.Errorf("commit: %w", orchestrator.ErrFenced)
		})
	}()
	it = w.next(t)
	_, err = f.cli.CompleteOrchestratorTask(ctx, &pb.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken(), Actions: complete})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("fenced commit: worker told %v", err)
	}
	if err := waitRun(t, done); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("step: %v", err)
	}
	if got := testutil.ToFloat64(f.m.items.WithLabelValues(kindOrchestration, "stale")); got != 1 {
		t.Fatalf("stale = %v, want 1", got)
	}

	// 3. A good answer is committed once and the worker told OK.
	var got *pb.OrchestratorResponse
	go func() {
		done <- f.h.step(ctx, req, func(res *pb.OrchestratorResponse) error { got = res; return nil })
	}()
	it = w.next(t)
	if _, err := f.cli.CompleteOrchestratorTask(ctx, &pb.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken(), Actions: complete}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.GetActions()[0].GetCompleteOrchestration().GetResult().GetValue() != `"Hello Tokyo"` {
		t.Fatalf("committed %v", got)
	}
}
