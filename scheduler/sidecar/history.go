package sidecar

import (
	"encoding/json"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// This file maps Soloist's history (orchestrator.HistoryEvent) onto the
// protocol's HistoryEvent. StreamInstanceHistory uses it, and so does the
// work-item side to build an OrchestratorRequest's past and new events: both
// must see the same events with the same IDs and timestamps, or a worker's
// replay would diverge.
//
// The rules:
//
//   - eventId is the task's sequence number on the events that schedule
//     something (TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated)
//     and on EventSent, which is how a worker matches them to its actions'
//     IDs (an action left unmatched is sent again); the events
//     that answer them carry it as taskScheduledId / timerId; every other
//     event has eventId -1.
//   - Every event that comes from outside the orchestration's code
//     (ExecutionStarted, a task's or sub-orchestration's result, a timer
//     firing, an external event, suspend, resume, rewind) is preceded by an
//     OrchestratorStarted with its timestamp. The SDKs take the
//     orchestration's current time from OrchestratorStarted, so the time
//     the code sees while handling an event is the event's own, the same on
//     every replay. The rule looks at one event at a time, so the events
//     of a history and of its prefixes map alike (past + new events of a
//     step map to the prefix of what the next step's past events map to).
//   - Payloads are JSON text in StringValues, absent when Soloist has none.
//   - TerminateSent (an orchestration's terminateOrchestration action) has
//     no form: the SDKs keep no history of that action.

// Execution describes the execution whose history is mapped: what the
// ExecutionStarted event carries besides the name and input.
type Execution struct {
	InstanceID       string
	ExecutionID      string
	Version          string
	Tags             map[string]string
	ParentInstanceID string
	ScheduledStart   *time.Time
	// Trace is the start's trace context, the parent of the SDK's span of
	// the orchestration (ExecutionStarted's parentTraceContext); the work
	// items carry it, StreamInstanceHistory does not.
	Trace orchestrator.TraceContext
}

// ExecutionOf is the Execution of an instance's status.
func ExecutionOf(st *orchestrator.Status) Execution {
	return Execution{
		InstanceID: st.InstanceID, ExecutionID: st.ExecutionID, Version: st.Version, Tags: st.Tags,
		ParentInstanceID: st.ParentInstanceID, ScheduledStart: st.ScheduledStartTime,
	}
}

// HistoryToProto maps the events of one execution, past then new (new may
// be empty), and returns them split at the same place.
func HistoryToProto(x Execution, past, news []orchestrator.HistoryEvent) (pastPB, newPB []*pb.HistoryEvent) {
	pastPB = make([]*pb.HistoryEvent, 0, len(past)*2)
	for i := range past {
		pastPB = appendEvent(pastPB, x, &past[i])
	}
	newPB = make([]*pb.HistoryEvent, 0, len(news)*2)
	for i := range news {
		newPB = appendEvent(newPB, x, &news[i])
	}
	return pastPB, newPB
}

// hidden reports whether an event has no protocol form: TerminateSent (a
// terminateOrchestration action's record, which the SDKs keep no history
// of; Soloist keeps it to count the action's ID).
func hidden(t orchestrator.EventType) bool {
	return t == orchestrator.EventTerminateSent
}

// incoming reports whether an event comes from outside the orchestration's
// code, and so opens a step (an OrchestratorStarted precedes it).
func incoming(t orchestrator.EventType) bool {
	switch t {
	case orchestrator.EventExecutionStarted, orchestrator.EventTaskCompleted, orchestrator.EventTaskFailed,
		orchestrator.EventTimerFired, orchestrator.EventEventRaised, orchestrator.EventExecutionSuspended,
		orchestrator.EventExecutionResumed, orchestrator.EventExecutionRewound,
		orchestrator.EventSubOrchestrationInstanceCompleted, orchestrator.EventSubOrchestrationInstanceFailed:
		return true
	}
	return false
}

// appendEvent appends the protocol's form of ev (and the OrchestratorStarted
// before it, for an incoming event) to out.
func appendEvent(out []*pb.HistoryEvent, x Execution, ev *orchestrator.HistoryEvent) []*pb.HistoryEvent {
	if hidden(ev.EventType) {
		return out
	}
	ts := timestamppb.New(ev.Timestamp)
	if incoming(ev.EventType) {
		out = append(out, &pb.HistoryEvent{EventId: -1, Timestamp: ts,
			EventType: &pb.HistoryEvent_OrchestratorStarted{OrchestratorStarted: &pb.OrchestratorStartedEvent{}}})
	}
	return append(out, EventToProto(x, ev))
}

// EventToProto maps one event (without the OrchestratorStarted that
// HistoryToProto puts before an incoming one).
func EventToProto(x Execution, ev *orchestrator.HistoryEvent) *pb.HistoryEvent {
	h := &pb.HistoryEvent{EventId: -1, Timestamp: timestamppb.New(ev.Timestamp)}
	switch ev.EventType {
	case orchestrator.EventExecutionStarted:
		es := &pb.ExecutionStartedEvent{
			Name:                  ev.Name,
			Version:               optString(x.Version),
			Input:                 optJSON(ev.Input),
			OrchestrationInstance: &pb.OrchestrationInstance{InstanceId: x.InstanceID, ExecutionId: optString(x.ExecutionID)},
			Tags:                  x.Tags,
		}
		if x.ParentInstanceID != "" {
			es.ParentInstance = &pb.ParentInstanceInfo{OrchestrationInstance: &pb.OrchestrationInstance{InstanceId: x.ParentInstanceID}}
		}
		if x.ScheduledStart != nil {
			es.ScheduledStartTimestamp = timestamppb.New(*x.ScheduledStart)
		}
		if x.Trace.Parent != "" {
			es.ParentTraceContext = &pb.TraceContext{TraceParent: x.Trace.Parent}
			if x.Trace.State != "" {
				es.ParentTraceContext.TraceState = wrapperspb.String(x.Trace.State)
			}
		}
		h.EventType = &pb.HistoryEvent_ExecutionStarted{ExecutionStarted: es}
	case orchestrator.EventTaskScheduled:
		h.EventId = int32(ev.TaskID)
		h.EventType = &pb.HistoryEvent_TaskScheduled{TaskScheduled: &pb.TaskScheduledEvent{Name: ev.Name, Input: optJSON(ev.Input)}}
	case orchestrator.EventTaskCompleted:
		h.EventType = &pb.HistoryEvent_TaskCompleted{TaskCompleted: &pb.TaskCompletedEvent{
			TaskScheduledId: int32(ev.TaskID), Result: optJSON(ev.Result)}}
	case orchestrator.EventTaskFailed:
		h.EventType = &pb.HistoryEvent_TaskFailed{TaskFailed: &pb.TaskFailedEvent{
			TaskScheduledId: int32(ev.TaskID), FailureDetails: failureOf(ev)}}
	case orchestrator.EventTimerCreated:
		h.EventId = int32(ev.TaskID)
		h.EventType = &pb.HistoryEvent_TimerCreated{TimerCreated: &pb.TimerCreatedEvent{FireAt: optTime(ev.FireAt)}}
	case orchestrator.EventTimerFired:
		h.EventType = &pb.HistoryEvent_TimerFired{TimerFired: &pb.TimerFiredEvent{FireAt: optTime(ev.FireAt), TimerId: int32(ev.TaskID)}}
	case orchestrator.EventEventSent:
		h.EventId = int32(ev.TaskID)
		h.EventType = &pb.HistoryEvent_EventSent{EventSent: &pb.EventSentEvent{InstanceId: ev.InstanceID, Name: ev.Name, Input: optJSON(ev.Input)}}
	case orchestrator.EventEventRaised:
		h.EventType = &pb.HistoryEvent_EventRaised{EventRaised: &pb.EventRaisedEvent{Name: ev.Name, Input: optJSON(ev.Input)}}
	case orchestrator.EventExecutionSuspended:
		h.EventType = &pb.HistoryEvent_ExecutionSuspended{ExecutionSuspended: &pb.ExecutionSuspendedEvent{Input: optString(ev.Reason)}}
	case orchestrator.EventExecutionResumed:
		h.EventType = &pb.HistoryEvent_ExecutionResumed{ExecutionResumed: &pb.ExecutionResumedEvent{Input: optString(ev.Reason)}}
	case orchestrator.EventExecutionRewound:
		h.EventType = &pb.HistoryEvent_ExecutionRewound{ExecutionRewound: &pb.ExecutionRewoundEvent{Reason: optString(ev.Reason)}}
	case orchestrator.EventContinuedAsNew:
		// The protocol ends an execution that continues as new with an
		// ExecutionCompleted of that status, the new input as its result.
		h.EventType = &pb.HistoryEvent_ExecutionCompleted{ExecutionCompleted: &pb.ExecutionCompletedEvent{
			OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW, Result: optJSON(ev.Input)}}
	case orchestrator.EventExecutionCompleted:
		ec := &pb.ExecutionCompletedEvent{OrchestrationStatus: statusToProto(ev.Status), Result: optJSON(ev.Result)}
		if ev.Status == orchestrator.StatusFailed || ev.FailureDetails != nil {
			ec.FailureDetails = failureOf(ev)
		}
		h.EventType = &pb.HistoryEvent_ExecutionCompleted{ExecutionCompleted: ec}
	case orchestrator.EventSubOrchestrationInstanceCreated:
		h.EventId = int32(ev.TaskID)
		h.EventType = &pb.HistoryEvent_SubOrchestrationInstanceCreated{SubOrchestrationInstanceCreated: &pb.SubOrchestrationInstanceCreatedEvent{
			InstanceId: ev.InstanceID, Name: ev.Name, Input: optJSON(ev.Input)}}
	case orchestrator.EventSubOrchestrationInstanceCompleted:
		h.EventType = &pb.HistoryEvent_SubOrchestrationInstanceCompleted{SubOrchestrationInstanceCompleted: &pb.SubOrchestrationInstanceCompletedEvent{
			TaskScheduledId: int32(ev.TaskID), Result: optJSON(ev.Result)}}
	case orchestrator.EventSubOrchestrationInstanceFailed:
		h.EventType = &pb.HistoryEvent_SubOrchestrationInstanceFailed{SubOrchestrationInstanceFailed: &pb.SubOrchestrationInstanceFailedEvent{
			TaskScheduledId: int32(ev.TaskID), FailureDetails: failureOf(ev)}}
	default:
		// A type this version does not know: carried whole, as JSON.
		b, _ := json.Marshal(ev)
		h.EventType = &pb.HistoryEvent_GenericEvent{GenericEvent: &pb.GenericEvent{Data: wrapperspb.String(string(b))}}
	}
	return h
}

// failureOf is an event's failure in the protocol's form.
func failureOf(ev *orchestrator.HistoryEvent) *pb.TaskFailureDetails {
	if ev.FailureDetails != nil {
		f := FailureToProto(ev.FailureDetails)
		f.IsNonRetriable = f.IsNonRetriable || ev.NonRetriable
		return f
	}
	return &pb.TaskFailureDetails{ErrorType: "Error", ErrorMessage: ev.Failure, IsNonRetriable: ev.NonRetriable}
}

// FailureToProto maps failure details, inner failures included; nil maps
// to nil.
func FailureToProto(f *orchestrator.FailureDetails) *pb.TaskFailureDetails {
	if f == nil {
		return nil
	}
	return &pb.TaskFailureDetails{
		ErrorType: f.ErrorType, ErrorMessage: f.ErrorMessage, StackTrace: optString(f.StackTrace),
		InnerFailure: FailureToProto(f.InnerFailure), IsNonRetriable: f.IsNonRetriable,
	}
}

// FailureFromProto maps the protocol's failure details to Soloist's; nil
// maps to nil.
func FailureFromProto(f *pb.TaskFailureDetails) *orchestrator.FailureDetails {
	if f == nil {
		return nil
	}
	return &orchestrator.FailureDetails{
		ErrorType: f.GetErrorType(), ErrorMessage: f.GetErrorMessage(), StackTrace: f.GetStackTrace().GetValue(),
		InnerFailure: FailureFromProto(f.GetInnerFailure()), IsNonRetriable: f.GetIsNonRetriable(),
	}
}

// statusToProto maps a runtime status.
func statusToProto(s orchestrator.RuntimeStatus) pb.OrchestrationStatus {
	switch s {
	case orchestrator.StatusPending:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_PENDING
	case orchestrator.StatusRunning:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING
	case orchestrator.StatusSuspended:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED
	case orchestrator.StatusContinuedAsNew:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW
	case orchestrator.StatusCompleted:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED
	case orchestrator.StatusFailed:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED
	case orchestrator.StatusTerminated:
		return pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED
	}
	return pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING
}

// statusFromProto maps a protocol status; ok is false for one Soloist does
// not have (CANCELED) or an unknown number.
func statusFromProto(s pb.OrchestrationStatus) (orchestrator.RuntimeStatus, bool) {
	switch s {
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_PENDING:
		return orchestrator.StatusPending, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING:
		return orchestrator.StatusRunning, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED:
		return orchestrator.StatusSuspended, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW:
		return orchestrator.StatusContinuedAsNew, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED:
		return orchestrator.StatusCompleted, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED:
		return orchestrator.StatusFailed, true
	case pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED:
		return orchestrator.StatusTerminated, true
	}
	return "", false
}

// optJSON is a JSON payload as a StringValue; absent when empty.
func optJSON(v json.RawMessage) *wrapperspb.StringValue {
	if len(v) == 0 {
		return nil
	}
	return wrapperspb.String(string(v))
}

// optString is s as a StringValue; absent when empty.
func optString(s string) *wrapperspb.StringValue {
	if s == "" {
		return nil
	}
	return wrapperspb.String(s)
}

// optTime is t as a Timestamp; absent when nil.
func optTime(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
