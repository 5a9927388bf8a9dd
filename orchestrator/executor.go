package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
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

// abortSignal unwinds an orchestration goroutine blocked in Await when its
// run ends (or parks).
type abortSignal struct{}

// markRunningAfter is how long fresh code may run before the executor
// marks the record Running on its own rather than with the first step's
// commit (code that blocks, such as an exec function, shows Running at once).
const markRunningAfter = 50 * time.Millisecond

// RunOptions configure a run of an execution (Registry.Drive).
type RunOptions struct {
	// OnEnd is called once when the run has ended and every goroutine it
	// started (activities, the orchestration) has returned, with what it
	// did. It is called from the run's own goroutine.
	OnEnd func(Outcome)
	// WatchInbox makes the run watch the instance's inbox itself. Without
	// it, the caller delivers inbox entries with Driver.Deliver (a node
	// does, from its one watch).
	WatchInbox bool
	// Logger receives the run's lines, which name the instance, execution
	// and fencing token. Defaults to slog.Default().
	Logger *slog.Logger
	// Reason says why this run began, for its span's soloist.run.reason:
	// "start", "resume", "failover", "handoff", "retry" (a node's words);
	// empty leaves it out.
	Reason string
	// ParkAfter, if above zero, parks the run once the orchestration has
	// waited that long with nothing in flight: every step committed, no
	// activity running, no child being started, only events and durable
	// timers awaited. A parked run ends (Outcome.Parked) and keeps nothing
	// in memory: no goroutine, no history. Drive the execution again (Open,
	// then Drive) when an inbox entry for it arrives or at Outcome.WakeAt;
	// the new run replays the history and goes on. Needs the caller to
	// deliver the inbox (not WatchInbox).
	ParkAfter time.Duration
	// OnStoreError, if set, hears of every failed attempt of the run's
	// writes that is retried (etcd unavailable, out of space, refused), as
	// it happens, from the run's goroutine.
	OnStoreError func(error)
}

// Outcome is how a run ended.
type Outcome struct {
	// Status is the status the run wrote when it ended the execution
	// (Completed, Failed or ContinuedAsNew); empty if it stopped without.
	Status RuntimeStatus
	// Err is why the run stopped without ending the execution: its
	// context's cause, ErrFenced, ErrExecutionChanged, or a store error.
	Err error
	// Parked says the run stopped because it was idle (RunOptions.ParkAfter):
	// the execution goes on when driven again.
	Parked bool
	// WakeAt is when the first durable timer of a parked run fires; zero
	// if it awaits none.
	WakeAt time.Time
	// Missed says an inbox entry reached a parked run as it ended, so it
	// was not applied: drive the execution again at once.
	Missed bool
}

// Driver is a run of one execution: it replays the history, then runs the
// orchestration live, committing each step with the holder's fence, until
// the execution ends or the run's context is cancelled. It holds no
// goroutine of its own while the orchestration waits: a step runs when
// something arrives (an activity's or timer's completion, an inbox entry),
// and all that is ready by then shares one commit.
type Driver struct{ e *executor }

// Deliver hands the run an inbox entry of its instance. Entries must come
// in CreateRevision order; repeats and entries already consumed are
// ignored. It reports false if the run has ended: the entry was not taken
// (a parked run then reports it in Outcome.Missed if OnEnd has not been
// called yet).
func (d *Driver) Deliver(entry InboxEntry) bool { return d.e.post(msg{kind: msgInbox, inbox: entry}) }

// Drive starts a run of the execution's orchestration from the registry:
// see Driver. ctx bounds the run: when it is cancelled the run writes
// nothing more and ends with context.Cause(ctx) as Outcome.Err.
func (r *Registry) Drive(ctx context.Context, exec *Execution, opts RunOptions) (*Driver, error) {
	fn, ok := r.OrchestratorVersion(exec.rec.Name, exec.rec.Version)
	if !ok {
		return nil, unknownVersion(exec.rec)
	}
	return drive(ctx, exec, fn, r, opts), nil
}

// Run executes the execution's orchestration from the registry and waits
// for it to end: see Run.
func (r *Registry) Run(ctx context.Context, exec *Execution) error {
	fn, ok := r.OrchestratorVersion(exec.rec.Name, exec.rec.Version)
	if !ok {
		return unknownVersion(exec.rec)
	}
	return runAndWait(ctx, exec, fn, r)
}

func unknownVersion(rec *Record) error {
	if rec.Version == "" {
		return fmt.Errorf("%w: %q", ErrUnknownFunction, rec.Name)
	}
	return fmt.Errorf("%w: %q version %q", ErrUnknownFunction, rec.Name, rec.Version)
}

// Run executes fn for the execution under ctx and waits until it ends. It
// replays the execution's history (so completed activities, fired timers
// and consumed events are not repeated), runs the orchestration live and
// commits every step with the holder's fence, then writes Completed or
// Failed with the owners key's release in one fenced transaction (or
// starts the next generation for ContinueAsNew). If ctx ends first, Run
// writes nothing more and returns context.Cause(ctx): the next holder
// resumes from the history. Activities are looked up in no registry; use
// Registry.Run for orchestrations that call activities.
func Run(ctx context.Context, exec *Execution, fn OrchestratorFunc) error {
	return runAndWait(ctx, exec, fn, nil)
}

func runAndWait(ctx context.Context, exec *Execution, fn OrchestratorFunc, reg *Registry) error {
	done := make(chan Outcome, 1)
	drive(ctx, exec, fn, reg, RunOptions{WatchInbox: true, OnEnd: func(o Outcome) { done <- o }})
	return (<-done).Err
}

type msgKind int

const (
	msgBegin msgKind = iota
	msgEvent         // a completion of this run's work
	msgInbox         // an inbox entry
	msgStop          // the context ended
	msgPark          // the idle time of RunOptions.ParkAfter passed
)

type msg struct {
	kind  msgKind
	ev    HistoryEvent
	inbox InboxEntry
	epoch uint64 // of a msgPark: the batch count when it was armed
}

// executor is the state of one run. The mailbox is guarded by mu; the rest
// belongs to whichever goroutine runs loop (there is at most one), and to
// the orchestration goroutine while the loop waits for it in step.
type executor struct {
	ctx  context.Context
	exec *Execution
	fn   OrchestratorFunc
	reg  *Registry
	rec  Record // as opened
	keys Keys
	opts RunOptions
	log  *slog.Logger
	// span is the run's span, from drive to end; ctx carries it, and so
	// the contexts of the orchestration, its activities and its functions.
	span    trace.Span
	tracer  trace.Tracer
	failure *FailureDetails // of a Failed final write, for the span

	mu     sync.Mutex
	mail   []msg
	busy   bool
	ended  bool
	parked bool // ended by parking
	missed bool // an inbox entry came as it parked

	epoch     uint64       // batches handled, so a stale msgPark is ignored
	parkTimer *time.Timer  // armed while the run is idle, with ParkAfter
	unwatch   func() bool  // stops the stop hook on the run's context (which would keep the executor reachable)
	inflight  atomic.Int32 // activities and child starts under way

	history  []HistoryEvent // committed
	pending  []HistoryEvent // applied, to commit in the next step
	consumed []string       // inbox keys to delete in the next step
	seen     map[string]bool
	needMark bool // the record is not Running yet
	retry    *backoff.ExponentialBackOff

	octx      *OrchestrationContext
	tasks     []*Task // by task ID: IDs are 0, 1, 2, ...
	nextID    int
	actions   []*Task // issued by the code, not yet matched (replay) or committed (live)
	waiters   []*Task // event waits, in the order they began (few at a time)
	buffered  map[string][]json.RawMessage
	replaying bool
	now       time.Time
	guids     int

	started    bool
	blocked    bool // the orchestration goroutine waits in Await
	finished   bool
	waiting    []*Task
	resume     chan bool
	yielded    chan struct{}
	output     any
	outErr     error
	continueAs *json.RawMessage
	dropEvents bool // ContinueAsNew drops the events the code has not received

	workers  sync.WaitGroup // activities, child starts, the inbox watch
	workCtx  context.Context
	stopWork context.CancelFunc
}

func drive(ctx context.Context, exec *Execution, fn OrchestratorFunc, reg *Registry, opts RunOptions) *Driver {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	e := &executor{
		exec: exec, fn: fn, reg: reg, rec: *exec.rec, keys: exec.c.keys, opts: opts, log: opts.Logger,
		tracer: exec.c.tracer,
	}
	// The run's span continues the trace of the instance's start (its
	// record's trace context), or ctx's if the start had none.
	rctx, span := e.tracer.Start(e.rec.trace().context(ctx), "run "+e.rec.Name,
		trace.WithAttributes(runAttrs(&e.rec, exec.Token(), opts.Reason)...))
	e.ctx, e.span = rctx, span
	e.octx = &OrchestrationContext{ctx: rctx, exec: exec, e: e}
	// The stop hook is set before the loop can run (end reads it).
	e.unwatch = context.AfterFunc(ctx, func() { e.post(msg{kind: msgStop}) })
	e.post(msg{kind: msgBegin})
	return &Driver{e: e}
}

// post queues m and makes sure a goroutine runs the loop. It reports
// false if the run has ended.
func (e *executor) post(m msg) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return false
	}
	e.mail = append(e.mail, m)
	if !e.busy {
		e.busy = true
		go e.loop()
	}
	return true
}

// loop handles the mailbox until it is empty or the run ends.
func (e *executor) loop() {
	for {
		e.mu.Lock()
		batch := e.mail
		e.mail = nil
		if len(batch) == 0 {
			e.armPark() // still this loop's: busy is set
			e.busy = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		if out, done := e.handle(batch); done {
			e.end(out)
			return
		}
	}
}

// idle reports whether the run could park: the orchestration waits for
// events or timers only, and nothing of it is uncommitted or under way.
func (e *executor) idle() bool {
	return e.started && e.blocked && !e.finished && !e.replaying && !e.needMark &&
		len(e.pending) == 0 && len(e.consumed) == 0 && len(e.actions) == 0 && e.inflight.Load() == 0
}

// armPark (re)starts the countdown to parking if the run is idle; a
// countdown that outlives the state it saw is ignored (epoch).
func (e *executor) armPark() {
	if e.opts.ParkAfter <= 0 || e.opts.WatchInbox || !e.idle() {
		return
	}
	ep := e.epoch
	if e.parkTimer != nil {
		e.parkTimer.Stop()
	}
	e.parkTimer = time.AfterFunc(e.opts.ParkAfter, func() { e.post(msg{kind: msgPark, epoch: ep}) })
}

// parkNow reports whether a batch is only the countdown of the current,
// still idle state.
func (e *executor) parkNow(batch []msg) bool {
	for _, m := range batch {
		if m.kind != msgPark || m.epoch != e.epoch {
			return false
		}
	}
	return e.idle()
}

// wakeAt is when the first unfired durable timer fires; zero if none.
func (e *executor) wakeAt() time.Time {
	var at time.Time
	for _, t := range e.tasks {
		if t.kind == kindTimer && !t.done && t.id >= 0 && (at.IsZero() || t.fireAt.Before(at)) {
			at = t.fireAt
		}
	}
	return at
}

// handle applies a batch of messages and commits what they produced. It
// reports done with the outcome when the run is over.
func (e *executor) handle(batch []msg) (Outcome, bool) {
	if e.ctx.Err() != nil {
		return Outcome{Err: context.Cause(e.ctx)}, true
	}
	if e.parkNow(batch) {
		return Outcome{Parked: true, WakeAt: e.wakeAt()}, true
	}
	e.epoch++
	for _, m := range batch {
		var err error
		switch m.kind {
		case msgBegin:
			err = e.begin()
		case msgEvent:
			m.ev.Timestamp = now()
			err = e.applyLive(m.ev)
		case msgInbox:
			err = e.consume(m.inbox)
		case msgStop:
			return Outcome{Err: context.Cause(e.ctx)}, true
		case msgPark: // stale: the run did something since
		}
		if err != nil {
			return e.fail(err)
		}
		if e.finished {
			break
		}
	}
	return e.advance()
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
	// delivered, suspend and resume marks first (they tell what happened
	// before this run began, and events raised while suspended are
	// delivered after the resume).
	inbox := x.inbox
	x.inbox = nil
	var marks, events []InboxEntry
	for _, in := range inbox {
		switch {
		case e.seen[in.Key]:
			e.consumed = append(e.consumed, in.Key)
		case in.Event.EventType == EventExecutionSuspended || in.Event.EventType == EventExecutionResumed:
			marks = append(marks, in)
		default:
			events = append(events, in)
		}
	}
	for _, in := range append(marks, events...) {
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

// see notes an inbox key as delivered.
func (e *executor) see(key string) {
	if e.seen == nil {
		e.seen = map[string]bool{}
	}
	e.seen[key] = true
}

// task returns the task of a history task ID, nil if none.
func (e *executor) task(id int) *Task {
	if id < 0 || id >= len(e.tasks) {
		return nil
	}
	return e.tasks[id]
}

// work is the context of the run's work (activities, child starts), made
// when first needed: an idle run has none.
func (e *executor) work() context.Context {
	if e.workCtx == nil {
		e.workCtx, e.stopWork = context.WithCancel(e.ctx)
	}
	return e.workCtx
}

// logArgs are the attributes every line of the run carries.
func (e *executor) logArgs(args ...any) []any {
	return append([]any{"instance_id", e.rec.InstanceID, "execution_id", e.rec.ExecutionID, "fencing_token", e.exec.Token()}, args...)
}

// consume applies an inbox entry, once.
func (e *executor) consume(in InboxEntry) error {
	if e.seen[in.Key] {
		return nil
	}
	e.see(in.Key)
	e.consumed = append(e.consumed, in.Key)
	ev := in.Event
	if ev.ExecutionID != "" && ev.ExecutionID != e.rec.ExecutionID {
		return nil // for another execution of this instance: dropped
	}
	switch ev.EventType {
	case EventSubOrchestrationInstanceCompleted, EventSubOrchestrationInstanceFailed:
		if t := e.task(ev.TaskID); t == nil || t.kind != kindSub || t.done {
			return nil // not a child of this execution's, or reported already
		}
		if ev.ResultRef == refChildOutput {
			out, err := e.exec.c.childOutput(e.ctx, ev.InstanceID)
			if err != nil {
				if errors.Is(err, ErrUnavailable) {
					return err
				}
				ev.EventType, ev.FailureDetails = EventSubOrchestrationInstanceFailed, DetailsOf(err)
				ev.Failure = ev.FailureDetails.ErrorMessage
			}
			ev.Result, ev.ResultRef = out, ""
		}
	}
	ev.Timestamp = now()
	ev.InboxKey = in.Key
	return e.applyLive(ev)
}

func (e *executor) applyLive(ev HistoryEvent) error {
	e.pending = append(e.pending, ev)
	return e.apply(ev)
}

// advance commits what the applied messages produced and starts the work
// of new tasks; it ends the execution when the code has returned.
func (e *executor) advance() (Outcome, bool) {
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
		return e.end2(e.continueAsNew(*e.continueAs))
	case e.finished:
		return e.end2(e.finish())
	}
	if len(e.pending) > 0 || len(e.consumed) > 0 || e.needMark {
		if err := e.commit(); err != nil {
			return e.fail(err)
		}
	}
	for _, t := range fresh {
		e.startWork(t)
	}
	return Outcome{}, false
}

// end2 turns the result of a final write into the run's outcome.
func (e *executor) end2(st RuntimeStatus, err error) (Outcome, bool) {
	if err != nil {
		return e.fail(err)
	}
	return Outcome{Status: st}, true
}

// fail decides what an error does: a stop of the run, or a failed
// instance for errors that are the orchestration's (non-determinism, the
// history limit) or that etcd can never accept.
func (e *executor) fail(err error) (Outcome, bool) {
	if e.ctx.Err() != nil {
		return Outcome{Err: context.Cause(e.ctx)}, true
	}
	var nd *NonDeterminismError
	switch {
	case errors.Is(err, ErrHistoryLimit), errors.As(err, &nd):
	case errors.Is(err, ErrStoreLimit), errors.Is(err, errInternalLimit):
		err = fmt.Errorf("a step of the orchestration could not be stored within etcd's limits (%d bytes, %d operations per request): %w",
			e.exec.c.limits.RequestBytes, e.exec.c.limits.TxnOps, err)
	default:
		return Outcome{Err: err}, true
	}
	e.pending = nil // what could not be stored is not stored
	st, ferr := e.finishWith(nil, err)
	if ferr != nil {
		return Outcome{Err: ferr}, true
	}
	return Outcome{Status: st}, true
}

// end stops everything the run started, waits for it, and reports.
func (e *executor) end(out Outcome) {
	if e.unwatch != nil {
		e.unwatch()
	}
	if e.parkTimer != nil {
		e.parkTimer.Stop()
	}
	if e.stopWork != nil {
		e.stopWork()
	}
	for _, t := range e.tasks {
		if t.timer != nil {
			t.timer.Stop()
		}
	}
	e.abort()
	e.workers.Wait()
	e.mu.Lock()
	e.ended = true
	for _, m := range e.mail {
		if m.kind == msgInbox && out.Parked {
			out.Missed = true // came while it parked: not applied
		}
	}
	e.mail = nil
	e.mu.Unlock()
	e.endSpan(out)
	if e.opts.OnEnd != nil {
		e.opts.OnEnd(out)
	}
}

// endSpan ends the run's span with what the run did: the status it wrote
// (a Failed one with its failure), or why it stopped without (a stop from
// outside, such as a drain or the loss of the instance, is no error of the
// run's).
func (e *executor) endSpan(out Outcome) {
	span := e.span
	if span.IsRecording() {
		switch {
		case out.Status != "":
			span.SetAttributes(AttrRuntimeStatus.String(string(out.Status)))
			if out.Status == StatusFailed {
				RecordFailure(span, e.failure)
			}
		case out.Err != nil && e.ctx.Err() != nil:
			span.SetAttributes(AttrStopCause.String(out.Err.Error()))
		case out.Err != nil:
			span.SetAttributes(AttrStopCause.String(out.Err.Error()))
			span.SetStatus(codes.Error, firstLine(out.Err.Error()))
		}
	}
	span.End()
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
	if (t.kind == kindActivity || t.kind == kindSub) && len(ev.Input) > 0 {
		t.input = ev.Input // as scheduled (and resolved from its blob)
	}
	if t.kind == kindSub && ev.InstanceID != "" {
		t.sub.id = ev.InstanceID
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
	e.resume, e.yielded = make(chan bool), make(chan struct{})
	go func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(abortSignal); !ok {
					e.outErr = &panicError{what: "orchestration", value: fmt.Sprint(r), stack: string(debug.Stack())}
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

// step lets the orchestration run until it waits or returns. Fresh code
// that runs for a while without waiting gets its record marked Running
// meanwhile.
func (e *executor) step() {
	e.blocked = false
	e.resume <- true
	if e.needMark && !e.replaying {
		t := time.NewTimer(markRunningAfter)
		select {
		case <-e.yielded:
			t.Stop()
			e.afterStep()
			return
		case <-t.C:
			// The orchestration goroutine touches neither pending nor
			// history; the commit runs beside it.
			if err := e.commit(); err != nil && e.ctx.Err() == nil {
				e.log.Debug("marking the record Running failed; the next step does it", e.logArgs("error", err)...)
			}
		}
	}
	<-e.yielded
	e.afterStep()
}

func (e *executor) afterStep() {
	if !e.finished {
		e.blocked = true
	}
}

// wake resumes the orchestration if what it waits for is done.
func (e *executor) wake() {
	if !e.blocked {
		return
	}
	for _, t := range e.waiting {
		if t.done {
			e.step()
			return
		}
	}
}

// abort unwinds a blocked orchestration goroutine.
func (e *executor) abort() {
	if e.blocked {
		e.blocked = false
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

// Actions issued by the code (on the orchestration goroutine), or by a
// task's completion (on the loop).

func (e *executor) newTask(kind taskKind, name string) *Task {
	t := &Task{e: e, id: e.nextID, kind: kind, name: name}
	e.nextID++
	e.tasks = append(e.tasks, t)
	e.actions = append(e.actions, t)
	return t
}

func (e *executor) deliver(name string, data json.RawMessage) {
	for i, w := range e.waiters {
		if w.name == name {
			e.waiters = append(e.waiters[:i:i], e.waiters[i+1:]...)
			w.complete(data, nil)
			return
		}
	}
	if e.buffered == nil {
		e.buffered = map[string][]json.RawMessage{}
	}
	e.buffered[name] = append(e.buffered[name], data)
}

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
			ev := e.callActivity(wctx, t)
			e.inflight.Add(-1) // before the post: the step it brings re-checks idleness
			if wctx.Err() == nil {
				e.post(msg{kind: msgEvent, ev: ev})
			}
		}()
	case kindSub:
		wctx := e.work()
		e.workers.Add(1)
		e.inflight.Add(1)
		go func() {
			defer e.workers.Done()
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
func (e *executor) callActivity(wctx context.Context, t *Task) HistoryEvent {
	ctx, span := e.tracer.Start(wctx, "activity "+t.name, trace.WithAttributes(
		AttrActivity.String(t.name), AttrTaskID.Int(t.id), AttrAttempt.Int(t.attempt),
		AttrInstanceID.String(e.rec.InstanceID), AttrExecutionID.String(e.rec.ExecutionID),
	))
	ev := e.activityAttempt(ctx, t)
	if ev.EventType == EventTaskFailed {
		RecordFailure(span, ev.FailureDetails)
	}
	span.End()
	return ev
}

func (e *executor) activityAttempt(wctx context.Context, t *Task) HistoryEvent {
	fail := func(err error, final bool) HistoryEvent {
		d := DetailsOf(err)
		d.IsNonRetriable = d.IsNonRetriable || final
		return HistoryEvent{EventType: EventTaskFailed, TaskID: t.id, Name: t.name, Failure: d.ErrorMessage,
			NonRetriable: d.IsNonRetriable, FailureDetails: d}
	}
	var fn ActivityFunc
	if e.reg != nil {
		fn, _ = e.reg.Activity(t.name)
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

// Commits.

// commit appends the pending events and deletes the consumed inbox keys
// (marking the record Running if it is not yet), retrying through
// transient store errors for as long as the run lasts.
func (e *executor) commit() error {
	for i := range e.pending {
		e.pending[i].Seq = len(e.history) + i
	}
	s := step{events: e.pending, deletes: e.consumed}
	if e.needMark {
		s.change = func(r *Record) { r.RuntimeStatus = StatusRunning }
	}
	if err := e.write(s); err != nil {
		return err
	}
	e.history = append(e.history, e.pending...)
	e.pending, e.consumed, e.needMark = nil, nil, false
	return nil
}

// write commits a step, part by part, retrying a part whose write failed
// transiently (its outcome is then unknown; the retry finds out) with
// backoff, until the run's context ends. Permanent errors are returned.
func (e *executor) write(s step) error { return e.writeFinal(e.ctx, s) }

// writeFinal is write with the attempts made under wctx, which a final
// write keeps alive past the run's context (finalWriteContext). Retries
// stop with the run's context; if an attempt's outcome was unknown then,
// one read tells whether it landed.
func (e *executor) writeFinal(wctx context.Context, s step) error {
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
			if e.opts.OnStoreError != nil {
				e.opts.OnStoreError(err)
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

// finish ends the execution with the code's result.
func (e *executor) finish() (RuntimeStatus, error) {
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

// finishWith commits the pending events, ExecutionCompleted and the
// terminal status with the owners key's release. It is not abandoned when
// its own owners-key delete cancels the run (finalWriteContext); the fence
// still refuses it if the holding was really lost.
func (e *executor) finishWith(output json.RawMessage, runErr error) (RuntimeStatus, error) {
	st := StatusCompleted
	ev := HistoryEvent{EventType: EventExecutionCompleted, Timestamp: now(), Result: output}
	if runErr != nil {
		st = StatusFailed
		ev.FailureDetails = DetailsOf(runErr)
		ev.Failure = ev.FailureDetails.ErrorMessage
	}
	ev.Status = st
	if len(e.history)+len(e.pending) < MaxHistoryEvents+1 {
		e.pending = append(e.pending, ev)
	}
	for i := range e.pending {
		e.pending[i].Seq = len(e.history) + i
	}
	if e.ctx.Err() != nil {
		return "", context.Cause(e.ctx) // stopped first: the next holder decides
	}
	s := e.exec.finishStep(e.pending, output, runErr)
	s.deletes = nil // the final write deletes the whole inbox
	wctx, cancel := finalWriteContext(e.ctx)
	defer cancel()
	if err := e.tracedFinal(wctx, s, st); err != nil {
		return "", err
	}
	e.failure = ev.FailureDetails
	e.history = append(e.history, e.pending...)
	e.pending, e.consumed = nil, nil
	return st, nil
}

// tracedFinal is writeFinal of the execution's end, in a short span (a
// child of the run's) that says the status it writes.
func (e *executor) tracedFinal(wctx context.Context, s step, st RuntimeStatus) error {
	_, span := e.tracer.Start(wctx, "complete "+e.rec.Name, trace.WithAttributes(
		AttrInstanceID.String(e.rec.InstanceID), AttrExecutionID.String(e.rec.ExecutionID),
		AttrRuntimeStatus.String(string(st)), AttrFencingToken.Int64(e.exec.Token()),
	))
	defer span.End()
	err := e.writeFinal(wctx, s)
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
// instance: a new executionId with the new input, status ContinuedAsNew,
// this history deleted, the events this execution consumed but the code
// never received carried into the new execution's first history, and the
// events never consumed left in the inbox for it. The owners key is
// released in the same transaction; a node (likely this one) takes the new
// execution.
func (e *executor) continueAsNew(input json.RawMessage) (RuntimeStatus, error) {
	x := e.exec
	input, err := x.c.checkJSON("ContinueAsNew input", input)
	if err != nil {
		return e.finishWith(nil, err)
	}
	id := e.rec.InstanceID
	newExec := NewID()
	events := []HistoryEvent{{EventType: EventExecutionStarted, Timestamp: now(), Name: e.rec.Name, Input: input}}
	deletes := e.consumed
	if e.dropEvents {
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
	} else {
		names := make([]string, 0, len(e.buffered))
		for name := range e.buffered {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			for _, data := range e.buffered[name] {
				events = append(events, HistoryEvent{EventType: EventEventRaised, Timestamp: now(), Name: name, Input: data})
			}
		}
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
		},
		final: func(*Record) []clientv3.Op {
			return []clientv3.Op{
				clientv3.OpPut(x.c.keys.Input(id), string(input)),
				clientv3.OpDelete(x.c.keys.Output(id)),
				clientv3.OpDelete(x.c.keys.History(id, oldExec), clientv3.WithPrefix()),
				clientv3.OpDelete(x.c.keys.Blobs(id, oldExec), clientv3.WithPrefix()),
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
	e.pending, e.consumed = nil, nil
	return StatusContinuedAsNew, nil
}

// watchInbox delivers the instance's inbox entries from the revision after
// the open read on, for a run without a node to dispatch them. A broken or
// compacted watch reads the inbox again and watches on from that read;
// entries already seen are ignored.
func (e *executor) watchInbox() {
	prefix := e.keys.InboxPrefix(e.rec.InstanceID)
	cli := e.exec.c.etcd
	rev := e.exec.readRev + 1
	wctx := e.work()
	e.workers.Add(1)
	go func() {
		defer e.workers.Done()
		for wctx.Err() == nil {
			wch := cli.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix(),
				clientv3.WithRev(rev), clientv3.WithFilterDelete())
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					if ev.Kv.Version == 1 {
						e.post(msg{kind: msgInbox, inbox: ParseInboxEntry(string(ev.Kv.Key), ev.Kv.CreateRevision, ev.Kv.Value)})
					}
				}
			}
			for wctx.Err() == nil {
				resp, err := cli.Get(wctx, prefix, clientv3.WithPrefix(),
					clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
				if err == nil {
					for _, kv := range resp.Kvs {
						e.post(msg{kind: msgInbox, inbox: ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value)})
					}
					rev = resp.Header.Revision + 1
					break
				}
				select {
				case <-wctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
}

// deterministic helpers for the context.

func (e *executor) newGUID() string {
	e.guids++
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", e.rec.InstanceID, e.rec.ExecutionID, e.guids)))
	return hex.EncodeToString(sum[:16])
}
