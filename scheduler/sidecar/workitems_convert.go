package sidecar

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// What a worker sends back, checked before anything of it reaches the
// engine: a refusal is a gRPC status that names the action and what is
// wrong with it.

// maxFailureDepth bounds the inner failures taken from a worker.
const maxFailureDepth = 8

// payloadOf is a protocol payload (JSON text, or absent) as Soloist stores
// it; what is not JSON, or is over maxPayload bytes, is refused.
func payloadOf(what string, v *wrapperspb.StringValue, maxPayload int) (json.RawMessage, error) {
	if v == nil || v.GetValue() == "" {
		return nil, nil
	}
	s := v.GetValue()
	if maxPayload > 0 && len(s) > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "%s is %d bytes, over the %d-byte payload limit (--max-payload)", what, len(s), maxPayload)
	}
	if !json.Valid([]byte(s)) {
		return nil, status.Errorf(codes.InvalidArgument, "%s is not JSON text (the SDKs serialize payloads as JSON)", what)
	}
	return json.RawMessage(s), nil
}

// customStatusOf is a worker's custom status as Soloist stores it: JSON
// text as it is, and any other text as a JSON string. The Go SDK
// (durabletask-go) sends the string SetCustomStatus was given without
// serializing it, where the other SDKs send JSON; taken as a string, such a
// status reads back JSON-quoted (docs/durable-task-sdks.md).
func customStatusOf(v *wrapperspb.StringValue, maxPayload int) (json.RawMessage, error) {
	if v == nil || v.GetValue() == "" || json.Valid([]byte(v.GetValue())) {
		return payloadOf("customStatus", v, maxPayload)
	}
	b, _ := json.Marshal(v.GetValue()) // a string always encodes
	return payloadOf("customStatus", wrapperspb.String(string(b)), maxPayload)
}

// workerFailure is a worker's failure details in Soloist's terms, at most
// maxFailureDepth deep; nil for nil.
func workerFailure(f *pb.TaskFailureDetails) *orchestrator.FailureDetails {
	return failureDepth(f, 0)
}

func failureDepth(f *pb.TaskFailureDetails, depth int) *orchestrator.FailureDetails {
	if f == nil || depth >= maxFailureDepth {
		return nil
	}
	return &orchestrator.FailureDetails{
		ErrorType: f.GetErrorType(), ErrorMessage: f.GetErrorMessage(), StackTrace: f.GetStackTrace().GetValue(),
		InnerFailure: failureDepth(f.GetInnerFailure(), depth+1), IsNonRetriable: f.GetIsNonRetriable(),
	}
}

// activityEvent is the history event of an activity's answer: TaskFailed
// when it carries failure details, TaskCompleted otherwise.
func activityEvent(d *dispatch, res *pb.ActivityResponse, maxPayload int) (orchestrator.HistoryEvent, error) {
	ev := orchestrator.HistoryEvent{TaskID: int(d.taskID), Name: d.name}
	if f := workerFailure(res.GetFailureDetails()); f != nil {
		if f.ErrorMessage == "" {
			f.ErrorMessage = "the activity failed (its worker gave no message)"
		}
		ev.EventType, ev.FailureDetails, ev.Failure, ev.NonRetriable = orchestrator.EventTaskFailed, f, f.ErrorMessage, f.IsNonRetriable
		return ev, nil
	}
	out, err := payloadOf(fmt.Sprintf("activity %q (task %d) result", d.name, d.taskID), res.GetResult(), maxPayload)
	if err != nil {
		return ev, err
	}
	ev.EventType, ev.Result = orchestrator.EventTaskCompleted, out
	return ev, nil
}

// checkActions refuses a step's answer that the engine cannot take for
// reasons of the protocol: an action of no type Soloist knows (a newer
// protocol's, or none), entity and rewind actions (not supported), a
// negative or repeated ID, a timer without a time, anything
// after the completion, a completion of a status that ends nothing, and
// payloads that are not JSON or are over the limit. The engine checks the
// IDs' sequence itself.
func checkActions(res *pb.OrchestratorResponse, maxPayload int) error {
	if _, err := customStatusOf(res.GetCustomStatus(), maxPayload); err != nil {
		return err
	}
	seen := map[int32]bool{}
	for i, a := range res.GetActions() {
		bad := func(format string, args ...any) error {
			return status.Errorf(codes.InvalidArgument, "action %d (id %d): %s", i, a.GetId(), fmt.Sprintf(format, args...))
		}
		if a == nil {
			return status.Errorf(codes.InvalidArgument, "action %d is empty", i)
		}
		if i > 0 && res.GetActions()[i-1].GetCompleteOrchestration() != nil {
			return bad("comes after completeOrchestration, which must be the last action")
		}
		if a.GetCompleteOrchestration() == nil {
			if a.GetId() < 0 {
				return bad("negative id")
			}
			if seen[a.GetId()] {
				return bad("id used by an earlier action of the step")
			}
			seen[a.GetId()] = true
		}
		var err error
		switch t := a.GetOrchestratorActionType().(type) {
		case *pb.OrchestratorAction_ScheduleTask:
			if t.ScheduleTask.GetName() == "" {
				return bad("scheduleTask has no name")
			}
			_, err = payloadOf(fmt.Sprintf("action %d: scheduleTask %q input", i, t.ScheduleTask.GetName()), t.ScheduleTask.GetInput(), maxPayload)
		case *pb.OrchestratorAction_CreateTimer:
			if t.CreateTimer.GetFireAt() == nil || t.CreateTimer.GetFireAt().CheckValid() != nil {
				return bad("createTimer has no valid fireAt")
			}
		case *pb.OrchestratorAction_CreateSubOrchestration:
			c := t.CreateSubOrchestration
			if c.GetName() == "" {
				return bad("createSubOrchestration has no name")
			}
			if c.GetInstanceId() != "" {
				if verr := orchestrator.ValidateInstanceID(c.GetInstanceId()); verr != nil {
					return bad("createSubOrchestration instanceId: %v", verr)
				}
			}
			_, err = payloadOf(fmt.Sprintf("action %d: createSubOrchestration %q input", i, c.GetName()), c.GetInput(), maxPayload)
		case *pb.OrchestratorAction_SendEvent:
			s := t.SendEvent
			if s.GetName() == "" {
				return bad("sendEvent has no event name")
			}
			if verr := orchestrator.ValidateInstanceID(s.GetInstance().GetInstanceId()); verr != nil {
				return bad("sendEvent instance: %v", verr)
			}
			_, err = payloadOf(fmt.Sprintf("action %d: sendEvent %q data", i, s.GetName()), s.GetData(), maxPayload)
		case *pb.OrchestratorAction_CompleteOrchestration:
			c := t.CompleteOrchestration
			switch c.GetOrchestrationStatus() {
			case pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED, pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED,
				pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW, pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED:
			default:
				return bad("completeOrchestration with status %s, which ends nothing (use COMPLETED, FAILED, CONTINUED_AS_NEW or TERMINATED)", c.GetOrchestrationStatus())
			}
			_, err = payloadOf(fmt.Sprintf("action %d: completeOrchestration result", i), c.GetResult(), maxPayload)
			for j, ev := range c.GetCarryoverEvents() {
				if err != nil {
					break
				}
				r := ev.GetEventRaised()
				if r == nil {
					return bad("carryoverEvents[%d] is not an eventRaised event", j)
				}
				_, err = payloadOf(fmt.Sprintf("action %d: carryoverEvents[%d] input", i, j), r.GetInput(), maxPayload)
			}
		case *pb.OrchestratorAction_SendEntityMessage:
			return status.Errorf(codes.Unimplemented, "action %d (id %d): sendEntityMessage: durable entities are not supported by Soloist", i, a.GetId())
		case *pb.OrchestratorAction_TerminateOrchestration:
			tm := t.TerminateOrchestration
			if verr := orchestrator.ValidateInstanceID(tm.GetInstanceId()); verr != nil {
				return bad("terminateOrchestration instanceId: %v", verr)
			}
			if n := len(tm.GetReason().GetValue()); maxPayload > 0 && n > maxPayload {
				return bad("terminateOrchestration reason is %d bytes, over the %d-byte payload limit (--max-payload)", n, maxPayload)
			}
		case *pb.OrchestratorAction_RewindOrchestration:
			return status.Errorf(codes.Unimplemented, "action %d (id %d): rewindOrchestration is not supported by Soloist; rewind from a client (RewindInstance)", i, a.GetId())
		case nil:
			return bad("an action of a type this server does not know (none of scheduleTask, createTimer, createSubOrchestration, sendEvent, terminateOrchestration, completeOrchestration)")
		default:
			return bad("an action of type %T, which this server does not know", t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// terminateReason is the reason of a terminate as Soloist stores it: the
// protocol's output is JSON (the SDKs serialize it); a JSON string is
// taken as its text, anything else as it was sent.
func terminateReason(out *wrapperspb.StringValue) string {
	if out == nil {
		return ""
	}
	v := strings.TrimSpace(out.GetValue())
	var reason string
	if err := json.Unmarshal([]byte(v), &reason); err != nil {
		return v
	}
	return reason
}
