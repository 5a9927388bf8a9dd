package sidecar_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func terminateAction(id int32, target, reason string, recurse bool) *pb.OrchestratorAction {
	return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_TerminateOrchestration{
		TerminateOrchestration: &pb.TerminateOrchestrationAction{InstanceId: target, Reason: wrapperspb.String(reason), Recurse: recurse}}}
}

// A worker's orchestration terminates two other running instances, each
// with a waiting sub-orchestration: one recursively (its child ends too),
// one not (its child runs on). The targets end TERMINATED with the reason
// as output; the terminating orchestration goes on with its activity, its
// next step shows no trace of the terminates (the SDKs keep none), and it
// completes, its answer repeating the terminates as an SDK's replay does.
// Soloist's history records each once, as TerminateSent.
func TestWorkerTerminate(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WKiller")

	// Each victim starts a child and waits; the child waits.
	for _, id := range []string{"tv1", "tv2"} {
		s.start(t, "WVictim", id, "")
		_, tok := w.nextStep(t)
		if err := w.answer(t, id, tok, "", &pb.OrchestratorAction{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CreateSubOrchestration{
			CreateSubOrchestration: &pb.CreateSubOrchestrationAction{Name: "WVictim", InstanceId: id + "-child"}}}); err != nil {
			t.Fatal(err)
		}
		req, ctok := w.nextStep(t)
		if req.GetInstanceId() != id+"-child" {
			t.Fatalf("step for %s, want %s-child", req.GetInstanceId(), id)
		}
		if err := w.answer(t, id+"-child", ctok, ""); err != nil {
			t.Fatal(err)
		}
		s.waitStatus(t, id+"-child", pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)
	}

	s.start(t, "WKiller", "tk1", "")
	_, tok := w.nextStep(t)
	if err := w.answer(t, "tk1", tok, "",
		terminateAction(0, "tv1", `"enough"`, true),
		terminateAction(1, "tv2", `"enough for you"`, false),
		terminateAction(2, "ghost", `"nobody"`, false), // missing: no error
		scheduleTask(3, "Say", `"after"`)); err != nil {
		t.Fatal(err)
	}
	// The terminates were made before the step's commit, so they are done
	// by the time the activity is sent.
	act, atok := w.nextActivity(t)
	if act.GetTaskId() != 3 || act.GetName() != "Say" {
		t.Fatalf("activity %v", act)
	}
	for _, c := range []struct {
		id     string
		status pb.OrchestrationStatus
		output string
	}{
		{"tv1", pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED, `"enough"`},
		{"tv1-child", pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED, `"enough"`},
		{"tv2", pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED, `"enough for you"`},
		{"tv2-child", pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING, ""},
	} {
		st := s.get(t, c.id)
		if st.GetOrchestrationStatus() != c.status || st.GetOutput().GetValue() != c.output {
			t.Fatalf("%s: %v output %v, want %v %s", c.id, st.GetOrchestrationStatus(), st.GetOutput(), c.status, c.output)
		}
	}
	if st := s.get(t, "ghost"); st != nil {
		t.Fatalf("the terminate of a missing instance made one: %v", st)
	}

	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "tk1", TaskId: 3, CompletionToken: atok,
		Result: wrapperspb.String(`"said"`)}); err != nil {
		t.Fatal(err)
	}
	req, tok := w.nextStep(t)
	if past := eventKinds(req.GetPastEvents()); !slices.Equal(past, []string{"orchestratorStarted", "executionStarted", "taskScheduled"}) ||
		req.GetPastEvents()[2].GetEventId() != 3 {
		t.Fatalf("the killer's past events %v", req.GetPastEvents())
	}
	// An SDK keeps no history of its terminates, so its replay sends them
	// again: they are taken once.
	if err := w.answer(t, "tk1", tok, "", terminateAction(0, "tv1", `"enough"`, true), terminateAction(1, "tv2", `"enough for you"`, false),
		terminateAction(2, "ghost", `"nobody"`, false), completeWith(4, `"done"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "tk1"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED || st.GetOutput().GetValue() != `"done"` {
		t.Fatalf("the killer: %v", st)
	}
	h, err := v.client().History(context.Background(), "tk1", "")
	if err != nil {
		t.Fatal(err)
	}
	var sent []orchestrator.HistoryEvent
	for _, ev := range h {
		if ev.EventType == orchestrator.EventTerminateSent {
			sent = append(sent, ev)
		}
	}
	if len(sent) != 3 || sent[0].TaskID != 0 || sent[0].InstanceID != "tv1" || sent[0].Reason != "enough" || !sent[0].Recursive ||
		sent[1].TaskID != 1 || sent[1].InstanceID != "tv2" || sent[1].Recursive || sent[2].InstanceID != "ghost" {
		t.Fatalf("TerminateSent events %+v", sent)
	}
	if kinds, _ := historyKinds(t, s, "tk1"); slices.Contains(kinds, "other") {
		t.Fatalf("StreamInstanceHistory shows the terminates: %v", kinds)
	}

	// An orchestration cannot terminate itself with the action: the
	// execution fails with the engine's refusal.
	s.start(t, "WKiller", "tk2", "")
	_, tok = w.nextStep(t)
	err = w.answer(t, "tk2", tok, "", terminateAction(0, "tk2", `"me"`, false))
	wantCode(t, err, codes.InvalidArgument, "cannot terminate its own instance")
	if st := s.waitDone(t, "tk2"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED {
		t.Fatalf("tk2: %v", st)
	}
}
