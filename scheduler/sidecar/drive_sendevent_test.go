package sidecar_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// A worker's orchestration raises an event to another worker-run instance
// (sendEvent) and goes on: the target gets EventRaised, and the sender's
// next step has the send in its past events as eventSent with the action's
// ID as eventId, which is how an SDK's replay matches it to its sendEvent
// action (and so does not send it again).
func TestWorkerSendEvent(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WSender")
	s.start(t, "WWaiter", "se-target", "")
	_, tok := w.nextStep(t)
	if err := w.answer(t, "se-target", tok, ""); err != nil {
		t.Fatal(err)
	}

	s.start(t, "WSender", "se1", "")
	_, tok = w.nextStep(t)
	if err := w.answer(t, "se1", tok, "",
		&pb.OrchestratorAction{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_SendEvent{SendEvent: &pb.SendEventAction{
			Instance: &pb.OrchestrationInstance{InstanceId: "se-target"}, Name: "go", Data: wrapperspb.String(`5`)}}},
		scheduleTask(1, "Say", `"sent"`)); err != nil {
		t.Fatal(err)
	}
	// The target's step with the event and the sender's activity come in
	// either order.
	var atok string
	for range 2 {
		it := w.next(t)
		switch {
		case it.GetActivityRequest() != nil:
			atok = it.GetCompletionToken()
		case it.GetOrchestratorRequest().GetInstanceId() == "se-target":
			raised := false
			for _, ev := range it.GetOrchestratorRequest().GetNewEvents() {
				raised = raised || ev.GetEventRaised().GetName() == "go" && ev.GetEventRaised().GetInput().GetValue() == "5"
			}
			if !raised {
				t.Fatalf("the target's new events %v, want EventRaised go 5", it.GetOrchestratorRequest().GetNewEvents())
			}
			if err := w.answer(t, "se-target", it.GetCompletionToken(), "", completeWith(0, `5`)); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("work item %v", it)
		}
	}
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "se1", TaskId: 1, CompletionToken: atok,
		Result: wrapperspb.String(`"ok"`)}); err != nil {
		t.Fatal(err)
	}
	req, tok := w.nextStep(t)
	past := req.GetPastEvents()
	if got := eventKinds(past); !slices.Equal(got, []string{"orchestratorStarted", "executionStarted", "eventSent", "taskScheduled"}) {
		t.Fatalf("the sender's past events %v", past)
	}
	if es := past[2].GetEventSent(); es == nil || past[2].GetEventId() != 0 || es.GetInstanceId() != "se-target" || es.GetName() != "go" || es.GetInput().GetValue() != "5" {
		t.Fatalf("past event %v, want eventSent 0 to se-target", past[2])
	}
	if err := w.answer(t, "se1", tok, "", completeWith(2, `"done"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "se1"); st.GetOutput().GetValue() != `"done"` {
		t.Fatalf("se1: %v", st)
	}
	if st := s.waitDone(t, "se-target"); st.GetOutput().GetValue() != "5" {
		t.Fatalf("se-target: %v", st)
	}
}
