package sidecar_test

import (
	"io"
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// historyKinds reads an instance's current history through
// StreamInstanceHistory, as an SDK's client does, and names its events in
// order.
func historyKinds(t *testing.T, s *server, id string) ([]string, []*pb.HistoryEvent) {
	t.Helper()
	stream, err := s.stub.StreamInstanceHistory(callCtx(t), &pb.StreamInstanceHistoryRequest{InstanceId: id})
	if err != nil {
		t.Fatal(err)
	}
	var events []*pb.HistoryEvent
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, chunk.GetEvents()...)
	}
	return eventKinds(events), events
}

// eventKinds names protocol events by their type.
func eventKinds(evs []*pb.HistoryEvent) []string {
	var out []string
	for _, ev := range evs {
		switch ev.GetEventType().(type) {
		case *pb.HistoryEvent_OrchestratorStarted:
			out = append(out, "orchestratorStarted")
		case *pb.HistoryEvent_ExecutionStarted:
			out = append(out, "executionStarted")
		case *pb.HistoryEvent_TaskScheduled:
			out = append(out, "taskScheduled")
		case *pb.HistoryEvent_TaskCompleted:
			out = append(out, "taskCompleted")
		case *pb.HistoryEvent_TaskFailed:
			out = append(out, "taskFailed")
		case *pb.HistoryEvent_ExecutionRewound:
			out = append(out, "executionRewound")
		case *pb.HistoryEvent_ExecutionCompleted:
			out = append(out, "executionCompleted")
		case *pb.HistoryEvent_EventSent:
			out = append(out, "eventSent")
		default:
			out = append(out, "other")
		}
	}
	return out
}

// A worker's orchestration whose activity fails ends FAILED; RewindInstance
// (as an SDK's client calls it) gives the instance a new execution with the
// history before the failure and ExecutionRewound: the node sends the
// failed activity to the worker again, then a step whose past events are
// that history (no TaskFailed, no end) and whose new event is the
// activity's result; the worker completes it and the instance ends
// COMPLETED.
func TestWorkerRewind(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WRewind")
	s.start(t, "WRewind", "rw1", `"in"`)

	req, tok := w.nextStep(t)
	failedExec := req.GetExecutionId().GetValue()
	if err := w.answer(t, "rw1", tok, "", scheduleTask(0, "Say", `"in"`)); err != nil {
		t.Fatal(err)
	}
	act, atok := w.nextActivity(t)
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "rw1", TaskId: act.GetTaskId(), CompletionToken: atok,
		FailureDetails: &pb.TaskFailureDetails{ErrorType: "Flaky", ErrorMessage: "first call fails"}}); err != nil {
		t.Fatal(err)
	}
	req, tok = w.nextStep(t)
	failed := false
	for _, ev := range req.GetNewEvents() {
		f := ev.GetTaskFailed()
		failed = failed || f != nil && f.GetTaskScheduledId() == 0 && f.GetFailureDetails().GetErrorMessage() == "first call fails"
	}
	if !failed {
		t.Fatalf("new events %v, want TaskFailed 0", req.GetNewEvents())
	}
	if err := w.answer(t, "rw1", tok, "", &pb.OrchestratorAction{Id: 1, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{
		CompleteOrchestration: &pb.CompleteOrchestrationAction{OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED,
			FailureDetails: &pb.TaskFailureDetails{ErrorType: "TaskFailedException", ErrorMessage: "Say failed"}}}}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "rw1"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED ||
		st.GetFailureDetails().GetErrorMessage() != "Say failed" {
		t.Fatalf("before the rewind: %v", st)
	}

	if _, err := s.stub.RewindInstance(callCtx(t), &pb.RewindInstanceRequest{InstanceId: "rw1", Reason: wrapperspb.String("retry")}); err != nil {
		t.Fatal(err)
	}
	// The failed task runs again, in the new execution.
	act, atok = w.nextActivity(t)
	newExec := act.GetOrchestrationInstance().GetExecutionId().GetValue()
	if act.GetName() != "Say" || act.GetTaskId() != 0 || act.GetInput().GetValue() != `"in"` || newExec == "" || newExec == failedExec {
		t.Fatalf("activity after the rewind: %v (failed execution %s)", act, failedExec)
	}
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "rw1", TaskId: 0, CompletionToken: atok,
		Result: wrapperspb.String(`"ok"`)}); err != nil {
		t.Fatal(err)
	}
	req, tok = w.nextStep(t)
	if req.GetInstanceId() != "rw1" || req.GetExecutionId().GetValue() != newExec {
		t.Fatalf("step after the rewind: %s execution %s, want rw1 %s", req.GetInstanceId(), req.GetExecutionId().GetValue(), newExec)
	}
	past := eventKinds(req.GetPastEvents())
	if want := []string{"orchestratorStarted", "executionStarted", "taskScheduled", "orchestratorStarted", "executionRewound"}; !slices.Equal(past, want) {
		t.Fatalf("past events after the rewind %v, want %v", past, want)
	}
	startedWith(t, req.GetPastEvents(), "WRewind", `"in"`)
	for _, ev := range req.GetPastEvents() {
		if r := ev.GetExecutionRewound(); r != nil && r.GetReason().GetValue() != "retry" {
			t.Fatalf("executionRewound %v, want reason retry", r)
		}
	}
	if news := eventKinds(req.GetNewEvents()); !slices.Equal(news, []string{"orchestratorStarted", "taskCompleted"}) ||
		req.GetNewEvents()[1].GetTaskCompleted().GetTaskScheduledId() != 0 || req.GetNewEvents()[1].GetTaskCompleted().GetResult().GetValue() != `"ok"` {
		t.Fatalf("new events after the rewind %v", req.GetNewEvents())
	}
	if err := w.answer(t, "rw1", tok, "", completeWith(1, `"ok"`)); err != nil {
		t.Fatal(err)
	}
	st := s.waitDone(t, "rw1")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED || st.GetOutput().GetValue() != `"ok"` ||
		st.GetFailureDetails() != nil || st.GetExecutionId().GetValue() != newExec {
		t.Fatalf("after the rewind: %v", st)
	}
	if got := s.get(t, "rw1"); got.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED || got.GetOutput().GetValue() != `"ok"` {
		t.Fatalf("GetInstance after the rewind: %v", got)
	}
	kinds, _ := historyKinds(t, s, "rw1")
	want := []string{"orchestratorStarted", "executionStarted", "taskScheduled", "orchestratorStarted", "executionRewound",
		"orchestratorStarted", "taskCompleted", "executionCompleted"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("history after the rewind %v, want %v", kinds, want)
	}
	// A completed instance is no longer rewindable.
	_, err := s.stub.RewindInstance(callCtx(t), &pb.RewindInstanceRequest{InstanceId: "rw1"})
	if err == nil {
		t.Fatal("a second rewind of a completed instance was taken")
	}
}

// A worker's orchestration completes; RestartInstance runs it again from
// the same input, as a new execution of its own ID and as a new instance:
// each time the worker gets a first step with only the new ExecutionStarted
// (no past events, nothing of the old execution), and the restart
// completes with the worker's output.
func TestWorkerRestart(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WRestart")
	s.start(t, "WRestart", "rs1", `{"n":1}`)

	req, tok := w.nextStep(t)
	firstExec := req.GetExecutionId().GetValue()
	if err := w.answer(t, "rs1", tok, "", scheduleTask(0, "Say", `1`)); err != nil {
		t.Fatal(err)
	}
	_, atok := w.nextActivity(t)
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "rs1", TaskId: 0, CompletionToken: atok,
		Result: wrapperspb.String(`"said"`)}); err != nil {
		t.Fatal(err)
	}
	_, tok = w.nextStep(t)
	if err := w.answer(t, "rs1", tok, "", completeWith(1, `"first"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "rs1"); st.GetOutput().GetValue() != `"first"` {
		t.Fatalf("first run: %v", st)
	}

	// A first step of a fresh execution: ExecutionStarted with the
	// original input, and nothing else of the old one.
	freshStep := func(id, notExec string) string {
		t.Helper()
		req, tok := w.nextStep(t)
		x := req.GetExecutionId().GetValue()
		if req.GetInstanceId() != id || x == "" || x == notExec || len(req.GetPastEvents()) != 0 {
			t.Fatalf("restarted step: %s execution %s (old %s), %d past events %v", req.GetInstanceId(), x, notExec, len(req.GetPastEvents()), req.GetPastEvents())
		}
		if got := eventKinds(req.GetNewEvents()); !slices.Equal(got, []string{"orchestratorStarted", "executionStarted"}) {
			t.Fatalf("restarted step's new events %v", got)
		}
		startedWith(t, req.GetNewEvents(), "WRestart", `{"n":1}`)
		if err := w.answer(t, id, tok, "", completeWith(0, `"again"`)); err != nil {
			t.Fatal(err)
		}
		return x
	}

	// Under the same ID: a new execution.
	res, err := s.stub.RestartInstance(callCtx(t), &pb.RestartInstanceRequest{InstanceId: "rs1", RestartWithNewInstanceId: false})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetInstanceId() != "rs1" {
		t.Fatalf("restart under the same ID returned %q", res.GetInstanceId())
	}
	secondExec := freshStep("rs1", firstExec)
	st := s.waitDone(t, "rs1")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED || st.GetOutput().GetValue() != `"again"` ||
		st.GetExecutionId().GetValue() != secondExec || st.GetInput().GetValue() != `{"n":1}` {
		t.Fatalf("restarted rs1: %v", st)
	}
	kinds, _ := historyKinds(t, s, "rs1")
	if want := []string{"orchestratorStarted", "executionStarted", "executionCompleted"}; !slices.Equal(kinds, want) {
		t.Fatalf("history of the restarted execution %v, want %v", kinds, want)
	}

	// Under a new ID: a new instance; rs1 stays as it was.
	res, err = s.stub.RestartInstance(callCtx(t), &pb.RestartInstanceRequest{InstanceId: "rs1", RestartWithNewInstanceId: true})
	if err != nil {
		t.Fatal(err)
	}
	newID := res.GetInstanceId()
	if newID == "" || newID == "rs1" {
		t.Fatalf("restart with a new ID returned %q", newID)
	}
	freshStep(newID, secondExec)
	if st := s.waitDone(t, newID); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED ||
		st.GetOutput().GetValue() != `"again"` || st.GetName() != "WRestart" || st.GetInput().GetValue() != `{"n":1}` {
		t.Fatalf("restarted as %s: %v", newID, st)
	}
	if st := s.get(t, "rs1"); st.GetExecutionId().GetValue() != secondExec || st.GetOutput().GetValue() != `"again"` {
		t.Fatalf("rs1 after the restart under a new ID: %v", st)
	}
}
