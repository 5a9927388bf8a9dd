package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrHistoryLimit fails an execution whose history would pass MaxHistoryEvents.
var ErrHistoryLimit = fmt.Errorf("orchestrator: history passed %d events; use ContinueAsNew for long loops", MaxHistoryEvents)

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

// errInboxLost stops a run whose inbox watch fell behind a compaction; the
// next holder reads the inbox afresh.
var errInboxLost = fmt.Errorf("%w: inbox watch compacted", ErrUnavailable)

// abortSignal unwinds an orchestration goroutine parked in Await when its
// run ends.
type abortSignal struct{}

// executor drives one execution: it replays the history to rebuild the
// orchestration's state, then runs it live, committing each step's new
// events in one fenced transaction. The orchestration runs in its own
// goroutine as a coroutine: only one of it and the executor runs at a time,
// handing over through resume/yielded.
type executor struct {
	ctx  context.Context
	exec *Execution
	fn   OrchestratorFunc
	reg  *Registry
	rec  *Status
	keys Keys

	history  []HistoryEvent // committed
	pending  []HistoryEvent // applied, to commit in the next step
	consumed []string       // inbox keys to delete in the next step

	octx      *OrchestrationContext
	tasks     map[int]*Task
	nextID    int
	actions   []*Task // issued by the code, not yet matched (replay) or committed (live)
	waiters   map[string][]*Task
	buffered  map[string][]json.RawMessage
	replaying bool
	now       time.Time
	guids     int

	started    bool
	parked     bool
	finished   bool
	waiting    []*Task
	resume     chan bool
	yielded    chan struct{}
	output     any
	outErr     error
	continueAs *json.RawMessage
	customSet  *json.RawMessage // custom status set during replay

	work        sync.WaitGroup
	workCtx     context.Context
	stopWork    context.CancelFunc
	completions chan HistoryEvent
}

// RunDurable executes the execution's orchestration from the registry with
// replay: see Run.
func (r *Registry) Run(ctx context.Context, exec *Execution) error {
	fn, ok := r.Orchestrator(exec.Status().Name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownFunction, exec.Status().Name)
	}
	return run(ctx, exec, fn, r)
}

// Run executes fn for the execution under ctx. It replays the execution's
// history (so completed activities, fired timers and consumed events are
// not repeated), marks the record Running, runs the orchestration live and
// commits every step with the holder's fence, then writes Completed or
// Failed with the owners key's release in one fenced transaction (or starts
// the next generation for ContinueAsNew). If ctx ends first, Run writes
// nothing more and returns context.Cause(ctx): the next holder resumes from
// the history. Activities are looked up in no registry; use Registry.Run
// for orchestrations that call activities.
func Run(ctx context.Context, exec *Execution, fn OrchestratorFunc) error {
	return run(ctx, exec, fn, nil)
}

func run(ctx context.Context, exec *Execution, fn OrchestratorFunc, reg *Registry) error {
	rec := exec.Status()
	e := &executor{
		ctx: ctx, exec: exec, fn: fn, reg: reg, rec: rec, keys: exec.c.keys,
		tasks: map[int]*Task{}, waiters: map[string][]*Task{}, buffered: map[string][]json.RawMessage{},
		resume: make(chan bool), yielded: make(chan struct{}), completions: make(chan HistoryEvent),
	}
	e.octx = &OrchestrationContext{ctx: ctx, exec: exec, rec: rec, e: e}
	e.workCtx, e.stopWork = context.WithCancel(ctx)
	defer func() {
		e.stopWork()
		e.abort()
		e.work.Wait()
	}()
	err := e.runAll()
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

func (e *executor) runAll() error {
	hist, err := e.exec.c.readHistory(e.ctx, e.rec.InstanceID, e.rec.ExecutionID)
	if err != nil {
		return err
	}
	if e.rec.RuntimeStatus != StatusRunning {
		if err := e.exec.MarkRunning(e.ctx); err != nil {
			return err
		}
	}
	// Replay.
	e.replaying = true
	for _, ev := range hist {
		if err := e.apply(ev); err != nil {
			return e.fail(err)
		}
		e.history = append(e.history, ev)
	}
	e.replaying = false
	if len(hist) == 0 {
		ev := HistoryEvent{EventType: EventExecutionStarted, Timestamp: now(), Name: e.rec.Name, Input: e.rec.Input}
		e.pending = append(e.pending, ev)
		if err := e.apply(ev); err != nil {
			return e.fail(err)
		}
	}
	if e.customSet != nil {
		if err := e.octx.writeCustomStatus(*e.customSet); err != nil {
			return err
		}
	}
	// Scheduled in history but not finished: their work runs (again) here.
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
	return e.live()
}

// live runs the orchestration from where replay left it.
func (e *executor) live() error {
	inbox, err := e.watchInbox()
	if err != nil {
		return err
	}
	for {
		var fresh []*Task
		for _, t := range e.actions {
			e.pending = append(e.pending, scheduledEvent(t, now()))
			fresh = append(fresh, t)
		}
		e.actions = nil
		if len(e.history)+len(e.pending) > MaxHistoryEvents {
			return e.fail(ErrHistoryLimit)
		}
		switch {
		case e.finished && e.continueAs != nil:
			return e.continueAsNew(*e.continueAs)
		case e.finished:
			return e.finish()
		}
		if len(e.pending) > 0 || len(e.consumed) > 0 {
			if err := e.commit(); err != nil {
				return err
			}
		}
		for _, t := range fresh {
			e.startWork(t)
		}
		select {
		case <-e.ctx.Done():
			return context.Cause(e.ctx)
		case ev := <-e.completions:
			ev.Timestamp = now()
			if err := e.applyLive(ev); err != nil {
				return e.fail(err)
			}
		case in, ok := <-inbox:
			if !ok {
				if e.ctx.Err() != nil {
					return context.Cause(e.ctx)
				}
				return errInboxLost
			}
			in.ev.Timestamp = now()
			e.consumed = append(e.consumed, in.key)
			if err := e.applyLive(in.ev); err != nil {
				return e.fail(err)
			}
		}
	}
}

func (e *executor) applyLive(ev HistoryEvent) error {
	e.pending = append(e.pending, ev)
	return e.apply(ev)
}

func scheduledEvent(t *Task, ts time.Time) HistoryEvent {
	if t.kind == kindTimer {
		fa := t.fireAt
		return HistoryEvent{EventType: EventTimerCreated, Timestamp: ts, TaskID: t.id, FireAt: &fa}
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
	case EventTaskScheduled, EventTimerCreated:
		return e.match(ev)
	case EventTaskCompleted, EventTaskFailed, EventTimerFired:
		t := e.tasks[ev.TaskID]
		if t == nil {
			return &NonDeterminismError{Seq: ev.Seq, History: fmt.Sprintf("%s of task %d", ev.EventType, ev.TaskID), Code: "no such task"}
		}
		switch ev.EventType {
		case EventTaskCompleted:
			t.complete(ev.Result, nil)
		case EventTaskFailed:
			t.complete(nil, &TaskFailedError{Name: t.name, Message: ev.Failure})
		default:
			t.complete(nil, nil)
		}
		e.wake()
	case EventEventRaised:
		e.deliver(ev.Name, ev.Input)
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
	e.actions = e.actions[1:]
	return nil
}

// The coroutine.

func (e *executor) startCoroutine() {
	if e.started {
		return
	}
	e.started = true
	go func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(abortSignal); !ok {
					e.outErr = fmt.Errorf("orchestration panicked: %v\n%s", r, debug.Stack())
					e.finished = true
				}
			} else {
				e.finished = true
			}
			e.yielded <- struct{}{}
		}()
		if !<-e.resume {
			panic(abortSignal{})
		}
		e.output, e.outErr = e.fn(e.octx)
	}()
	e.step()
}

// step lets the orchestration run until it waits or returns.
func (e *executor) step() {
	e.parked = false
	e.resume <- true
	<-e.yielded
	if !e.finished {
		e.parked = true
	}
}

// wake resumes the orchestration if what it waits for is done.
func (e *executor) wake() {
	if !e.parked {
		return
	}
	for _, t := range e.waiting {
		if t.done {
			e.step()
			return
		}
	}
}

// abort unwinds a parked orchestration goroutine.
func (e *executor) abort() {
	if e.parked {
		e.parked = false
		e.resume <- false
		<-e.yielded
	}
}

// waitFor runs on the orchestration goroutine: it parks until one of ts is
// done.
func (e *executor) waitFor(ts ...*Task) {
	for {
		for _, t := range ts {
			if t.done {
				return
			}
		}
		e.waiting = ts
		e.yielded <- struct{}{}
		if !<-e.resume {
			panic(abortSignal{})
		}
	}
}

// Actions issued by the code (on the orchestration goroutine).

func (e *executor) newTask(kind taskKind, name string) *Task {
	t := &Task{e: e, id: e.nextID, kind: kind, name: name}
	e.nextID++
	e.tasks[t.id] = t
	e.actions = append(e.actions, t)
	return t
}

func (e *executor) deliver(name string, data json.RawMessage) {
	if ws := e.waiters[name]; len(ws) > 0 {
		e.waiters[name] = ws[1:]
		ws[0].complete(data, nil)
		return
	}
	e.buffered[name] = append(e.buffered[name], data)
}

// Live work: activities and timers.

func (e *executor) startWork(t *Task) {
	if t.started || t.done || t.kind == kindEvent {
		return
	}
	t.started = true
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		var ev HistoryEvent
		switch t.kind {
		case kindTimer:
			timer := time.NewTimer(time.Until(t.fireAt))
			defer timer.Stop()
			select {
			case <-e.workCtx.Done():
				return
			case <-timer.C:
			}
			ev = HistoryEvent{EventType: EventTimerFired, TaskID: t.id}
		case kindActivity:
			ev = e.callActivity(t)
		}
		select {
		case e.completions <- ev:
		case <-e.workCtx.Done():
		}
	}()
}

func (e *executor) callActivity(t *Task) HistoryEvent {
	fail := func(msg string) HistoryEvent {
		return HistoryEvent{EventType: EventTaskFailed, TaskID: t.id, Name: t.name, Failure: msg}
	}
	var fn ActivityFunc
	if e.reg != nil {
		fn, _ = e.reg.Activity(t.name)
	}
	if fn == nil {
		return fail(fmt.Sprintf("no activity named %q is registered on this node", t.name))
	}
	p := RetryPolicy{MaxAttempts: 1}
	if t.retry != nil {
		p = *t.retry
	}
	p = p.withDefaults()
	ctx := withActivityInfo(e.workCtx, ActivityInfo{
		InstanceID: e.rec.InstanceID, ExecutionID: e.rec.ExecutionID, FencingToken: e.exec.Token(),
		Name: t.name, TaskID: t.id,
	})
	var result json.RawMessage
	err := p.Do(e.workCtx, func() error {
		out, err := callActivity(ctx, fn, t.input)
		if err != nil {
			return err
		}
		b, err := json.Marshal(out)
		if err == nil {
			b, err = e.exec.c.checkJSON("activity result", b)
		}
		if err != nil {
			return &finalError{err}
		}
		result = b
		return nil
	}, isFinal, nil)
	if err != nil {
		return fail(err.Error())
	}
	return HistoryEvent{EventType: EventTaskCompleted, TaskID: t.id, Name: t.name, Result: result}
}

// finalError marks an activity failure that retrying cannot mend (a result
// that cannot be stored).
type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

func isFinal(err error) bool {
	var f *finalError
	return errors.As(err, &f)
}

func callActivity(ctx context.Context, fn ActivityFunc, input json.RawMessage) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("activity panicked: %v", r)
		}
	}()
	return fn(ctx, input)
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts < 1 {
		p.MaxAttempts = 1
	}
	if p.FirstInterval <= 0 {
		p.FirstInterval = time.Second
	}
	if p.BackoffCoefficient < 1 {
		p.BackoffCoefficient = 2
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = time.Minute
	}
	return p
}

// Commits.

// commit appends the pending events and deletes the consumed inbox keys in
// one fenced transaction.
func (e *executor) commit(extra ...clientv3.Op) error {
	return e.commitWith(nil, extra...)
}

func (e *executor) commitWith(change func(*Status), extra ...clientv3.Op) error {
	ops, err := e.historyOps()
	if err != nil {
		return err
	}
	ops = append(ops, extra...)
	if change == nil {
		change = func(*Status) {}
	}
	if err := e.exec.Update(e.ctx, change, ops...); err != nil {
		return err
	}
	e.history = append(e.history, e.pending...)
	e.pending, e.consumed = nil, nil
	return nil
}

func (e *executor) historyOps() ([]clientv3.Op, error) {
	var ops []clientv3.Op
	if len(e.pending) > 0 {
		for i := range e.pending {
			e.pending[i].Seq = len(e.history) + i
		}
		b, err := json.Marshal(e.pending)
		if err != nil {
			return nil, fmt.Errorf("orchestrator: encode history: %w", err)
		}
		ops = append(ops, clientv3.OpPut(historyKey(e.keys.History(e.rec.InstanceID, e.rec.ExecutionID), len(e.history)), string(b)))
	}
	for _, k := range e.consumed {
		ops = append(ops, clientv3.OpDelete(k))
	}
	return ops, nil
}

// finish commits the last step with the terminal status and the owners
// key's release, retrying through store hiccups: the result is computed and
// should not be computed again by the next holder.
func (e *executor) finish() error {
	var output json.RawMessage
	runErr := e.outErr
	if runErr == nil {
		b, err := json.Marshal(e.output)
		if err == nil {
			output, err = e.exec.c.checkJSON("output", b)
		}
		if err != nil {
			runErr = fmt.Errorf("output: %w", err)
		}
	}
	return e.finishWith(output, runErr)
}

func (e *executor) fail(err error) error {
	if e.ctx.Err() != nil {
		return context.Cause(e.ctx)
	}
	var nd *NonDeterminismError
	if errors.Is(err, ErrHistoryLimit) || errors.As(err, &nd) {
		return e.finishWith(nil, err)
	}
	return err
}

func (e *executor) finishWith(output json.RawMessage, runErr error) error {
	st := StatusCompleted
	ev := HistoryEvent{EventType: EventExecutionCompleted, Timestamp: now(), Result: output}
	if runErr != nil {
		st = StatusFailed
		ev.Failure = runErr.Error()
	}
	ev.Status = st
	if len(e.history)+len(e.pending) < MaxHistoryEvents+1 {
		e.pending = append(e.pending, ev)
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		if e.ctx.Err() != nil {
			return context.Cause(e.ctx) // stopped first: the next holder decides
		}
		ops, err := e.historyOps()
		if err != nil {
			return err
		}
		// Events nobody waited for end with the execution.
		ops = append(ops, clientv3.OpDelete(e.keys.Inbox(e.rec.InstanceID, e.rec.ExecutionID), clientv3.WithPrefix()))
		wctx, cancel := finalWriteContext(e.ctx)
		err = e.exec.finish(wctx, output, runErr, ops...)
		cancel()
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return err
		}
		select {
		case <-e.ctx.Done():
			return context.Cause(e.ctx)
		case <-time.After(backoff):
		}
	}
}

// finalWriteContext is the context of a write that deletes the holder's own
// owners key (the final result, ContinueAsNew). The holder watches that key,
// so the commit itself cancels ctx, possibly before its reply arrives; the
// write must not be abandoned for that. The fence still refuses it if the
// holding was really lost.
func finalWriteContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}

// continueAsNew ends this execution and starts the next generation of the
// instance in one fenced transaction: a new executionId with the new input,
// status ContinuedAsNew, this history deleted, and every event raised but
// not consumed carried into the new execution's inbox. The owners key is
// released in the same transaction; a node (likely this one) takes the new
// execution.
func (e *executor) continueAsNew(input json.RawMessage) error {
	id := e.rec.InstanceID
	newExec := NewID()
	ownerKey := string(e.exec.fence.Cmp.KeyBytes())
	for attempt := 0; attempt < maxAttempts; attempt++ {
		// Events still in the inbox, and those the code did not consume.
		resp, err := e.exec.c.etcd.Get(e.ctx, e.keys.Inbox(id, e.rec.ExecutionID), clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		if err != nil {
			return storeErr(err)
		}
		consumed := map[string]bool{}
		for _, k := range e.consumed {
			consumed[k] = true
		}
		var carry []HistoryEvent
		names := make([]string, 0, len(e.buffered))
		for name := range e.buffered {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			for _, data := range e.buffered[name] {
				carry = append(carry, HistoryEvent{EventType: EventEventRaised, Name: name, Input: data})
			}
		}
		for _, kv := range resp.Kvs {
			if consumed[string(kv.Key)] {
				continue
			}
			var ev HistoryEvent
			if json.Unmarshal(kv.Value, &ev) == nil {
				carry = append(carry, ev)
			}
		}
		ops := []clientv3.Op{
			clientv3.OpDelete(e.keys.History(id, e.rec.ExecutionID), clientv3.WithPrefix()),
			clientv3.OpDelete(e.keys.Inbox(id, e.rec.ExecutionID), clientv3.WithPrefix()),
			clientv3.OpDelete(ownerKey),
		}
		for i, ev := range carry {
			b, _ := json.Marshal(ev)
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%010d-carried", e.keys.Inbox(id, newExec), i), string(b)))
		}
		// No inbox key newer than our read may exist, or we would drop it.
		noNewEvents := clientv3.Compare(clientv3.CreateRevision(e.keys.Inbox(id, e.rec.ExecutionID)), "<", resp.Header.Revision+1).
			WithPrefix()
		if e.ctx.Err() != nil {
			return context.Cause(e.ctx)
		}
		wctx, cancel := finalWriteContext(e.ctx)
		err = e.exec.updateIf(wctx, []clientv3.Cmp{noNewEvents}, func(s *Status) {
			s.RuntimeStatus = StatusContinuedAsNew
			s.ExecutionID = newExec
			s.Input = input
			s.Output = nil
		}, ops...)
		cancel()
		if errors.Is(err, errConditionFailed) {
			continue
		}
		return err
	}
	return fmt.Errorf("%w: events kept arriving during ContinueAsNew of '%s'", ErrUnavailable, id)
}

// watchInbox delivers the events raised for this execution, in arrival
// order, each with its inbox key.
type inboxEvent struct {
	key string
	ev  HistoryEvent
}

func (e *executor) watchInbox() (<-chan inboxEvent, error) {
	prefix := e.keys.Inbox(e.rec.InstanceID, e.rec.ExecutionID)
	resp, err := e.exec.c.etcd.Get(e.ctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, storeErr(err)
	}
	out := make(chan inboxEvent)
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		defer close(out)
		send := func(key string, value []byte) bool {
			var ev HistoryEvent
			if err := json.Unmarshal(value, &ev); err != nil {
				ev = HistoryEvent{EventType: EventEventRaised, Name: "corrupt", Input: jsonNull}
			}
			select {
			case out <- inboxEvent{key: key, ev: ev}:
				return true
			case <-e.workCtx.Done():
				return false
			}
		}
		for _, kv := range resp.Kvs {
			if !send(string(kv.Key), kv.Value) {
				return
			}
		}
		rev := resp.Header.Revision + 1
		for e.workCtx.Err() == nil {
			wch := e.exec.c.etcd.Watch(clientv3.WithRequireLeader(e.workCtx), prefix, clientv3.WithPrefix(),
				clientv3.WithRev(rev), clientv3.WithFilterDelete())
			for wr := range wch {
				if wr.CompactRevision != 0 {
					return // events may be lost to the compaction: stop the run
				}
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					rev = ev.Kv.ModRevision + 1
					if ev.Kv.Version == 1 && !send(string(ev.Kv.Key), ev.Kv.Value) {
						return
					}
				}
			}
			if e.workCtx.Err() != nil {
				return
			}
			// The watch broke (no leader, lost connection): watch again from
			// the next revision after a pause.
			select {
			case <-e.workCtx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out, nil
}

// deterministic helpers for the context.

func (e *executor) newGUID() string {
	e.guids++
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", e.rec.InstanceID, e.rec.ExecutionID, e.guids)))
	return hex.EncodeToString(sum[:16])
}
