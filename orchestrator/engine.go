package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"encoding/json"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/trace"
)

// ErrHistoryLimit fails an execution whose history would pass MaxHistoryEvents.
var ErrHistoryLimit = fmt.Errorf("orchestrator: history passed %d events; use ContinueAsNew for long loops", MaxHistoryEvents)

// ErrInvalidAction is what a step's completion returns when a driver's
// actions cannot be taken (an unknown or nil action, an ID out of
// sequence, an action after Complete, a payload over the limit); nothing of
// the step is written.
var ErrInvalidAction = errors.New("orchestrator: invalid orchestration action")

// ErrStaleCompletion is what a step's completion returns when it answers a
// dispatch that is no longer the current one (Engine.Complete with an older
// WorkItem.Seq, or after the engine closed): nothing is written.
var ErrStaleCompletion = errors.New("orchestrator: stale step completion")

// Action is one thing an orchestration step asks of the engine, in the
// Durable Task vocabulary: ScheduleTask, CreateTimer,
// CreateSubOrchestration, SendEvent, TerminateInstance, SetCustomStatus,
// Complete. Waiting for an external event is no action: a driver waits by
// not completing a task. TerminateInstance (a Durable Task worker's
// terminateOrchestration) is taken by an engine opened with OpenEngine.
type Action interface{ isAction() }

// ScheduleTask schedules the activity Name. ID is the orchestration's next
// task sequence number (0, 1, 2, ... in the order the code issued its
// tasks, timers and sub-orchestrations: the numbering of the Go replay and
// of the Durable Task workers' action IDs).
type ScheduleTask struct {
	ID      int
	Name    string
	Version string
	Input   json.RawMessage
}

// CreateTimer creates the durable timer ID that fires at FireAt.
type CreateTimer struct {
	ID     int
	FireAt time.Time
}

// CreateSubOrchestration starts the orchestration Name as the child
// InstanceID of this one, as task ID; the child's end is delivered to this
// instance's inbox.
type CreateSubOrchestration struct {
	ID         int
	Name       string
	InstanceID string
	Version    string
	Input      json.RawMessage
}

// SendEvent raises the event Name with Data to the instance InstanceID, in
// the step's own transaction (the event waits in that instance's inbox,
// under a key named by this execution and ID, so a repeated step puts it
// once).
type SendEvent struct {
	ID         int
	InstanceID string
	Name       string
	Data       json.RawMessage
}

// TerminateInstance terminates the instance InstanceID (not this one) with
// Reason, as Client.Terminate does, and with Recursive the
// sub-orchestrations below it too, as Client.TerminateRecursive does. A
// terminate is a compare-and-swap on the other instance's record, so it
// cannot join the step's fenced transaction: Engine.Complete makes it
// before it commits the step, and a terminal or missing target is no
// error. The step's history records it (TerminateSent, which counts ID in
// the task sequence); a step whose commit is lost is answered again and
// the terminate made again, which changes nothing on a target already
// terminal: at least once, and done whenever the step is committed. A
// TerminateInstance whose ID and target the history records already is a
// driver's repeat (the Durable Task SDKs keep no history of it) and is
// left out of the step.
type TerminateInstance struct {
	ID         int
	InstanceID string
	Reason     string
	Recursive  bool
}

// SetCustomStatus sets the instance's custom status (JSON) with the step's
// commit.
type SetCustomStatus struct {
	Status json.RawMessage
}

// Complete ends the execution: Status is Completed (with Output), Failed
// (with Failure), Terminated (with Output as the reason), or
// ContinuedAsNew (Output is the next execution's input; CarryoverEvents,
// EventRaised events this execution received and did not process, start
// the next history; DropInbox deletes the inbox entries not yet received
// rather than leaving them to the next execution). It must be the last
// action of a step.
type Complete struct {
	Status          RuntimeStatus
	Output          json.RawMessage
	Failure         *FailureDetails
	NewVersion      string
	CarryoverEvents []HistoryEvent
	DropInbox       bool
}

func (ScheduleTask) isAction()           {}
func (CreateTimer) isAction()            {}
func (CreateSubOrchestration) isAction() {}
func (SendEvent) isAction()              {}
func (TerminateInstance) isAction()      {}
func (SetCustomStatus) isAction()        {}
func (Complete) isAction()               {}

// Engine turns one execution's actions into history and fenced commits: it
// holds the committed history, the events applied and not yet committed,
// and the inbox keys they consumed, and writes them with the holder's
// fence (Execution.plan cuts every commit to etcd's limits). The Go
// coroutine driver (Registry.Drive) runs on it, and so does a driver in
// another process through Open/Next/Complete (see step.go).
type Engine struct {
	ctx  context.Context // the run's: writes stop with it
	exec *Execution
	rec  Record // as opened
	log  *slog.Logger
	// tracer makes the final write's span; span is the run's.
	tracer       trace.Tracer
	span         trace.Span
	onStoreError func(error)

	history  []HistoryEvent // committed
	pending  []HistoryEvent // applied, to commit in the next step
	consumed []string       // inbox keys to delete in the next step
	extra    []Action       // SendEvent and SetCustomStatus of the next step
	seen     map[string]bool
	needMark bool // the record is not Running yet
	retry    *backoff.ExponentialBackOff
	failure  *FailureDetails // of a Failed final write, for the span
	nextTask int             // task IDs scheduled so far: the next must be this
	step     *stepState      // of an engine opened for a driver (OpenEngine)
	// Deferred steps (EngineOptions.BatchBudget): the first shown events
	// of pending were answered by the driver and wait uncommitted since
	// deferredSince.
	batchBudget   time.Duration
	shown         int // of pending
	consumedShown int // of consumed: the inbox keys of those events
	deferredSince time.Time
}

// see notes an inbox key as delivered.
func (g *Engine) see(key string) {
	if g.seen == nil {
		g.seen = map[string]bool{}
	}
	g.seen[key] = true
}

// logArgs are the attributes every line of the run carries.
func (g *Engine) logArgs(args ...any) []any {
	return append([]any{"instance_id", g.rec.InstanceID, "execution_id", g.rec.ExecutionID, "fencing_token", g.exec.Token()}, args...)
}

// countTasks sets the next expected task ID from a history.
func (g *Engine) countTasks(hist []HistoryEvent) {
	for _, ev := range hist {
		switch ev.EventType {
		case EventTaskScheduled, EventTimerCreated, EventSubOrchestrationInstanceCreated, EventEventSent, EventTerminateSent:
			g.nextTask = max(g.nextTask, ev.TaskID+1)
		}
	}
}

// validate checks a driver's actions against the execution before
// anything is written: known kinds, IDs in sequence from the next task ID,
// Complete last, payloads within the limit.
func (g *Engine) validate(actions []Action) error {
	next := g.nextTask
	bad := func(i int, format string, args ...any) error {
		return fmt.Errorf("%w: action %d: %s", ErrInvalidAction, i, fmt.Sprintf(format, args...))
	}
	checkID := func(i, id int) error {
		if id != next {
			return bad(i, "task ID %d is out of sequence (the next task ID is %d)", id, next)
		}
		next++
		return nil
	}
	checkPayload := func(i int, field string, b json.RawMessage) error {
		if _, err := g.exec.c.checkJSON(field, b); err != nil {
			return bad(i, "%v", err)
		}
		return nil
	}
	checkName := func(i int, field, name string) error {
		if name == "" || !utf8.ValidString(name) || len(name) > MaxInstanceIDLength {
			return bad(i, "%s %q is empty, too long or not UTF-8", field, name)
		}
		return nil
	}
	for i, a := range actions {
		var err error
		switch a := a.(type) {
		case ScheduleTask:
			err = errors.Join(checkID(i, a.ID), checkName(i, "activity name", a.Name), checkPayload(i, "activity input", a.Input))
		case CreateTimer:
			err = checkID(i, a.ID)
			if err == nil && a.FireAt.IsZero() {
				err = bad(i, "timer %d has no fire time", a.ID)
			}
		case CreateSubOrchestration:
			err = errors.Join(checkID(i, a.ID), checkName(i, "orchestration name", a.Name), checkPayload(i, "sub-orchestration input", a.Input))
			if err == nil && a.InstanceID != "" {
				if verr := ValidateInstanceID(a.InstanceID); verr != nil {
					err = bad(i, "%v", verr)
				}
			}
		case SendEvent:
			err = errors.Join(checkID(i, a.ID), checkName(i, "event name", a.Name), checkPayload(i, "event data", a.Data))
			if err == nil {
				if verr := ValidateInstanceID(a.InstanceID); verr != nil {
					err = bad(i, "%v", verr)
				}
			}
		case TerminateInstance:
			err = errors.Join(checkID(i, a.ID), checkPayload(i, "terminate reason", reasonJSON(a.Reason)))
			if err == nil {
				if verr := ValidateInstanceID(a.InstanceID); verr != nil {
					err = bad(i, "%v", verr)
				} else if a.InstanceID == g.rec.InstanceID {
					err = bad(i, "an orchestration cannot terminate its own instance; complete it with status Terminated")
				}
			}
		case SetCustomStatus:
			err = checkPayload(i, "custom status", a.Status)
		case Complete:
			if i != len(actions)-1 {
				err = bad(i, "Complete must be the last action of a step")
				break
			}
			switch a.Status {
			case StatusCompleted, StatusFailed, StatusTerminated, StatusContinuedAsNew:
			default:
				err = bad(i, "Complete with status %q (want Completed, Failed, Terminated or ContinuedAsNew)", a.Status)
			}
			if err == nil {
				err = checkPayload(i, "output", a.Output)
			}
			if err == nil && a.NewVersion != "" && a.Status != StatusContinuedAsNew {
				err = bad(i, "NewVersion is for ContinuedAsNew only")
			}
		case nil:
			err = bad(i, "nil action")
		default:
			err = bad(i, "unknown action %T", a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// schedule appends the history event of a scheduling action (ScheduleTask,
// CreateTimer, CreateSubOrchestration, SendEvent, TerminateInstance) to the
// step; other actions of the step (SetCustomStatus) go with its commit. Its
// ID must be the next task ID.
func (g *Engine) schedule(a Action, ts time.Time) error {
	var ev HistoryEvent
	switch a := a.(type) {
	case ScheduleTask:
		ev = HistoryEvent{EventType: EventTaskScheduled, TaskID: a.ID, Name: a.Name, Version: a.Version, Input: a.Input}
	case CreateTimer:
		fa := a.FireAt
		ev = HistoryEvent{EventType: EventTimerCreated, TaskID: a.ID, FireAt: &fa}
	case CreateSubOrchestration:
		ev = HistoryEvent{EventType: EventSubOrchestrationInstanceCreated, TaskID: a.ID, Name: a.Name, Version: a.Version,
			InstanceID: a.InstanceID, Input: a.Input}
	case SendEvent:
		ev = HistoryEvent{EventType: EventEventSent, TaskID: a.ID, Name: a.Name, InstanceID: a.InstanceID, Input: a.Data}
	case TerminateInstance:
		ev = HistoryEvent{EventType: EventTerminateSent, TaskID: a.ID, InstanceID: a.InstanceID, Reason: a.Reason, Recursive: a.Recursive}
	case SetCustomStatus:
		g.extra = append(g.extra, a)
		return nil
	default:
		return fmt.Errorf("%w: %T is not a step action", ErrInvalidAction, a)
	}
	if ev.TaskID != g.nextTask {
		return fmt.Errorf("%w: task ID %d is out of sequence (the next task ID is %d)", ErrInvalidAction, ev.TaskID, g.nextTask)
	}
	g.nextTask++
	ev.Timestamp = ts
	g.pending = append(g.pending, ev)
	return nil
}

// admit turns an inbox entry into the event it delivers, once: it reports
// false for an entry seen before, one for another execution, and a task's
// completion that open (is task id open, scheduled as kind?) denies (not a
// task of this execution's, or reported already). A sub-orchestration's
// large output is read from the child.
func (g *Engine) admit(in InboxEntry, open func(id int, kind EventType) bool) (HistoryEvent, bool, error) {
	if g.seen[in.Key] {
		return HistoryEvent{}, false, nil
	}
	g.see(in.Key)
	g.consumed = append(g.consumed, in.Key)
	ev := in.Event
	if ev.ExecutionID != "" && ev.ExecutionID != g.rec.ExecutionID {
		return HistoryEvent{}, false, nil // for another execution of this instance: dropped
	}
	switch ev.EventType {
	case EventSubOrchestrationInstanceCompleted, EventSubOrchestrationInstanceFailed:
		if !open(ev.TaskID, EventSubOrchestrationInstanceCreated) {
			return HistoryEvent{}, false, nil
		}
		if ev.ResultRef == refChildOutput {
			out, err := g.exec.c.childOutput(g.ctx, ev.InstanceID)
			if err != nil {
				if errors.Is(err, ErrUnavailable) {
					return HistoryEvent{}, false, err
				}
				ev.EventType, ev.FailureDetails = EventSubOrchestrationInstanceFailed, DetailsOf(err)
				ev.Failure = ev.FailureDetails.ErrorMessage
			}
			ev.Result, ev.ResultRef = out, ""
		}
	case EventTaskCompleted, EventTaskFailed:
		// A remote worker's result (Client.CompleteTask).
		if !open(ev.TaskID, EventTaskScheduled) {
			return HistoryEvent{}, false, nil
		}
	case EventEventRaised, EventExecutionSuspended, EventExecutionResumed:
	default:
		return HistoryEvent{}, false, nil // nothing an inbox may deliver
	}
	ev.Timestamp = now()
	ev.InboxKey = in.Key
	return ev, true, nil
}
