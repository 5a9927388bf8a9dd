package httpapi

import (
	"encoding/json"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// HistoryEvent is one item of historyEvents in a status body (showHistory=true),
// in the shape of the Durable Functions HTTP API: PascalCase fields, the
// EventType as a string and every time in RFC 3339 UTC. Which fields an
// event carries depends on its type:
//
//	ExecutionStarted    FunctionName, Input (only with showInput)
//	TaskScheduled       Name, FunctionName, Input* (only while the activity has not finished; see below)
//	TaskCompleted       FunctionName, ScheduledTime, Result*
//	TaskFailed          FunctionName, ScheduledTime, Reason (the failure message), FailureDetails
//	TimerCreated        FireAt
//	TimerFired          FireAt (that of its TimerCreated)
//	EventRaised         Name, Input*
//	ExecutionSuspended  Reason
//	ExecutionResumed    Reason
//	ContinuedAsNew      Input*
//	ExecutionCompleted  OrchestrationStatus, Result* (Completed), FailureDetails (Failed)
//
// Fields marked * are payloads, present only with showHistoryOutput=true.
//
// As in Durable Functions, the history is compressed: the TaskScheduled of
// an activity that completed or failed is left out, and its TaskCompleted
// or TaskFailed carries its FunctionName and ScheduledTime instead. Task
// and timer IDs are left out too.
type HistoryEvent struct {
	EventType           string          `json:"EventType"`
	Timestamp           time.Time       `json:"Timestamp"`
	FunctionName        string          `json:"FunctionName,omitempty"`
	Name                string          `json:"Name,omitempty"`
	OrchestrationStatus string          `json:"OrchestrationStatus,omitempty"`
	ScheduledTime       *time.Time      `json:"ScheduledTime,omitempty"`
	FireAt              *time.Time      `json:"FireAt,omitempty"`
	Input               json.RawMessage `json:"Input,omitempty"`
	Result              json.RawMessage `json:"Result,omitempty"`
	Reason              string          `json:"Reason,omitempty"`
	FailureDetails      *FailureDetails `json:"FailureDetails,omitempty"`
}

// FailureDetails says why a task or an execution failed (TaskFailed,
// ExecutionCompleted with OrchestrationStatus Failed), in the PascalCase of
// the history shape.
type FailureDetails struct {
	ErrorType      string          `json:"ErrorType,omitempty"`
	ErrorMessage   string          `json:"ErrorMessage"`
	StackTrace     string          `json:"StackTrace,omitempty"`
	InnerFailure   *FailureDetails `json:"InnerFailure,omitempty"`
	IsNonRetriable bool            `json:"IsNonRetriable,omitempty"`
}

func failureBody(fd *orchestrator.FailureDetails, message string) *FailureDetails {
	if fd == nil {
		if message == "" {
			return nil
		}
		return &FailureDetails{ErrorMessage: message}
	}
	return &FailureDetails{ErrorType: fd.ErrorType, ErrorMessage: fd.ErrorMessage, StackTrace: fd.StackTrace,
		InnerFailure: failureBody(fd.InnerFailure, ""), IsNonRetriable: fd.IsNonRetriable}
}

// historyBody maps an execution's history to historyEvents. showInput
// governs the input of ExecutionStarted (like the status body's input);
// showOutput (showHistoryOutput) governs every other payload. It never
// returns nil, so an empty history is [] in JSON.
func historyBody(events []orchestrator.HistoryEvent, showInput, showOutput bool) []HistoryEvent {
	scheduled := map[int]orchestrator.HistoryEvent{} // TaskScheduled by task ID
	finished := map[int]bool{}                       // task IDs with a TaskCompleted or TaskFailed
	timers := map[int]*time.Time{}                   // TimerCreated's FireAt by task ID
	for _, ev := range events {
		switch ev.EventType {
		case orchestrator.EventTaskScheduled:
			scheduled[ev.TaskID] = ev
		case orchestrator.EventTaskCompleted, orchestrator.EventTaskFailed:
			finished[ev.TaskID] = true
		case orchestrator.EventTimerCreated:
			timers[ev.TaskID] = ev.FireAt
		}
	}
	payload := func(m json.RawMessage) json.RawMessage {
		if !showOutput {
			return nil
		}
		return orNull(m)
	}
	out := make([]HistoryEvent, 0, len(events))
	for _, ev := range events {
		h := HistoryEvent{EventType: string(ev.EventType), Timestamp: ev.Timestamp.UTC()}
		switch ev.EventType {
		case orchestrator.EventExecutionStarted:
			h.FunctionName = ev.Name
			if showInput {
				h.Input = orNull(ev.Input)
			}
		case orchestrator.EventTaskScheduled:
			if finished[ev.TaskID] {
				continue // shown by its TaskCompleted or TaskFailed
			}
			h.Name, h.FunctionName = ev.Name, ev.Name
			h.Input = payload(ev.Input)
		case orchestrator.EventTaskCompleted, orchestrator.EventTaskFailed:
			h.FunctionName = ev.Name
			if s, ok := scheduled[ev.TaskID]; ok {
				h.FunctionName = s.Name
				h.ScheduledTime = utc(&s.Timestamp)
			}
			if ev.EventType == orchestrator.EventTaskCompleted {
				h.Result = payload(ev.Result)
			} else {
				h.Reason = ev.Failure
				h.FailureDetails = failureBody(ev.FailureDetails, ev.Failure)
			}
		case orchestrator.EventTimerCreated:
			h.FireAt = utc(ev.FireAt)
		case orchestrator.EventTimerFired:
			h.FireAt = utc(ev.FireAt)
			if h.FireAt == nil {
				h.FireAt = utc(timers[ev.TaskID])
			}
		case orchestrator.EventEventRaised:
			h.Name = ev.Name
			h.Input = payload(ev.Input)
		case orchestrator.EventExecutionSuspended, orchestrator.EventExecutionResumed:
			h.Reason = ev.Reason
		case orchestrator.EventContinuedAsNew:
			h.Input = payload(ev.Input)
		case orchestrator.EventExecutionCompleted:
			h.OrchestrationStatus = string(ev.Status)
			if ev.Failure != "" || ev.FailureDetails != nil {
				h.FailureDetails = failureBody(ev.FailureDetails, ev.Failure)
			} else {
				h.Result = payload(ev.Result)
			}
		default: // a type this version does not know: what every event may carry
			h.Name, h.Reason = ev.Name, ev.Reason
		}
		out = append(out, h)
	}
	return out
}

// utc returns a copy of *t in UTC, nil for nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
