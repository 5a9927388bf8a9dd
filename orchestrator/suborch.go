package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
)

// subCall is what a sub-orchestration task starts.
type subCall struct {
	id       string
	conflict ConflictPolicy
	version  string
	tags     map[string]string
}

// SubOrchestratorOption configures CallSubOrchestrator.
type SubOrchestratorOption func(*subOptions)

type subOptions struct {
	input    any
	id       string
	retry    *RetryPolicy
	conflict ConflictPolicy
	version  string
	tags     map[string]string
}

// WithSubOrchestratorInput is the sub-orchestration's input (marshalled to
// JSON).
func WithSubOrchestratorInput(v any) SubOrchestratorOption {
	return func(o *subOptions) { o.input = v }
}

// WithSubOrchestrationInstanceID fixes the sub-orchestration's instance ID:
// its start is a singleton start, and the conflict policy applies (see
// WithSubOrchestratorConflictPolicy). Without it the ID is derived from the
// parent's ID and the task's sequence number.
func WithSubOrchestrationInstanceID(id string) SubOrchestratorOption {
	return func(o *subOptions) { o.id = id }
}

// WithSubOrchestratorRetry retries a failed sub-orchestration per p,
// durably, as WithRetry does for an activity. Every attempt is a new
// execution (of a new instance, unless the ID is fixed).
func WithSubOrchestratorRetry(p RetryPolicy) SubOrchestratorOption {
	return func(o *subOptions) { o.retry = &p }
}

// WithSubOrchestratorConflictPolicy says what the start does when a fixed
// ID is active: ConflictFail (the default: the task fails with an
// ExistsError's details) or ConflictTerminateExisting. ConflictUseExisting
// is refused: the existing instance was not started by this parent and
// will not report to it.
func WithSubOrchestratorConflictPolicy(p ConflictPolicy) SubOrchestratorOption {
	return func(o *subOptions) { o.conflict = p }
}

// WithSubOrchestratorVersion runs that version of the sub-orchestration.
func WithSubOrchestratorVersion(v string) SubOrchestratorOption {
	return func(o *subOptions) { o.version = v }
}

// WithSubOrchestratorTags tags the sub-orchestration.
func WithSubOrchestratorTags(tags map[string]string) SubOrchestratorOption {
	return func(o *subOptions) { o.tags = tags }
}

// CallSubOrchestrator starts the orchestration name as a child of this one
// and returns its task, which completes with the child's output or fails
// with its failure (a *TaskFailedError whose Details are the child's). The
// child is an ordinary instance with its own lease, so it may run on
// another node; its result reaches the parent through the parent's inbox,
// written by the child's final write. Its start happens after the schedule
// is committed and is idempotent: a takeover of the parent never starts a
// child twice. Terminating the child fails the task.
func (c *OrchestrationContext) CallSubOrchestrator(name string, opts ...SubOrchestratorOption) *Task {
	var o subOptions
	for _, opt := range opts {
		opt(&o)
	}
	b, err := json.Marshal(o.input)
	if err == nil {
		b, err = c.exec.c.checkJSON("sub-orchestration input", b)
	}
	if err == nil && o.id != "" {
		err = ValidateInstanceID(o.id)
	}
	if err == nil {
		err = ValidateTags(o.tags)
	}
	if err == nil && o.conflict == ConflictUseExisting {
		err = &ValidationError{Field: "conflictPolicy", Value: string(o.conflict),
			Reason: "a sub-orchestration cannot use an existing instance: it would not report to this parent; use fail or terminateExisting"}
	}
	call := &subCall{id: o.id, conflict: o.conflict, version: o.version, tags: o.tags}
	if o.retry != nil && err == nil {
		outer := &Task{e: c.e, id: -1, kind: kindRetry, name: name, input: b, sub: call}
		c.e.retried(outer, *o.retry)
		return outer
	}
	t := c.e.newTask(kindSub, name)
	t.attempt, t.sub = 1, call
	t.sub.id = c.e.childID(t)
	if err != nil {
		t.input = jsonNull
		t.complete(nil, &TaskFailedError{Kind: "sub-orchestration", Name: name, Message: "input: " + err.Error(), NonRetriable: true,
			Details: &FailureDetails{ErrorType: "InvalidInput", ErrorMessage: err.Error(), IsNonRetriable: true}})
		return t
	}
	t.input = b
	return t
}

// childID is the instance ID of sub-orchestration task t: the fixed one, or
// "{parent}:{task in hex}" (hashed when that would be too long).
func (e *executor) childID(t *Task) string {
	if t.sub.id != "" {
		return t.sub.id
	}
	return childIDOf(e.rec.InstanceID, t.id)
}

// childIDOf is the instance ID of sub-orchestration task of parent without
// a fixed one: "{parent}:{task in hex}", hashed when too long.
func childIDOf(parent string, task int) string {
	id := fmt.Sprintf("%s:%04X", parent, task)
	if len(id) > MaxInstanceIDLength {
		sum := sha256.Sum256([]byte(parent))
		id = fmt.Sprintf("%s:%04X", hex.EncodeToString(sum[:16]), task)
	}
	return id
}

// startChild is the work of a sub-orchestration task: start the child
// unless this task started it already (its record names this parent
// execution and task), retrying store errors while the run lasts. It
// returns a failure event when the start is refused for good, nil when the
// child runs (its end reports through the inbox).
func (e *Engine) startChild(wctx context.Context, t *Task) *HistoryEvent {
	// A span of the start, a child of the run's; the child's record gets
	// its context, so the child's runs continue the parent's trace.
	wctx, span := e.tracer.Start(wctx, "start sub-orchestration "+t.name, trace.WithAttributes(
		AttrChildInstanceID.String(t.sub.id), AttrFunction.String(t.name), AttrTaskID.Int(t.id), AttrAttempt.Int(t.attempt),
		AttrInstanceID.String(e.rec.InstanceID), AttrExecutionID.String(e.rec.ExecutionID),
	))
	defer span.End()
	ev := e.startChildRetrying(wctx, t)
	if ev != nil {
		RecordFailure(span, ev.FailureDetails)
	}
	return ev
}

func (e *Engine) startChildRetrying(wctx context.Context, t *Task) *HistoryEvent {
	c := e.exec.c
	ref := &ParentRef{InstanceID: e.rec.InstanceID, ExecutionID: e.rec.ExecutionID, TaskID: t.id}
	id := t.sub.id
	failed := func(err error) *HistoryEvent {
		d := DetailsOf(err)
		d.IsNonRetriable = true
		return &HistoryEvent{EventType: EventSubOrchestrationInstanceFailed, TaskID: t.id, Name: t.name, InstanceID: id,
			Failure: d.ErrorMessage, FailureDetails: d}
	}
	b := newRetry()
	for wctx.Err() == nil {
		ctx, cancel := context.WithTimeout(wctx, 10*time.Second)
		cur, rev, err := c.read(ctx, id)
		if err == nil && cur.Parent != nil && *cur.Parent == *ref {
			cancel()
			t.childOK.Store(true)
			return nil // started by this task already
		}
		if err != nil && !errors.Is(err, ErrInstanceNotFound) {
			cancel()
			if !errors.Is(err, ErrUnavailable) {
				return failed(err)
			}
		} else {
			if errors.Is(err, ErrInstanceNotFound) {
				cur, rev = nil, 0
			}
			_, err = c.startIf(ctx, t.name, StartOptions{
				InstanceID: id, Input: t.input, ConflictPolicy: t.sub.conflict, ReusePolicy: ReuseAllow,
				Version: t.sub.version, Tags: t.sub.tags, parent: ref, Trace: TraceContextFrom(wctx),
			}, nil, nil, cur, rev)
			cancel()
			switch {
			case err == nil:
				t.childOK.Store(true)
				return nil
			case errors.Is(err, ErrUnavailable) && wctx.Err() == nil:
			default:
				return failed(err)
			}
		}
		wait := b.NextBackOff()
		e.log.Warn("cannot start the sub-orchestration yet; retrying", e.logArgs("child_instance_id", id, "error", err, "retry_in", wait.Round(time.Millisecond))...)
		select {
		case <-wctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// parentOps are what a sub-orchestration's end writes to its parent: the
// completion, into the parent's inbox, under a key named by the child's
// execution (so a retried final write puts it once).
func (c *Client) parentOps(rec *Record, st RuntimeStatus, output json.RawMessage, fd *FailureDetails) []clientv3.Op {
	p := rec.Parent
	if p == nil {
		return nil
	}
	ev := HistoryEvent{TaskID: p.TaskID, Name: rec.Name, InstanceID: rec.InstanceID, ExecutionID: p.ExecutionID, Timestamp: now()}
	switch st {
	case StatusCompleted:
		ev.EventType, ev.Result = EventSubOrchestrationInstanceCompleted, orNull(output)
		if len(output) > subResultInline {
			ev.Result, ev.ResultRef = nil, refChildOutput
		}
	default:
		ev.EventType = EventSubOrchestrationInstanceFailed
		if fd == nil {
			fd = &FailureDetails{ErrorType: string(st), ErrorMessage: fmt.Sprintf("the sub-orchestration was %s", st)}
			if st == StatusTerminated {
				var reason string
				if json.Unmarshal(output, &reason) == nil && reason != "" {
					fd.ErrorMessage += ": " + reason
				}
			}
		}
		ev.FailureDetails, ev.Failure = fd, fd.ErrorMessage
	}
	b, _ := json.Marshal(ev)
	return []clientv3.Op{clientv3.OpPut(c.keys.InboxPrefix(p.InstanceID)+"sub-"+rec.ExecutionID, string(b))}
}

// subResultInline is the largest sub-orchestration output its parent's
// inbox entry carries; a larger one is read from the child's output key.
const subResultInline = 64 << 10

// refChildOutput is a ResultRef: the child's output key.
const refChildOutput = "@child-output"

// childOutput reads the output of the finished sub-orchestration id.
func (c *Client) childOutput(ctx context.Context, id string) (json.RawMessage, error) {
	st, err := c.Status(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.RuntimeStatus != StatusCompleted {
		return nil, fmt.Errorf("the sub-orchestration's result is no longer available: '%s' is now %s", id, st.RuntimeStatus)
	}
	return st.Output, nil
}

// children returns the sub-orchestrations the current execution of id
// created, in the order it created them, finished or not.
func (c *Client) children(ctx context.Context, id string) ([]string, error) {
	h, err := c.History(ctx, id, "")
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	for _, ev := range h {
		if ev.EventType == EventSubOrchestrationInstanceCreated && !seen[ev.InstanceID] {
			seen[ev.InstanceID] = true
			out = append(out, ev.InstanceID)
		}
	}
	return out, nil
}

// maxTreeDepth bounds recursive terminate and purge.
const maxTreeDepth = 16

// TerminateRecursive terminates id and, depth first, every sub-orchestration
// below it that is still active, whatever the state of the instances
// between them: a finished child is not terminated again, but its own
// children are reached (a child may outlive the parent that started it
// without awaiting it). A child is one the current execution's history
// created and whose record still names that parent; a child ID reused since
// by an unrelated start is left alone. Children already terminal or gone
// are skipped; an error of id itself is returned, and then nothing below
// it is touched.
func (c *Client) TerminateRecursive(ctx context.Context, id, reason string) (*Status, error) {
	var st *Status
	_, err := c.walkTree(ctx, id, func(node string, depth int) error {
		s, err := c.Terminate(ctx, node, reason)
		if depth == 0 {
			st = s
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// PurgeRecursive purges id and, depth first, every sub-orchestration below
// it (the same walk as TerminateRecursive's, so a finished child's children
// are reached too), each if terminal; it returns how many instances it
// deleted. An active instance below id is not purged, and the walk goes on
// below it.
func (c *Client) PurgeRecursive(ctx context.Context, id string) (int, error) {
	return c.walkTree(ctx, id, func(node string, _ int) error { return c.Purge(ctx, node) })
}

// walkTree applies act to id and then, depth first, to every instance below
// it: each node's children are read before act runs on it (a purge deletes
// the history that names them). It descends below a node whatever act did
// to it, as far as maxTreeDepth, and visits an ID once. An error of act on
// id is returned and ends the walk; below id, an error only means that node
// is not counted. It returns how many nodes act succeeded on.
func (c *Client) walkTree(ctx context.Context, id string, act func(id string, depth int) error) (int, error) {
	seen := map[string]bool{}
	var walk func(id string, depth int) (int, error)
	walk = func(id string, depth int) (int, error) {
		seen[id] = true
		kids, _ := c.children(ctx, id) // an instance without history has none
		n := 0
		if err := act(id, depth); err != nil {
			if depth == 0 {
				return 0, err
			}
		} else {
			n++
		}
		if depth >= maxTreeDepth {
			return n, nil
		}
		for _, child := range kids {
			if seen[child] || ctx.Err() != nil {
				continue
			}
			rec, _, err := c.read(ctx, child)
			if err != nil || rec.parentID() != id {
				continue // gone, unreadable, or no longer this parent's
			}
			k, _ := walk(child, depth+1)
			n += k
		}
		return n, nil
	}
	return walk(id, 0)
}

// startChildren makes sure every sub-orchestration the execution scheduled
// and has not heard from is created before the final write: it waits for
// the starts under way, then starts those not started yet (the tasks the
// last step issued) here. A start is idempotent (the child's record names
// this parent execution and task), so a takeover between these starts and
// the final write creates each child once. A start refused for good is
// recorded as the task's failure in the final write.
func (e *executor) startChildren() error {
	e.childStarts.Wait()
	for _, t := range e.tasks {
		if t.kind != kindSub || t.done || t.id < 0 || t.childOK.Load() {
			continue
		}
		if t.started {
			continue // its start ended: refused (its failure is in the mailbox) or stopped
		}
		t.started = true
		if ev := e.startChild(e.work(), t); ev != nil {
			if err := e.applyLive(*ev); err != nil {
				return err
			}
		} else if e.ctx.Err() != nil {
			return context.Cause(e.ctx)
		}
	}
	return nil
}
