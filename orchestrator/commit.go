package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// commit appends the pending events and deletes the consumed inbox keys
// (marking the record Running if it is not yet), retrying through
// transient store errors for as long as the run lasts.
func (e *Engine) commit() error {
	for i := range e.pending {
		e.pending[i].Seq = len(e.history) + i
	}
	s := step{events: e.pending, deletes: e.consumed, ops: e.extraOps()}
	if e.needMark {
		s.change = func(r *Record) { r.RuntimeStatus = StatusRunning }
	}
	if err := e.write(e.ctx, s); err != nil {
		return err
	}
	if cs := e.customStatusSet(); cs != nil {
		e.exec.mu.Lock()
		e.exec.custom = cs
		e.exec.mu.Unlock()
	}
	e.history = append(e.history, e.pending...)
	e.clearPending()
	e.needMark = false
	return nil
}

// clearPending forgets what a commit or final write has written: the
// pending events, their inbox keys, the step's extra writes and the batch
// of deferred steps among them.
func (e *Engine) clearPending() {
	e.pending, e.consumed, e.extra = nil, nil, nil
	e.shown, e.consumedShown, e.deferredSince = 0, 0, time.Time{}
}

// write commits a step, part by part, with its attempts made under wctx
// (the run's context for a step; a final write's finalWriteContext, which
// outlives the run's context), retrying a part whose write failed
// transiently (its outcome is then unknown; the retry finds out) with
// backoff. Retries stop with the run's context; if an attempt's outcome
// was unknown then, one read tells whether it landed. Permanent errors are
// returned.
func (e *Engine) write(wctx context.Context, s step) error {
	parts, err := e.exec.plan(s)
	if err != nil {
		return err
	}
	for _, p := range parts {
		for {
			err := e.exec.write(wctx, p)
			if err == nil {
				break
			}
			retryable := errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrStoreDenied)
			if !retryable {
				return err
			}
			if e.onStoreError != nil {
				e.onStoreError(err)
			}
			if e.ctx.Err() != nil || wctx.Err() != nil {
				if e.exec.landed(context.WithoutCancel(e.ctx)) {
					break
				}
				if e.ctx.Err() != nil {
					return context.Cause(e.ctx)
				}
				// The run goes on but the write's own bound passed (a
				// final write's finalWriteTimeout): not written, and the
				// caller must not take it as done.
				return fmt.Errorf("orchestrator: the write was not committed in time: %w", err)
			}
			if e.retry == nil {
				e.retry = newRetry()
			}
			wait := e.retry.NextBackOff()
			e.log.Warn("commit failed; retrying", e.logArgs("error", err, "retry_in", wait.Round(time.Millisecond))...)
			t := time.NewTimer(wait)
			select {
			case <-e.ctx.Done():
				t.Stop()
			case <-wctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if e.retry != nil {
			e.retry.Reset()
		}
	}
	return nil
}

// newRetry is the exponential backoff with jitter of the package's retry
// loops: 50 ms doubling to 10 s.
func newRetry() *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 10 * time.Second}
	b.Reset()
	return b
}

// RetryUnavailable calls write until it succeeds, fails with an error
// other than ErrUnavailable (etcd did not answer: write must be safe to
// repeat, as its outcome is unknown), or ctx ends, waiting the package's
// backoff (newRetry) between attempts.
func RetryUnavailable(ctx context.Context, write func() error) error {
	return retry(ctx, write, func(err error) bool { return errors.Is(err, ErrUnavailable) }, nil)
}

// retry calls write until it succeeds, fails with an error retryable does
// not accept, or ctx ends (then ctx's cause), telling onRetry (if set) of
// each wait of the package's backoff.
func retry(ctx context.Context, write func() error, retryable func(error) bool, onRetry func(err error, wait time.Duration)) error {
	b := newRetry()
	for {
		err := write()
		if err == nil || !retryable(err) {
			return err
		}
		wait := b.NextBackOff()
		if onRetry != nil {
			onRetry(err, wait)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// sleep waits d, or until ctx ends (then its cause).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// extraOps are the writes of the step's SetCustomStatus and SendEvent
// actions.
func (e *Engine) extraOps() []clientv3.Op {
	var ops []clientv3.Op
	x := e.exec
	for _, a := range e.extra {
		switch a := a.(type) {
		case SetCustomStatus:
			ops = append(ops, clientv3.OpPut(x.c.keys.CustomStatus(x.id), string(orNull(a.Status))))
		}
	}
	for _, ev := range e.pending {
		if ev.EventType == EventEventSent {
			b, _ := json.Marshal(HistoryEvent{EventType: EventEventRaised, Timestamp: ev.Timestamp, Name: ev.Name, Input: orNull(ev.Input)})
			key := fmt.Sprintf("%ssent-%s-%d", x.c.keys.InboxPrefix(ev.InstanceID), e.rec.ExecutionID, ev.TaskID)
			ops = append(ops, clientv3.OpPut(key, string(b)))
		}
	}
	return ops
}

// customStatusSet is what the step's last SetCustomStatus stored, nil if
// none: the Execution's copy is updated after the commit.
func (e *Engine) customStatusSet() json.RawMessage {
	var out json.RawMessage
	for _, a := range e.extra {
		if a, ok := a.(SetCustomStatus); ok {
			out = orNull(a.Status)
		}
	}
	return out
}

// complete ends the execution as c says, with the step's pending events:
// the final write.
func (e *Engine) complete(c Complete) (RuntimeStatus, error) {
	switch c.Status {
	case StatusContinuedAsNew:
		return e.continueAsNew(c)
	case StatusFailed:
		fd := c.Failure
		if fd == nil {
			fd = &FailureDetails{ErrorType: "Error", ErrorMessage: "the orchestration failed"}
		}
		return e.finishWith(StatusFailed, nil, fd)
	case StatusTerminated:
		return e.finishWith(StatusTerminated, c.Output, nil)
	}
	return e.finishWith(StatusCompleted, c.Output, nil)
}

// finishWith commits the pending events, ExecutionCompleted and the
// terminal status st with the owners key's release, in one transaction
// when they fit (the last step's commit is the final write). It is not
// abandoned when its own owners-key delete cancels the run
// (finalWriteContext); the fence still refuses it if the holding was
// really lost.
func (e *Engine) finishWith(st RuntimeStatus, output json.RawMessage, fd *FailureDetails) (RuntimeStatus, error) {
	ev := HistoryEvent{EventType: EventExecutionCompleted, Timestamp: now(), Result: output, Status: st}
	if fd != nil {
		ev.FailureDetails, ev.Failure = fd, fd.ErrorMessage
	}
	if len(e.history)+len(e.pending) < MaxHistoryEvents+1 {
		e.pending = append(e.pending, ev)
	}
	for i := range e.pending {
		e.pending[i].Seq = len(e.history) + i
	}
	if e.ctx.Err() != nil {
		return "", context.Cause(e.ctx) // stopped first: the next holder decides
	}
	s := e.exec.finishStep(e.pending, st, output, fd)
	s.deletes = nil // the final write deletes the whole inbox
	s.ops = e.extraOps()
	wctx, cancel := finalWriteContext(e.ctx)
	defer cancel()
	if err := e.tracedFinal(wctx, s, st); err != nil {
		return "", err
	}
	e.failure = ev.FailureDetails
	e.history = append(e.history, e.pending...)
	e.clearPending()
	return st, nil
}

// tracedFinal is the write of the execution's end, in a short span (a
// child of the run's) that says the status it writes.
func (e *Engine) tracedFinal(wctx context.Context, s step, st RuntimeStatus) error {
	_, span := e.tracer.Start(wctx, "complete "+e.rec.Name, trace.WithAttributes(
		AttrInstanceID.String(e.rec.InstanceID), AttrExecutionID.String(e.rec.ExecutionID),
		AttrRuntimeStatus.String(string(st)), AttrFencingToken.Int64(e.exec.Token()),
	))
	defer span.End()
	err := e.write(wctx, s)
	if err != nil {
		span.SetStatus(codes.Error, firstLine(err.Error()))
	}
	return err
}

// finalWriteContext is the context of a write that deletes the holder's own
// owners key (the final result, ContinueAsNew). The holder watches that key,
// so the commit itself cancels ctx, possibly before its reply arrives; the
// write must not be abandoned for that. It is bounded by finalWriteTimeout.
func finalWriteContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), finalWriteTimeout)
}

// finalWriteTimeout bounds the retries of a final write. After it the run
// stops with the write's error, and its node runs it again (a fresh read,
// a replay, the final write once more) after a backoff.
var finalWriteTimeout = 30 * time.Second

// continueAsNew ends this execution and starts the next generation of the
// instance: a new executionId with c.Output as its input (and c.NewVersion
// if set), status ContinuedAsNew, this history deleted, c.CarryoverEvents
// starting the new execution's history, and the events never consumed
// left in the inbox for it (deleted with c.DropInbox). The owners key is
// released in the same transaction; a node (likely this one) takes the new
// execution.
func (e *Engine) continueAsNew(c Complete) (RuntimeStatus, error) {
	x := e.exec
	input, err := x.c.checkJSON("ContinueAsNew input", c.Output)
	if err != nil {
		return e.finishWith(StatusFailed, nil, DetailsOf(err))
	}
	id := e.rec.InstanceID
	newExec := NewID()
	events := []HistoryEvent{{EventType: EventExecutionStarted, Timestamp: now(), Name: e.rec.Name, Input: input}}
	deletes := e.consumed
	if c.DropInbox {
		// Drop what waits in the inbox too: what arrives after this read
		// belongs to the next execution.
		inbox, err := x.c.readInbox(e.ctx, id, 0)
		if err != nil {
			return "", err
		}
		for _, in := range inbox {
			if !e.seen[in.Key] {
				deletes = append(deletes, in.Key)
			}
		}
	}
	for _, ev := range c.CarryoverEvents {
		ev.Timestamp = now()
		events = append(events, ev)
	}
	for i := range events {
		events[i].Seq = i
	}
	oldExec := e.rec.ExecutionID
	s := step{
		events:  events,
		deletes: deletes,
		history: x.c.keys.History(id, newExec),
		blobs:   x.c.keys.Blobs(id, newExec),
		change: func(r *Record) {
			r.RuntimeStatus = StatusContinuedAsNew
			r.ExecutionID = newExec
			if c.NewVersion != "" {
				r.Version = c.NewVersion
			}
		},
		final: func(*Record) []clientv3.Op {
			return []clientv3.Op{
				x.c.inputOp(id, input),
				clientv3.OpDelete(x.c.keys.Output(id)),
				clientv3.OpDelete(x.c.keys.History(id, oldExec), clientv3.WithPrefix()),
				clientv3.OpDelete(x.c.keys.Blobs(id, oldExec), clientv3.WithPrefix()),
				x.c.taskQueueOps(id),
				x.fence.releaseOp(),
			}
		},
		finalBytes: len(input),
	}
	if e.ctx.Err() != nil {
		return "", context.Cause(e.ctx)
	}
	wctx, cancel := finalWriteContext(e.ctx)
	defer cancel()
	if err := e.tracedFinal(wctx, s, StatusContinuedAsNew); err != nil {
		return "", err
	}
	e.clearPending()
	return StatusContinuedAsNew, nil
}
