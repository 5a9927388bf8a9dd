package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EngineOptions configure an Engine opened for a driver that is not the Go
// coroutine (OpenEngine).
type EngineOptions struct {
	// Activities holds the activities the engine runs itself (local
	// activities); tasks of other names are the driver's (StepResult.Remote).
	Activities *Registry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnStoreError hears of every failed write attempt that is retried.
	OnStoreError func(error)
	// BatchBudget, if positive, lets a step whose actions only schedule
	// tasks go uncommitted (StepResult.Deferred): its events are committed
	// with a later step, at the latest when the step driver's Flush runs
	// BatchBudget after the first such step, or when MaxBatchEvents events
	// wait. Zero commits every step before Complete returns.
	BatchBudget time.Duration
}

// MaxBatchEvents bounds the events that wait uncommitted in a batch of
// deferred steps (EngineOptions.BatchBudget).
const MaxBatchEvents = 100

// WorkItem is one step for a driver: the execution's committed history
// (Past) and the events that arrived since (New), to answer with actions
// through Engine.Complete naming Seq.
type WorkItem struct {
	Seq          uint64
	InstanceID   string
	ExecutionID  string
	Name         string
	Version      string
	FencingToken int64
	Past, New    []HistoryEvent
	// First says no step of the execution has been committed yet (its
	// history is empty, or its record still Pending): Past holds at most
	// what its start wrote (ExecutionStarted and the events ContinueAsNew
	// carried over).
	First bool
}

// StepResult is what a completed step did.
type StepResult struct {
	// Status is the status the step wrote if it ended the execution
	// (Completed, Failed, Terminated, ContinuedAsNew); empty otherwise.
	Status RuntimeStatus
	// Remote are the tasks the step scheduled whose activity is not local:
	// the caller runs them and reports each with Client.CompleteTask.
	Remote []ScheduleTask
	// WakeAt is when the first pending timer fires (call Next then); zero
	// if none.
	WakeAt time.Time
	// More says new events wait (local activities' results): call Next.
	More bool
	// Deferred says the step's events were not committed: they are the
	// next commit's (EngineOptions.BatchBudget; Engine.Flush commits them).
	Deferred bool
}

// stepState is what an Engine opened for a driver keeps between steps.
type stepState struct {
	mu      sync.Mutex
	reg     *Registry
	seq     uint64
	started bool
	closed  bool
	queue   []InboxEntry
	results []HistoryEvent          // local activities' results, for the next step
	open    map[int]EventType       // tasks scheduled and not finished, by ID
	timers  map[int]time.Time       // of them, timers
	names   map[int]string          // task names, by ID
	inputs  map[int]json.RawMessage // task inputs, by ID
	vers    map[int]string          // task versions, by ID
}

// OpenEngine makes the engine of an opened execution for a driver that is
// not the Go coroutine (a remote worker). ctx bounds its writes: the
// holder's context. Every step is Next (the past and new events), then
// Complete with the driver's actions: the engine validates them (nothing is
// written for invalid ones: ErrInvalidAction), commits them with the
// holder's fence (ErrFenced if the holding is lost), creates the
// sub-orchestrations they schedule, and runs the local activities whose
// results are the next step's new events. A Complete for another dispatch
// than the last Next changes nothing (ErrStaleCompletion). An engine whose
// write failed is closed: open the execution again.
func OpenEngine(ctx context.Context, x *Execution, opts EngineOptions) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	g := &Engine{ctx: ctx, exec: x, rec: *x.rec, log: opts.Logger, tracer: x.c.tracer, onStoreError: opts.OnStoreError, batchBudget: opts.BatchBudget,
		step: &stepState{reg: opts.Activities, open: map[int]EventType{}, timers: map[int]time.Time{},
			names: map[int]string{}, inputs: map[int]json.RawMessage{}, vers: map[int]string{}}}
	return g
}

// Deliver queues an inbox entry of the instance for the next step (a node
// delivers them from its watch). Entries seen before are ignored.
func (g *Engine) Deliver(in InboxEntry) {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	st.queue = append(st.queue, in)
}

// note tracks the tasks a history opens and closes.
func (st *stepState) note(ev HistoryEvent) {
	switch ev.EventType {
	case EventTaskScheduled, EventSubOrchestrationInstanceCreated:
		st.open[ev.TaskID], st.names[ev.TaskID], st.inputs[ev.TaskID], st.vers[ev.TaskID] = ev.EventType, ev.Name, ev.Input, ev.Version
	case EventTimerCreated:
		st.open[ev.TaskID] = ev.EventType
		if ev.FireAt != nil {
			st.timers[ev.TaskID] = *ev.FireAt
		}
	case EventTaskCompleted, EventTaskFailed, EventTimerFired, EventSubOrchestrationInstanceCompleted, EventSubOrchestrationInstanceFailed:
		delete(st.open, ev.TaskID)
		delete(st.timers, ev.TaskID)
	}
}

// taskResult queues the result of a task the driver ran (a remote
// worker's, or a local one a later run resumed) as a new event of the next
// step, committed with that step. It reports false, queueing nothing, for
// a task that is not open (not scheduled in this execution, or finished)
// or whose result is queued already.
func (g *Engine) taskResult(ev HistoryEvent) bool {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.open[ev.TaskID] != EventTaskScheduled {
		return false
	}
	for _, r := range st.results {
		if r.TaskID == ev.TaskID && (r.EventType == EventTaskCompleted || r.EventType == EventTaskFailed) {
			return false
		}
	}
	st.results = append(st.results, ev)
	return true
}

// Next returns the next step: the history and the events new since the
// last commit (the first step's are ExecutionStarted, or the inbox read at
// open). Timers due by now fire in it. Each call is a new dispatch: only
// the latest one's Seq may complete.
func (g *Engine) Next() *WorkItem {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started {
		st.started = true
		x := g.exec
		g.history, x.history = x.history, nil
		for _, ev := range g.history {
			st.note(ev)
			if ev.InboxKey != "" {
				g.see(ev.InboxKey)
			}
		}
		g.countTasks(g.history)
		g.needMark = g.rec.RuntimeStatus != StatusRunning
		if len(g.history) == 0 {
			g.pending = append(g.pending, HistoryEvent{EventType: EventExecutionStarted, Timestamp: now(), Name: g.rec.Name, Input: x.input})
		}
		for _, in := range x.inbox {
			if g.seen[in.Key] {
				g.consumed = append(g.consumed, in.Key)
			} else {
				st.queue = append(st.queue, in)
			}
		}
		x.inbox = nil
	}
	for _, in := range st.queue {
		ev, ok, err := g.admit(in, func(id int, kind EventType) bool { return st.open[id] == kind })
		if err != nil {
			// The child's output could not be read now: the entry stays for
			// the next step.
			delete(g.seen, in.Key)
			g.consumed = g.consumed[:len(g.consumed)-1]
			continue
		}
		if ok {
			g.pending = append(g.pending, ev)
			st.note(ev)
		}
	}
	st.queue = nil
	for _, ev := range st.results {
		if (ev.EventType == EventTaskCompleted || ev.EventType == EventTaskFailed) && st.open[ev.TaskID] != EventTaskScheduled {
			continue // came through the inbox as well (stored by a drain's Checkpoint)
		}
		ev.Timestamp = now()
		g.pending = append(g.pending, ev)
		st.note(ev)
	}
	st.results = nil
	t := now()
	for id, at := range st.timers {
		if !at.After(t) {
			ev := HistoryEvent{EventType: EventTimerFired, TaskID: id, Timestamp: t}
			g.pending = append(g.pending, ev)
			st.note(ev)
		}
	}
	st.seq++
	// The events of deferred steps (not committed yet) are past to the
	// driver: it has answered them.
	past := make([]HistoryEvent, 0, len(g.history)+g.shown)
	past = append(append(past, g.history...), g.pending[:g.shown]...)
	return &WorkItem{Seq: st.seq, InstanceID: g.rec.InstanceID, ExecutionID: g.rec.ExecutionID, Name: g.rec.Name,
		Version: g.rec.Version, FencingToken: g.exec.Token(), First: (g.needMark || len(g.history) == 0) && g.shown == 0,
		Past: past, New: append([]HistoryEvent(nil), g.pending[g.shown:]...)}
}

// canDefer reports whether a step's actions may wait uncommitted: they only
// schedule tasks, nothing else waits to be written with them (a custom
// status, a sent event), and the batch is within its bounds.
func (g *Engine) canDefer(actions []Action) bool {
	if g.batchBudget <= 0 || len(g.extra) > 0 || len(g.pending) > MaxBatchEvents ||
		!g.deferredSince.IsZero() && time.Since(g.deferredSince) >= g.batchBudget {
		return false
	}
	for _, a := range actions {
		if _, ok := a.(ScheduleTask); !ok {
			return false
		}
	}
	return true
}

// DeferredSince is when the first of the answered steps that wait
// uncommitted was deferred; zero if none waits.
func (g *Engine) DeferredSince() time.Time {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	return g.deferredSince
}

// Flush commits the events of deferred steps, if there are any: a step driver calls it when the batch's budget is
// spent, before it parks, and before a drain hands the instance over. An
// error closes the engine, as a failed step does.
func (g *Engine) Flush() error {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	if g.shown == 0 || st.closed {
		return nil
	}
	// Only what the driver answered: the events of a step still out (a
	// drain's) stay new, for the step the next holder sends.
	rest := append([]HistoryEvent(nil), g.pending[g.shown:]...)
	restConsumed := append([]string(nil), g.consumed[g.consumedShown:]...)
	g.pending, g.consumed = g.pending[:g.shown], g.consumed[:g.consumedShown]
	if err := g.commit(); err != nil {
		st.closed = true
		return err
	}
	g.pending, g.consumed = rest, restConsumed
	return nil
}

// Complete takes the actions that answer the dispatch seq and commits them
// with the step's new events: see OpenEngine.
func (g *Engine) Complete(ctx context.Context, seq uint64, actions []Action) (*StepResult, error) {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || seq != st.seq || !st.started {
		return nil, fmt.Errorf("%w: dispatch %d, the current one is %d", ErrStaleCompletion, seq, st.seq)
	}
	actions = g.dropRepeatedTerminates(actions)
	if err := g.validate(actions); err != nil {
		return nil, err
	}
	deferOK := g.canDefer(actions)
	if len(g.history)+len(g.pending)+len(actions) > MaxHistoryEvents {
		actions = []Action{Complete{Status: StatusFailed, Failure: DetailsOf(ErrHistoryLimit)}}
	}
	st.seq++ // this dispatch is answered: a repeat is stale
	ts := now()
	var fin *Complete
	var subs []CreateSubOrchestration
	var tasks []ScheduleTask
	var terms []TerminateInstance
	for _, a := range actions {
		switch a := a.(type) {
		case Complete:
			fin = &a
			continue
		case TerminateInstance:
			terms = append(terms, a)
		case CreateSubOrchestration:
			if a.InstanceID == "" {
				a.InstanceID = childIDOf(g.rec.InstanceID, a.ID)
			}
			subs = append(subs, a)
			if err := g.schedule(a, ts); err != nil {
				return nil, err
			}
			continue
		case ScheduleTask:
			tasks = append(tasks, a)
		}
		if err := g.schedule(a, ts); err != nil {
			return nil, err
		}
	}
	for _, ev := range g.pending {
		st.note(ev)
	}
	// Terminates of other instances cannot join the commit: they are made
	// before it (see TerminateInstance).
	if err := g.terminateAll(ctx, terms); err != nil {
		st.closed = true
		return nil, err
	}
	res := &StepResult{}
	// Children are created before the final write, after the step's
	// commit otherwise (an idempotent start: once per task).
	startSubs := func() error {
		for _, a := range subs {
			t := &Task{id: a.ID, kind: kindSub, name: a.Name, input: orNull(a.Input), attempt: 1,
				sub: &subCall{id: a.InstanceID, version: a.Version}}
			if ev := g.startChild(ctx, t); ev != nil {
				st.results = append(st.results, *ev)
			} else if !t.childOK.Load() {
				return fmt.Errorf("orchestrator: the start of sub-orchestration '%s' was stopped: %w", a.InstanceID, context.Cause(ctx))
			}
		}
		return nil
	}
	if fin != nil {
		st.closed = true
		if err := startSubs(); err != nil {
			return nil, err
		}
		s, err := g.complete(*fin)
		if err != nil {
			return nil, err
		}
		res.Status = s
		return res, nil
	}
	if deferOK {
		// Committed with a later step: the driver has answered these.
		if g.shown == 0 {
			g.deferredSince = time.Now()
		}
		g.shown, g.consumedShown = len(g.pending), len(g.consumed)
		res.Deferred = true
	} else if err := g.commit(); err != nil {
		st.closed = true
		return nil, err
	}
	if err := startSubs(); err != nil {
		st.closed = true
		return nil, err
	}
	var local []ScheduleTask
	for _, a := range tasks {
		if _, ok := st.reg.activity(a.Name); ok {
			local = append(local, a)
		} else {
			res.Remote = append(res.Remote, a)
		}
	}
	if len(local) > 0 {
		evs := make([]HistoryEvent, len(local))
		var wg sync.WaitGroup
		for i, a := range local {
			wg.Go(func() {
				evs[i] = g.callActivity(ctx, st.reg, &Task{id: a.ID, kind: kindActivity, name: a.Name, input: orNull(a.Input), attempt: 1})
			})
		}
		wg.Wait()
		if ctx.Err() == nil {
			st.results = append(st.results, evs...)
		}
	}
	for _, at := range st.timers {
		if res.WakeAt.IsZero() || at.Before(res.WakeAt) {
			res.WakeAt = at
		}
	}
	res.More = len(st.results) > 0 || len(st.queue) > 0
	return res, nil
}

// activity looks up a local activity; a nil registry has none.
func (r *Registry) activity(name string) (ActivityFunc, bool) {
	if r == nil {
		return nil, false
	}
	return r.Activity(name)
}

// CompleteTask reports the result of a task a driver dispatched to a
// remote worker (StepResult.Remote): TaskCompleted with result, or
// TaskFailed with failure when it is not nil. It goes to the instance's
// inbox under a key named by the execution and task, so a repeated report
// is put once, and a report for another execution, an unknown task or one
// already reported is ignored by the engine.
func (c *Client) CompleteTask(ctx context.Context, id, executionID string, taskID int, result json.RawMessage, failure *FailureDetails) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	b, err := c.taskResult(executionID, taskID, result, failure)
	if err != nil {
		return err
	}
	key := c.keys.taskResultKey(id, executionID, taskID)
	ik := c.keys.Instance(id)
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(ik), ">", 0)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return storeErr(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	return nil
}
