package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

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
	// the new run replays the history and goes on (Outcome.Kept, when set,
	// replays it from memory). Needs the caller to deliver the inbox (not
	// WatchInbox).
	ParkAfter time.Duration
	// OnStoreError, if set, hears of every failed attempt of the run's
	// writes that is retried (etcd unavailable, out of space, refused), as
	// it happens, from the run's goroutine.
	OnStoreError func(error)
	// BatchBudget bounds how long activities that run on this holder may
	// go on without a commit: the results of local activities (registered
	// in the Registry) are applied in memory and committed together when
	// the orchestration waits on something else (a timer, an event, a
	// sub-orchestration), ends, or this much time has passed since the
	// batch's last commit. Zero (or below) turns batching off: every step
	// is committed before its activities start. A node uses
	// DefaultBatchBudget unless told otherwise (serve --batch-budget).
	BatchBudget time.Duration
	// BatchTasks bounds the activities one batch starts before it commits;
	// zero means DefaultBatchTasks.
	BatchTasks int
}

// The default batch bounds (RunOptions.BatchBudget, BatchTasks).
const (
	DefaultBatchBudget = time.Second
	DefaultBatchTasks  = 100
)

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
	// Kept is set for a parked run that missed nothing and whose history
	// is small (64 events, 16 KiB of payloads at most): its execution as
	// the run left it, the committed history in memory. Reopen and Drive
	// it to go on without reading etcd (the replay runs from memory), or
	// drop it to keep nothing.
	Kept *Kept
}

// Driver is a run of one execution: it replays the history, then runs the
// orchestration live, committing each step with the holder's fence, until
// the execution ends or the run's context is cancelled. It holds no
// goroutine of its own while the orchestration waits: a step runs when
// something arrives (an activity's or timer's completion, an inbox entry),
// and all that is ready by then shares one commit. A Driver made by
// DriveSteps runs the steps of code outside the process instead (see
// there); it keeps one goroutine until it ends or parks.
type Driver struct {
	e *executor // the Go coroutine's run
	s *stepRun  // or a step driver's (DriveSteps)
}

// Deliver hands the run an inbox entry of its instance. Entries must come
// in CreateRevision order; repeats and entries already consumed are
// ignored. It reports false if the run has ended: the entry was not taken
// (a parked run then reports it in Outcome.Missed if OnEnd has not been
// called yet).
func (d *Driver) Deliver(entry InboxEntry) bool {
	if d.s != nil {
		return d.s.deliver(entry)
	}
	return d.e.post(msg{kind: msgInbox, inbox: entry})
}

// ErrRunEnded is what Driver.Checkpoint returns for a run that ended
// before it could commit: what the run had applied was not committed (or
// the run's own end committed it).
var ErrRunEnded = errors.New("orchestrator: the run ended")

// Checkpoint commits what the run has applied and not committed yet - the
// results of an open batch of local activities (RunOptions.BatchBudget) -
// returns once that is in etcd, and turns batching off for the rest of
// the run: every later step commits before its activities start. A holder
// about to stop (a drain) calls it first, so that the next holder has
// nothing to repeat but the activities running at the stop. With nothing
// to commit it returns nil at once, without waiting for the run's loop
// (which may be in a long step of the code, such as an exec function's),
// and so it does for a run that has ended (a parked one had nothing
// uncommitted). It returns the commit's
// error, ErrRunEnded if the run ended first, or ctx's error.
//
// A step driver's run (DriveSteps) has no batch; it holds the results of
// the activities it ran (a worker's, or resumed local ones) in memory
// until the step that carries them commits. Checkpoint stores those in the
// instance's inbox (Client.CompleteTask) and sends every later result
// there too, so the next holder runs again only the activities running at
// the stop. The results of local activities that its last step ran
// (within Engine.Complete) are not stored: a holder stopping before the
// next step commits leaves them to run again, as after a crash.
func (d *Driver) Checkpoint(ctx context.Context) error {
	if d.s != nil {
		return d.s.checkpoint(ctx)
	}
	// batching sets uncommitted before it reads stopBatch: either this
	// sees the batch, or the batch is not made and its step commits.
	d.e.stopBatch.Store(true)
	if !d.e.uncommitted.Load() {
		return nil // also while the code runs a long step (an exec function)
	}
	reply := make(chan error, 1)
	if !d.e.post(msg{kind: msgCheckpoint, reply: reply}) {
		return nil
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

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
	msgBegin      msgKind = iota
	msgEvent              // a completion of this run's work
	msgInbox              // an inbox entry
	msgStop               // the context ended
	msgPark               // the idle time of RunOptions.ParkAfter passed
	msgFlush              // the batch's time budget passed
	msgCheckpoint         // Driver.Checkpoint: commit now
)

type msg struct {
	kind  msgKind
	ev    HistoryEvent
	inbox InboxEntry
	epoch uint64     // of a msgPark: the batch count when it was armed; of a msgFlush: the batch's
	reply chan error // of a msgCheckpoint: gets the commit's outcome
}

// executor is the state of one run. The mailbox is guarded by mu; the rest
// belongs to whichever goroutine runs loop (there is at most one), and to
// the orchestration goroutine while the loop waits for it in step.
type executor struct {
	*Engine // the history, the commits; ctx, exec, rec, log, span are its
	fn      OrchestratorFunc
	reg     *Registry
	keys    Keys
	opts    RunOptions

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

	octx      *OrchestrationContext
	tasks     []*Task // by task ID: IDs are 0, 1, 2, ...
	nextID    int
	actions   []*Task // issued by the code, not yet matched (replay) or committed (live)
	waiters   []*Task // event waits, in the order they began (few at a time)
	buffered  map[string][]json.RawMessage
	replaying bool
	suspended bool           // between ExecutionSuspended and ExecutionResumed
	held      []HistoryEvent // events raised while suspended, delivered at the resume
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

	// The open batch: local activities started before their schedule is
	// committed (see RunOptions.BatchBudget).
	batchOpen    bool
	batchGen     uint64    // batches opened, so a stale msgFlush is ignored
	batchSince   time.Time // the batch's open or last commit
	batchTasks   int       // activities the batch started
	batchRunning int       // of them, not finished
	flushTimer   *time.Timer
	checkpoints  []chan error // Driver.Checkpoint calls the next advance answers: it commits, batching or not
	stopBatch    atomic.Bool  // Driver.Checkpoint was called: no batching any more
	uncommitted  atomic.Bool  // a batch's results are applied and not committed (Checkpoint reads it)

	workers     sync.WaitGroup // activities, child starts, the inbox watch
	childStarts sync.WaitGroup // child starts
	workCtx     context.Context
	stopWork    context.CancelFunc
}

func drive(ctx context.Context, exec *Execution, fn OrchestratorFunc, reg *Registry, opts RunOptions) *Driver {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	e := &executor{
		Engine: &Engine{exec: exec, rec: *exec.rec, log: opts.Logger, tracer: exec.c.tracer, onStoreError: opts.OnStoreError},
		fn:     fn, reg: reg, keys: exec.c.keys, opts: opts,
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
	// Checkpoints are taken first: however the batch ends, the advance
	// below or the run's end answers them.
	for _, m := range batch {
		if m.kind == msgCheckpoint {
			e.checkpoints = append(e.checkpoints, m.reply)
		}
	}
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
		case msgFlush:
			err = e.flush(m.epoch)
		case msgPark, msgCheckpoint: // a stale countdown; checkpoints are taken above
		}
		if err != nil {
			return e.fail(err)
		}
		if e.finished {
			break
		}
	}
	out, done := e.advance()
	e.uncommitted.Store(!done && (len(e.pending) > 0 || len(e.consumed) > 0 || len(e.extra) > 0 || e.needMark))
	e.answerCheckpoints(out, done)
	return out, done
}

// answerCheckpoints tells the Driver.Checkpoint calls of a batch how its
// commit went: advance committed everything applied unless the run ended
// without writing its end.
func (e *executor) answerCheckpoints(out Outcome, done bool) {
	var err error
	switch {
	case done && out.Status == "" && out.Err != nil:
		err = fmt.Errorf("%w: %w", ErrRunEnded, out.Err)
	case done && out.Status == "":
		err = ErrRunEnded
	}
	for _, c := range e.checkpoints {
		c <- err
	}
	e.checkpoints = nil
}

// work is the context of the run's work (activities, child starts), made
// when first needed: an idle run has none.
func (e *executor) work() context.Context {
	if e.workCtx == nil {
		e.workCtx, e.stopWork = context.WithCancel(e.ctx)
	}
	return e.workCtx
}

// consume applies an inbox entry, once.
func (e *executor) consume(in InboxEntry) error {
	ev, ok, err := e.admit(in, func(id int, kind EventType) bool {
		t := e.task(id)
		return t != nil && !t.done && t.scheduled() == kind
	})
	if !ok || err != nil {
		return err
	}
	return e.applyLive(ev)
}

func (e *executor) applyLive(ev HistoryEvent) error {
	e.pending = append(e.pending, ev)
	return e.apply(ev)
}

// advance records the tasks the code issued (as actions, through the
// engine), then commits what the applied messages produced and starts the
// work of the new tasks - or, while they are all local activities, starts
// them and leaves the commit to the batch (see RunOptions.BatchBudget). It
// ends the execution when the code has returned.
func (e *executor) advance() (Outcome, bool) {
	fresh := e.actions
	e.actions = nil
	ts := now()
	for _, t := range fresh {
		if err := e.schedule(t.action(), ts); err != nil {
			return e.fail(err)
		}
	}
	if len(e.history)+len(e.pending) > MaxHistoryEvents {
		return e.fail(ErrHistoryLimit)
	}
	if e.finished {
		// Children the last steps scheduled are created before the final
		// write, which would otherwise record a child that never starts.
		if err := e.startChildren(); err != nil {
			return e.fail(err)
		}
		return e.outcomeOf(e.finish())
	}
	if e.batching(fresh) {
		for _, t := range fresh {
			t.batched = true
			e.batchRunning++
			e.startWork(t)
		}
		return Outcome{}, false
	}
	if len(e.pending) > 0 || len(e.consumed) > 0 || len(e.extra) > 0 || e.needMark {
		if err := e.commit(); err != nil {
			return e.fail(err)
		}
		e.batchSince = time.Now()
	}
	if e.batchRunning == 0 {
		e.closeBatch()
	} else {
		e.armFlush()
	}
	for _, t := range fresh {
		e.startWork(t)
	}
	return Outcome{}, false
}

// outcomeOf turns the result of a final write into the run's outcome.
func (e *executor) outcomeOf(st RuntimeStatus, err error) (Outcome, bool) {
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
	e.pending, e.extra = nil, nil // what could not be stored is not stored
	st, ferr := e.finishWith(StatusFailed, nil, DetailsOf(err))
	if ferr != nil {
		return Outcome{Err: ferr}, true
	}
	return Outcome{Status: st}, true
}

// finish ends the execution with the code's result, as the Complete
// action of its last step.
func (e *executor) finish() (RuntimeStatus, error) {
	if e.continueAs != nil {
		c := Complete{Status: StatusContinuedAsNew, Output: *e.continueAs, DropInbox: e.dropEvents}
		if !e.dropEvents {
			c.CarryoverEvents = e.carryover()
		}
		return e.complete(c)
	}
	runErr := e.outErr
	var output json.RawMessage
	if runErr == nil {
		b, err := json.Marshal(e.output)
		if err == nil {
			output, err = e.exec.c.checkJSON("output", b)
		}
		if err != nil {
			runErr = fmt.Errorf("output: %w", err)
		}
	}
	if runErr != nil {
		return e.complete(Complete{Status: StatusFailed, Failure: DetailsOf(runErr)})
	}
	return e.complete(Complete{Status: StatusCompleted, Output: output})
}

// carryover are the events the code received and did not take (buffered
// by name, and those held while suspended), for the next execution.
func (e *executor) carryover() []HistoryEvent {
	names := make([]string, 0, len(e.buffered))
	for name := range e.buffered {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []HistoryEvent
	for _, name := range names {
		for _, data := range e.buffered[name] {
			out = append(out, HistoryEvent{EventType: EventEventRaised, Name: name, Input: data})
		}
	}
	for _, h := range e.held {
		out = append(out, HistoryEvent{EventType: EventEventRaised, Name: h.Name, Input: h.Input})
	}
	return out
}

// end stops everything the run started, waits for it, and reports.
func (e *executor) end(out Outcome) {
	if e.unwatch != nil {
		e.unwatch()
	}
	if e.parkTimer != nil {
		e.parkTimer.Stop()
	}
	if e.flushTimer != nil {
		e.flushTimer.Stop()
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
		if m.kind == msgCheckpoint {
			m.reply <- ErrRunEnded
		}
	}
	for _, c := range e.checkpoints {
		c <- ErrRunEnded
	}
	e.checkpoints = nil
	e.mail = nil
	e.mu.Unlock()
	if out.Parked && !out.Missed {
		out.Kept = e.exec.keep(e.history)
	}
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
