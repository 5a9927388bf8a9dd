package orchestrator

import (
	"fmt"
	"sort"
	"time"
)

// NonDeterminismError fails an execution whose code no longer matches its
// history.
type NonDeterminismError struct {
	Seq     int
	History string // what the history holds at Seq
	Code    string // what the code did instead
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("non-deterministic orchestration: history event %d is %s but the code now does %s; "+
		"orchestrations must make the same calls in the same order on replay (deploy changed code under a new name, or restart the instance)",
		e.Seq, e.History, e.Code)
}

// begin replays the history read at open, then delivers the inbox entries
// not consumed yet and restarts the work the history left unfinished.
func (e *executor) begin() error {
	x := e.exec
	hist := x.history
	x.history = nil // the executor owns it now
	if err := e.resolveForReplay(hist); err != nil {
		return err
	}
	for _, ev := range hist {
		if ev.InboxKey != "" {
			e.see(ev.InboxKey)
		}
	}
	e.needMark = e.rec.RuntimeStatus != StatusRunning
	e.countTasks(hist)
	e.replaying = true
	for _, ev := range hist {
		if err := e.apply(ev); err != nil {
			return err
		}
		e.history = append(e.history, ev)
	}
	e.replaying = false
	if len(hist) == 0 {
		in := x.input
		ev := HistoryEvent{EventType: EventExecutionStarted, Timestamp: now(), Name: e.rec.Name, Input: in}
		e.pending = append(e.pending, ev)
		if err := e.apply(ev); err != nil {
			return err
		}
	}
	// The inbox as read at open: entries consumed before (in history) but
	// not yet deleted are deleted with the next commit; the others are
	// delivered in arrival order, suspend and resume marks included (events
	// raised while suspended land between ExecutionSuspended and
	// ExecutionResumed, and apply holds them back until the resume).
	inbox := x.inbox
	x.inbox = nil
	for _, in := range inbox {
		if e.seen[in.Key] {
			e.consumed = append(e.consumed, in.Key)
			continue
		}
		if err := e.consume(in); err != nil {
			return err
		}
	}
	// Scheduled in history but not finished (not even by what the inbox
	// just delivered): their work runs (again) here.
	// Tasks the code issued past the end of the history start only after
	// the live loop has committed their schedule.
	uncommitted := map[*Task]bool{}
	for _, t := range e.actions {
		uncommitted[t] = true
	}
	var again []*Task
	for _, t := range e.tasks {
		if !t.done && t.id >= 0 && !uncommitted[t] {
			again = append(again, t)
		}
	}
	sort.Slice(again, func(i, j int) bool { return again[i].id < again[j].id })
	for _, t := range again {
		e.startWork(t)
	}
	if e.opts.WatchInbox {
		e.watchInbox()
	}
	return nil
}

// resolveForReplay reads the blobs replay needs: results of completed
// tasks, data of consumed events, inputs of activities to run again.
func (e *executor) resolveForReplay(hist []HistoryEvent) error {
	done := map[int]bool{}
	for _, ev := range hist {
		switch ev.EventType {
		case EventTaskCompleted, EventTaskFailed, EventSubOrchestrationInstanceCompleted, EventSubOrchestrationInstanceFailed:
			done[ev.TaskID] = true
		}
	}
	return e.exec.c.resolve(e.ctx, e.rec.InstanceID, e.rec.ExecutionID, hist, func(ev *HistoryEvent) (bool, bool) {
		switch ev.EventType {
		case EventTaskCompleted, EventSubOrchestrationInstanceCompleted:
			return false, true
		case EventEventRaised:
			return true, false
		case EventTaskScheduled, EventSubOrchestrationInstanceCreated:
			return !done[ev.TaskID], false
		}
		return false, false
	})
}

// task returns the task of a history task ID, nil if none.
func (e *executor) task(id int) *Task {
	if id < 0 || id >= len(e.tasks) {
		return nil
	}
	return e.tasks[id]
}

func scheduledEvent(t *Task, ts time.Time) HistoryEvent {
	switch t.kind {
	case kindTimer:
		fa := t.fireAt
		return HistoryEvent{EventType: EventTimerCreated, Timestamp: ts, TaskID: t.id, FireAt: &fa}
	case kindSub:
		return HistoryEvent{EventType: EventSubOrchestrationInstanceCreated, Timestamp: ts, TaskID: t.id, Name: t.name,
			InstanceID: t.sub.id, Input: t.input}
	}
	return HistoryEvent{EventType: EventTaskScheduled, Timestamp: ts, TaskID: t.id, Name: t.name, Input: t.input}
}

// apply folds one event into the orchestration's state, running the code
// when the event completes what it waits for.
func (e *executor) apply(ev HistoryEvent) error {
	e.now = ev.Timestamp
	switch ev.EventType {
	case EventExecutionStarted:
		e.startCoroutine()
	case EventTaskScheduled, EventTimerCreated, EventSubOrchestrationInstanceCreated:
		return e.match(ev)
	case EventSubOrchestrationInstanceCompleted, EventSubOrchestrationInstanceFailed:
		t := e.task(ev.TaskID)
		if t == nil || t.kind != kindSub {
			return &NonDeterminismError{Seq: ev.Seq, History: fmt.Sprintf("%s of task %d", ev.EventType, ev.TaskID), Code: "no such sub-orchestration"}
		}
		if ev.EventType == EventSubOrchestrationInstanceCompleted {
			t.complete(ev.Result, nil)
		} else {
			msg := ev.Failure
			if ev.FailureDetails != nil {
				msg = ev.FailureDetails.ErrorMessage
			}
			t.complete(nil, &TaskFailedError{Kind: "sub-orchestration", Name: t.name, InstanceID: t.sub.id, Message: msg,
				NonRetriable: ev.FailureDetails != nil && ev.FailureDetails.IsNonRetriable, Details: ev.FailureDetails})
		}
		e.wake()
	case EventTaskCompleted, EventTaskFailed, EventTimerFired:
		t := e.task(ev.TaskID)
		if t == nil {
			return &NonDeterminismError{Seq: ev.Seq, History: fmt.Sprintf("%s of task %d", ev.EventType, ev.TaskID), Code: "no such task"}
		}
		if t.batched && ev.EventType != EventTimerFired && !t.done {
			t.batched = false
			e.batchRunning--
		}
		switch ev.EventType {
		case EventTaskCompleted:
			t.complete(ev.Result, nil)
		case EventTaskFailed:
			t.complete(nil, &TaskFailedError{Name: t.name, Message: ev.Failure, NonRetriable: ev.NonRetriable, Details: ev.FailureDetails})
		default:
			t.complete(nil, nil)
		}
		e.wake()
	case EventEventRaised:
		if e.suspended {
			e.held = append(e.held, ev) // delivered at the resume
			return nil
		}
		e.deliver(ev.Name, ev.Input)
		e.wake()
	case EventExecutionSuspended:
		e.suspended = true
	case EventExecutionResumed:
		e.suspended = false
		held := e.held
		e.held = nil
		for _, h := range held {
			e.deliver(h.Name, h.Input)
		}
		e.wake()
	}
	return nil
}

// match checks a replayed scheduling event against the code's next action.
func (e *executor) match(ev HistoryEvent) error {
	want := fmt.Sprintf("%s %d %q", ev.EventType, ev.TaskID, ev.Name)
	if len(e.actions) == 0 {
		return &NonDeterminismError{Seq: ev.Seq, History: want, Code: "nothing (it is waiting or has returned)"}
	}
	t := e.actions[0]
	got := scheduledEvent(t, time.Time{})
	if got.EventType != ev.EventType || t.id != ev.TaskID || got.Name != ev.Name {
		return &NonDeterminismError{Seq: ev.Seq, History: want, Code: fmt.Sprintf("%s %d %q", got.EventType, t.id, got.Name)}
	}
	if t.kind == kindTimer && ev.FireAt != nil {
		t.fireAt = *ev.FireAt // the original fire time, across takeovers
	}
	if (t.kind == kindActivity || t.kind == kindSub) && len(ev.Input) > 0 {
		t.input = ev.Input // as scheduled (and resolved from its blob)
	}
	if t.kind == kindSub && ev.InstanceID != "" {
		t.sub.id = ev.InstanceID
	}
	e.actions = e.actions[1:]
	return nil
}
