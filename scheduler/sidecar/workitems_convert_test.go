package sidecar

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func wantStatus(t *testing.T, err error, c codes.Code, part string) {
	t.Helper()
	if status.Code(err) != c || !strings.Contains(status.Convert(err).Message(), part) {
		t.Fatalf("got %v, want %s containing %q", err, c, part)
	}
}

// An action of a type from a newer protocol (a field number this server's
// proto does not have) arrives with no type: refused, naming the action.
func TestCheckActionsUnknownType(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 4)
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{})
	var a pb.OrchestratorAction
	if err := proto.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	res := &pb.OrchestratorResponse{Actions: []*pb.OrchestratorAction{&a}}
	wantStatus(t, checkActions(res, 1024), codes.InvalidArgument, "action 0 (id 4): an action of a type this server does not know")
}

func TestCheckActions(t *testing.T) {
	ok := []*pb.OrchestratorAction{
		{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_ScheduleTask{ScheduleTask: &pb.ScheduleTaskAction{Name: "Say", Input: wrapperspb.String(`"Tokyo"`)}}},
		{Id: 1, OrchestratorActionType: &pb.OrchestratorAction_CreateTimer{CreateTimer: &pb.CreateTimerAction{FireAt: timestamppb.New(time.Now())}}},
		{Id: 2, OrchestratorActionType: &pb.OrchestratorAction_SendEvent{SendEvent: &pb.SendEventAction{Instance: &pb.OrchestrationInstance{InstanceId: "other"}, Name: "go"}}},
		{Id: 3, OrchestratorActionType: &pb.OrchestratorAction_TerminateOrchestration{TerminateOrchestration: &pb.TerminateOrchestrationAction{InstanceId: "other", Reason: wrapperspb.String(`"stop"`), Recurse: true}}},
		{Id: 4, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{CompleteOrchestration: &pb.CompleteOrchestrationAction{
			OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED, Result: wrapperspb.String(`["done"]`)}}},
	}
	if err := checkActions(&pb.OrchestratorResponse{Actions: ok, CustomStatus: wrapperspb.String(`{"step":1}`)}, 1024); err != nil {
		t.Fatalf("valid actions refused: %v", err)
	}
	task := func(id int32, input string) *pb.OrchestratorAction {
		return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_ScheduleTask{ScheduleTask: &pb.ScheduleTaskAction{Name: "Say", Input: wrapperspb.String(input)}}}
	}
	cases := []struct {
		name    string
		actions []*pb.OrchestratorAction
		custom  string
		code    codes.Code
		part    string
	}{
		{"not JSON", []*pb.OrchestratorAction{task(0, "Tokyo")}, "", codes.InvalidArgument, `scheduleTask "Say" input is not JSON`},
		{"huge", []*pb.OrchestratorAction{task(0, `"`+strings.Repeat("x", 2000)+`"`)}, "", codes.InvalidArgument, "over the 1024-byte payload limit"},
		{"huge custom status", nil, `"` + strings.Repeat("x", 2000) + `"`, codes.InvalidArgument, "customStatus is 2002 bytes"},
		{"repeated id", []*pb.OrchestratorAction{task(0, "1"), task(0, "2")}, "", codes.InvalidArgument, "id used by an earlier action"},
		{"negative id", []*pb.OrchestratorAction{task(-1, "1")}, "", codes.InvalidArgument, "negative id"},
		{"after complete", []*pb.OrchestratorAction{ok[4], task(5, "1")}, "", codes.InvalidArgument, "must be the last action"},
		{"timer without time", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CreateTimer{CreateTimer: &pb.CreateTimerAction{}}}}, "", codes.InvalidArgument, "no valid fireAt"},
		{"running is no end", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{CompleteOrchestration: &pb.CompleteOrchestrationAction{}}}}, "", codes.InvalidArgument, "ends nothing"},
		{"bad send target", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_SendEvent{SendEvent: &pb.SendEventAction{Name: "go", Instance: &pb.OrchestrationInstance{InstanceId: "a/b"}}}}}, "", codes.InvalidArgument, "sendEvent instance"},
		{"entity", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_SendEntityMessage{SendEntityMessage: &pb.SendEntityMessageAction{}}}}, "", codes.Unimplemented, "durable entities"},
		{"terminate without target", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_TerminateOrchestration{TerminateOrchestration: &pb.TerminateOrchestrationAction{}}}}, "", codes.InvalidArgument, "terminateOrchestration instanceId"},
		{"huge terminate reason", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_TerminateOrchestration{TerminateOrchestration: &pb.TerminateOrchestrationAction{
			InstanceId: "other", Reason: wrapperspb.String(`"` + strings.Repeat("x", 2000) + `"`)}}}}, "", codes.InvalidArgument, "terminateOrchestration reason is 2002 bytes"},
		{"rewind", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_RewindOrchestration{RewindOrchestration: &pb.RewindOrchestrationAction{}}}}, "", codes.Unimplemented, "rewindOrchestration"},
		{"carryover not an event", []*pb.OrchestratorAction{{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{CompleteOrchestration: &pb.CompleteOrchestrationAction{
			OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW, CarryoverEvents: []*pb.HistoryEvent{{}}}}}}, "", codes.InvalidArgument, "carryoverEvents[0] is not an eventRaised"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := &pb.OrchestratorResponse{Actions: c.actions}
			if c.custom != "" {
				res.CustomStatus = wrapperspb.String(c.custom)
			}
			wantStatus(t, checkActions(res, 1024), c.code, c.part)
		})
	}
}

func TestActivityEvent(t *testing.T) {
	d := &dispatch{name: "Say", taskID: 5}
	ev, err := activityEvent(d, &pb.ActivityResponse{Result: wrapperspb.String(`"Hello Tokyo"`)}, 1024)
	if err != nil || ev.EventType != orchestrator.EventTaskCompleted || ev.TaskID != 5 || string(ev.Result) != `"Hello Tokyo"` {
		t.Fatalf("completed: %+v, %v", ev, err)
	}
	ev, err = activityEvent(d, &pb.ActivityResponse{FailureDetails: &pb.TaskFailureDetails{
		ErrorType: "ValueError", ErrorMessage: "bad city", IsNonRetriable: true,
		InnerFailure: &pb.TaskFailureDetails{ErrorType: "KeyError", ErrorMessage: "Tokio"},
	}}, 1024)
	if err != nil || ev.EventType != orchestrator.EventTaskFailed || ev.Failure != "bad city" || !ev.NonRetriable ||
		ev.FailureDetails.InnerFailure == nil || ev.FailureDetails.InnerFailure.ErrorType != "KeyError" {
		t.Fatalf("failed: %+v, %v", ev, err)
	}
	_, err = activityEvent(d, &pb.ActivityResponse{Result: wrapperspb.String("Hello")}, 1024)
	wantStatus(t, err, codes.InvalidArgument, `activity "Say" (task 5) result is not JSON`)
	// A failure chain deeper than the bound is cut, not followed forever.
	f := &pb.TaskFailureDetails{ErrorMessage: "0"}
	for i := 0; i < 100; i++ {
		f = &pb.TaskFailureDetails{ErrorMessage: "x", InnerFailure: f}
	}
	depth := 0
	for g := workerFailure(f); g != nil; g = g.InnerFailure {
		depth++
	}
	if depth != maxFailureDepth {
		t.Fatalf("failure depth %d, want %d", depth, maxFailureDepth)
	}
}

// A custom status that is JSON text is stored as it is; other text (the Go
// SDK sends SetCustomStatus's string unserialized) as a JSON string, not a
// refusal that would fail the orchestration; either way within the limit.
func TestCustomStatusOf(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"step":1}`, `{"step":1}`},
		{`"quoted"`, `"quoted"`},
		{`42`, `42`},
		{`approved by ops`, `"approved by ops"`},
		{`say "hi"`, `"say \"hi\""`},
	} {
		got, err := customStatusOf(wrapperspb.String(c.in), 1024)
		if err != nil || string(got) != c.want {
			t.Errorf("customStatusOf(%q) = %s, %v; want %s", c.in, got, err, c.want)
		}
		if err := checkActions(&pb.OrchestratorResponse{CustomStatus: wrapperspb.String(c.in)}, 1024); err != nil {
			t.Errorf("checkActions refused the custom status %q: %v", c.in, err)
		}
	}
	if got, err := customStatusOf(nil, 1024); got != nil || err != nil {
		t.Errorf("no custom status: %s, %v", got, err)
	}
	_, err := customStatusOf(wrapperspb.String(strings.Repeat("x", 1023)), 1024)
	wantStatus(t, err, codes.InvalidArgument, "customStatus is 1025 bytes")
}
