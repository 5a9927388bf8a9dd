package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Live work: activities and timers.

func (e *executor) startWork(t *Task) {
	if t.started || t.done || t.kind == kindEvent {
		return
	}
	t.started = true
	switch t.kind {
	case kindTimer:
		id := t.id
		t.timer = time.AfterFunc(time.Until(t.fireAt), func() {
			e.post(msg{kind: msgEvent, ev: HistoryEvent{EventType: EventTimerFired, TaskID: id}})
		})
	case kindActivity:
		wctx := e.work()
		e.workers.Add(1)
		e.inflight.Add(1)
		go func() {
			defer e.workers.Done()
			ev := e.callActivity(wctx, e.reg, t)
			e.inflight.Add(-1) // before the post: the step it brings re-checks idleness
			if wctx.Err() == nil {
				e.post(msg{kind: msgEvent, ev: ev})
			}
		}()
	case kindSub:
		wctx := e.work()
		e.workers.Add(1)
		e.childStarts.Add(1)
		e.inflight.Add(1)
		go func() {
			defer e.workers.Done()
			defer e.childStarts.Done()
			ev := e.startChild(wctx, t)
			e.inflight.Add(-1)
			if ev != nil && wctx.Err() == nil {
				e.post(msg{kind: msgEvent, ev: *ev})
			}
		}()
	}
}

// callActivity runs one attempt of an activity task in a span of its own,
// a child of the run's.
func (e *Engine) callActivity(wctx context.Context, reg *Registry, t *Task) HistoryEvent {
	ctx, span := e.tracer.Start(wctx, "activity "+t.name, trace.WithAttributes(
		AttrActivity.String(t.name), AttrTaskID.Int(t.id), AttrAttempt.Int(t.attempt),
		AttrInstanceID.String(e.rec.InstanceID), AttrExecutionID.String(e.rec.ExecutionID),
	))
	ev := e.activityAttempt(ctx, reg, t)
	if ev.EventType == EventTaskFailed {
		RecordFailure(span, ev.FailureDetails)
	}
	span.End()
	return ev
}

func (e *Engine) activityAttempt(wctx context.Context, reg *Registry, t *Task) HistoryEvent {
	fail := func(err error, final bool) HistoryEvent {
		d := DetailsOf(err)
		d.IsNonRetriable = d.IsNonRetriable || final
		return HistoryEvent{EventType: EventTaskFailed, TaskID: t.id, Name: t.name, Failure: d.ErrorMessage,
			NonRetriable: d.IsNonRetriable, FailureDetails: d}
	}
	var fn ActivityFunc
	if reg != nil {
		fn, _ = reg.Activity(t.name)
	}
	if fn == nil {
		return fail(&ApplicationError{Type: "ActivityNotFound", Message: fmt.Sprintf("no activity named %q is registered on this node", t.name)}, true)
	}
	ctx := withActivityInfo(wctx, ActivityInfo{
		InstanceID: e.rec.InstanceID, ExecutionID: e.rec.ExecutionID, FencingToken: e.exec.Token(),
		Name: t.name, TaskID: t.id, Attempt: t.attempt,
	})
	out, err := callActivity(ctx, fn, t.input)
	if err != nil {
		return fail(err, false)
	}
	b, err := json.Marshal(out)
	if err == nil {
		b, err = e.exec.c.checkJSON("activity result", b)
	}
	if err != nil {
		return fail(err, true) // retrying cannot make it storable
	}
	return HistoryEvent{EventType: EventTaskCompleted, TaskID: t.id, Name: t.name, Result: b}
}

func callActivity(ctx context.Context, fn ActivityFunc, input json.RawMessage) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{what: "activity", value: fmt.Sprint(r), stack: string(debug.Stack())}
		}
	}()
	return fn(ctx, input)
}

// Batches: activities that run on this holder commit together.

// batching reports whether the tasks the step issued (fresh) may start
// before their schedule is committed: they are all local activities (or
// there are none and the batch's activities still run), the run was not
// checkpointed (Driver.Checkpoint), and the batch is within its bounds
// (RunOptions.BatchBudget since its last commit, BatchTasks). It opens
// the batch if needed.
func (e *executor) batching(fresh []*Task) bool {
	budget := e.opts.BatchBudget
	maxTasks := e.opts.BatchTasks
	if maxTasks <= 0 {
		maxTasks = DefaultBatchTasks
	}
	if budget <= 0 || e.reg == nil || (len(fresh) == 0 && e.batchRunning == 0) {
		return false
	}
	for _, t := range fresh {
		if t.kind != kindActivity || t.done || t.durable {
			return false // a retried activity's attempt commits first: MaxAttempts holds across takeovers
		}
		if _, ok := e.reg.Activity(t.name); !ok {
			return false // a remote or unknown activity: commit first
		}
	}
	if e.batchTasks+len(fresh) > maxTasks || (e.batchOpen && time.Since(e.batchSince) >= budget) {
		return false
	}
	// Driver.Checkpoint sets stopBatch, then reads uncommitted; this sets
	// uncommitted, then reads stopBatch: either the checkpoint waits for
	// this batch, or there is none and the step commits.
	e.uncommitted.Store(true)
	if e.stopBatch.Load() {
		return false
	}
	if !e.batchOpen {
		e.batchOpen, e.batchSince, e.batchTasks = true, time.Now(), 0
		e.batchGen++
		e.armFlush()
	}
	e.batchTasks += len(fresh)
	return true
}

// armFlush (re)arms the batch's time budget from its last commit.
func (e *executor) armFlush() {
	if !e.batchOpen {
		return
	}
	budget := e.opts.BatchBudget
	if e.flushTimer != nil {
		e.flushTimer.Stop()
	}
	gen := e.batchGen
	e.flushTimer = time.AfterFunc(time.Until(e.batchSince.Add(budget)), func() { e.post(msg{kind: msgFlush, epoch: gen}) })
}

// closeBatch ends the batch after a commit with none of its activities
// running.
func (e *executor) closeBatch() {
	if !e.batchOpen {
		return
	}
	e.batchOpen, e.batchTasks = false, 0
	if e.flushTimer != nil {
		e.flushTimer.Stop()
		e.flushTimer = nil
	}
}

// flush commits what the open batch gen applied so far when its time
// budget has passed: a checkpoint, while its activities go on. With
// nothing to commit it leaves the batch's time as it is, so the next
// result commits at once.
func (e *executor) flush(gen uint64) error {
	if !e.batchOpen || gen != e.batchGen {
		return nil
	}
	if len(e.pending) == 0 && len(e.consumed) == 0 && len(e.extra) == 0 && !e.needMark {
		return nil
	}
	if err := e.commit(); err != nil {
		return err
	}
	e.batchSince = time.Now()
	e.armFlush()
	return nil
}
