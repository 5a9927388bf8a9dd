package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// A step driver runs an execution whose orchestration code lives outside
// this process (a Durable Task SDK worker, through package
// scheduler/sidecar): the engine's steps (Engine.Next, Engine.Complete) are
// sent out with StepFunc, and the activities they schedule that are not
// local run with TaskFunc. It is a Driver like the Go coroutine's, so a
// node runs both alike.

// StepFunc sends one step to the driver outside and waits for its answer.
// It calls complete with the answer's actions at most once; complete
// commits them (Engine.Complete) and returns its error, which StepFunc
// should tell the worker and return. An answer that cannot be turned into
// actions is reported as an error wrapping ErrInvalidAction, without
// calling complete: the driver then fails the execution with that error's
// message. Any other error stops the run (the node runs the execution
// again later, from its history).
type StepFunc func(ctx context.Context, item *WorkItem, complete func([]Action) error) error

// RemoteTask is an activity task that a step driver hands to TaskFunc.
type RemoteTask struct {
	InstanceID   string
	ExecutionID  string
	FencingToken int64
	ScheduleTask
	// Trace is the W3C trace context of the run that schedules the task
	// (its span), for the worker's span of the activity; zero without a
	// tracer.
	Trace TraceContext
}

// TaskFunc runs an activity task outside (a worker) and waits for its
// result: the result (JSON), or the failure. An error means there was no
// result (the run's context ended, the node drains): the task is run again
// by whichever run of the execution comes next. ErrTaskQueued means the
// task was put in the task queue (Client.QueueTask) for a worker on any
// node: its result comes through the instance's inbox, and the run waits
// for it as for any inbox entry.
type TaskFunc func(ctx context.Context, t RemoteTask) (json.RawMessage, *FailureDetails, error)

// StepDriverOptions configure DriveSteps.
type StepDriverOptions struct {
	// Step sends the steps. Required.
	Step StepFunc
	// Task runs the activities that Activities lacks. If nil, such tasks
	// fail.
	Task TaskFunc
	// Activities are the activities that run in this process (local).
	Activities *Registry
}

// ErrNoTaskRunner fails a task a step driver has no TaskFunc for.
var ErrNoTaskRunner = errors.New("orchestrator: no worker runs this activity")

// DriveSteps starts a run of the execution that sends its steps to a
// driver outside (so.Step), as Registry.Drive does with the Go code. The
// run opens the engine, sends a step whenever there are new events (the
// start, an inbox entry delivered with Driver.Deliver, a due timer, a local
// activity's result), and runs the activities the steps schedule: local
// ones in this process (within Engine.Complete; the result is the next
// step's), the others with so.Task. A remote activity's result is handed
// to the run in memory and is a new event (TaskCompleted, TaskFailed) of
// the next step, committed with that step's answer: no transaction of its
// own. An activity whose result was not committed when the run stopped
// (the holder's crash, a lost lease) is run again by the next run, which
// runs every task the history has scheduled and not finished (a local
// one's result then comes back the same way); a result arrives once per
// task and run, and one for a task that is not open is dropped, so the
// history holds each completion once. Driver.Checkpoint (a drain) stores
// the results not yet committed in the instance's inbox
// (Client.CompleteTask, named by the execution and task ID), and the later
// ones too, so they survive the run and come back through Deliver. With
// RunOptions.ParkAfter, a run that has waited that long with no step and
// no task out parks (Outcome.Parked, WakeAt its first timer), as the Go
// driver's does. With RunOptions.BatchBudget, a step whose answer only
// schedules tasks is not committed before the driver is told (its events
// are the next commit's, and the next step's past events): a lifecycle of
// activities commits once, with its end, as the Go driver's batches do,
// and a crash repeats those steps and their tasks. The batch is committed
// at the latest BatchBudget after its first step, before the run parks,
// and by Checkpoint. The run does not watch the inbox (the caller delivers
// it).
func DriveSteps(ctx context.Context, exec *Execution, opts RunOptions, so StepDriverOptions) *Driver {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rctx, span := exec.c.tracer.Start(exec.rec.trace().context(ctx), "run "+exec.rec.Name,
		trace.WithAttributes(runAttrs(exec.rec, exec.Token(), opts.Reason)...))
	g := OpenEngine(rctx, exec, EngineOptions{Activities: so.Activities, Logger: opts.Logger, OnStoreError: opts.OnStoreError, BatchBudget: opts.BatchBudget})
	g.span = span
	s := &stepRun{g: g, ctx: rctx, so: so, opts: opts, wake: make(chan struct{}, 1)}
	s.tctx, s.stopTasks = context.WithCancel(rctx)
	s.dispatched = map[int]bool{}
	s.unstored = map[int]HistoryEvent{}
	go s.loop()
	return &Driver{s: s}
}

// stepRun is a run of a step driver.
type stepRun struct {
	g    *Engine
	ctx  context.Context
	so   StepDriverOptions
	opts RunOptions

	mu       sync.Mutex
	queue    []InboxEntry         // delivered, not yet handed to the engine
	results  []HistoryEvent       // tasks' results, not yet handed to the engine
	unstored map[int]HistoryEvent // tasks' results not committed yet, by task ID
	toInbox  bool                 // Checkpoint was called: results go to the inbox
	ended    bool
	wake     chan struct{} // cap 1: something was delivered

	tctx       context.Context // of the tasks
	stopTasks  context.CancelFunc
	tasks      sync.WaitGroup
	running    atomic.Int32 // tasks under way
	dispatched map[int]bool // task IDs this run started (loop's)
}

// park ends the run as parked unless something was delivered meanwhile.
func (s *stepRun) park() (Outcome, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 || len(s.results) > 0 || s.running.Load() > 0 {
		return Outcome{}, false
	}
	s.ended = true // a later delivery is refused: the caller keeps it and wakes the run
	return Outcome{Parked: true, WakeAt: s.g.firstTimer()}, true
}

// deliver takes an inbox entry for the next step; false once the run ended.
func (s *stepRun) deliver(in InboxEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.queue = append(s.queue, in)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

func (s *stepRun) loop() {
	out := s.run()
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	s.stopTasks()
	s.tasks.Wait()
	span := s.g.span
	switch {
	case out.Status != "":
		span.SetAttributes(AttrRuntimeStatus.String(string(out.Status)))
		if out.Status == StatusFailed {
			RecordFailure(span, s.g.failure)
		}
	case out.Err != nil:
		span.SetAttributes(AttrStopCause.String(out.Err.Error()))
		if s.ctx.Err() == nil {
			span.SetStatus(codes.Error, firstLine(out.Err.Error()))
		}
	}
	span.End()
	if s.opts.OnEnd != nil {
		s.opts.OnEnd(out)
	}
}

// run sends steps until the execution ends or the run must stop.
func (s *stepRun) run() Outcome {
	first := true
	for {
		if s.ctx.Err() != nil {
			return Outcome{Err: context.Cause(s.ctx)}
		}
		s.mu.Lock()
		q, rs := s.queue, s.results
		s.queue, s.results = nil, nil
		s.mu.Unlock()
		for _, in := range q {
			s.g.Deliver(in)
		}
		for _, ev := range rs {
			s.g.taskResult(ev)
		}
		item := s.g.Next()
		if first {
			first = false
			s.resumeTasks()
		}
		var wakeAt time.Time
		if len(item.New) > 0 || s.g.needMark {
			res, out, done := s.step(item)
			if done {
				return out
			}
			for _, t := range res.Remote {
				s.startTask(t)
			}
			if res.More {
				continue
			}
			wakeAt = res.WakeAt
		} else {
			wakeAt = s.g.firstTimer()
		}
		var timer, parkTimer, flushTimer *time.Timer
		var fire, parkNow, flushNow <-chan time.Time
		if !wakeAt.IsZero() {
			timer = time.NewTimer(time.Until(wakeAt) + time.Millisecond) // now() is in ms
			fire = timer.C
		}
		if since := s.g.DeferredSince(); !since.IsZero() {
			// The batch of deferred steps is committed when its budget is
			// spent, if no step has committed it by then.
			flushTimer = time.NewTimer(time.Until(since.Add(s.opts.BatchBudget)))
			flushNow = flushTimer.C
		}
		if s.opts.ParkAfter > 0 && s.running.Load() == 0 {
			parkTimer = time.NewTimer(s.opts.ParkAfter)
			parkNow = parkTimer.C
		}
		parked := false
		var out Outcome
		select {
		case <-s.ctx.Done():
		case <-s.wake:
		case <-fire:
		case <-flushNow:
			if err := s.g.Flush(); err != nil {
				return Outcome{Err: err}
			}
		case <-parkNow:
			if err := s.g.Flush(); err != nil { // nothing waits uncommitted in a parked run
				return Outcome{Err: err}
			}
			out, parked = s.park()
		}
		if timer != nil {
			timer.Stop()
		}
		if flushTimer != nil {
			flushTimer.Stop()
		}
		if parkTimer != nil {
			parkTimer.Stop()
		}
		if parked {
			return out
		}
	}
}

// step sends one step and commits its answer; done with the outcome when
// the run is over.
func (s *stepRun) step(item *WorkItem) (*StepResult, Outcome, bool) {
	var res *StepResult
	var cerr error
	called := false
	err := s.so.Step(s.ctx, item, func(actions []Action) error {
		if called {
			return fmt.Errorf("%w: the step was answered already", ErrStaleCompletion)
		}
		called = true
		res, cerr = s.g.Complete(s.ctx, item.Seq, actions)
		if cerr == nil {
			s.stored(item.New)
		}
		return cerr
	})
	switch {
	case called && cerr == nil && res != nil:
		if res.Status != "" {
			return res, Outcome{Status: res.Status}, true
		}
		return res, Outcome{}, false
	case s.ctx.Err() != nil:
		return nil, Outcome{Err: context.Cause(s.ctx)}, true
	case errors.Is(cerr, ErrInvalidAction) || !called && errors.Is(err, ErrInvalidAction):
		// The worker's answer cannot be taken: the same code would answer
		// the same again, so the execution fails, with the reason.
		why := err
		if cerr != nil {
			why = cerr
		}
		s.g.log.Warn("a worker's answer was refused; failing the execution", s.g.logArgs("error", why)...)
		r, ferr := s.g.Complete(s.ctx, item.Seq, []Action{Complete{Status: StatusFailed,
			Failure: &FailureDetails{ErrorType: "InvalidOrchestratorAction", ErrorMessage: why.Error(), IsNonRetriable: true}}})
		if ferr != nil {
			return nil, Outcome{Err: ferr}, true
		}
		return r, Outcome{Status: r.Status}, true
	case cerr != nil:
		return nil, Outcome{Err: cerr}, true
	case err != nil:
		return nil, Outcome{Err: err}, true
	}
	return nil, Outcome{Err: errors.New("orchestrator: a step ended without an answer")}, true
}

// resumeTasks starts the activities the history scheduled and that have no
// result yet (a run that takes over from one that stopped).
func (s *stepRun) resumeTasks() {
	st := s.g.step
	st.mu.Lock()
	var open []ScheduleTask
	for id, kind := range st.open {
		if kind == EventTaskScheduled {
			open = append(open, ScheduleTask{ID: id, Name: st.names[id], Version: st.vers[id], Input: st.inputs[id]})
		}
	}
	st.mu.Unlock()
	slices.SortFunc(open, func(a, b ScheduleTask) int { return a.ID - b.ID })
	for _, t := range open {
		s.startTask(t)
	}
}

// startTask runs a task in a goroutine of the run (once per run) and hands
// its result to the next step, or, after a checkpoint, stores it in the
// inbox.
func (s *stepRun) startTask(t ScheduleTask) {
	if s.dispatched[t.ID] {
		return
	}
	s.dispatched[t.ID] = true
	g := s.g
	s.running.Add(1)
	s.tasks.Go(func() {
		defer s.running.Add(-1)
		ctx := s.tctx
		var result json.RawMessage
		var failure *FailureDetails
		if _, local := g.step.reg.activity(t.Name); local {
			ev := g.callActivity(ctx, g.step.reg, &Task{id: t.ID, kind: kindActivity, name: t.Name, input: orNull(t.Input), attempt: 1})
			result, failure = ev.Result, ev.FailureDetails
			if ev.EventType == EventTaskFailed && failure == nil {
				failure = &FailureDetails{ErrorType: "Error", ErrorMessage: ev.Failure}
			}
		} else if s.so.Task == nil {
			failure = DetailsOf(fmt.Errorf("%w: %q", ErrNoTaskRunner, t.Name))
		} else {
			var err error
			result, failure, err = s.so.Task(ctx, RemoteTask{InstanceID: g.rec.InstanceID, ExecutionID: g.rec.ExecutionID,
				FencingToken: g.exec.Token(), ScheduleTask: t, Trace: TraceContextFrom(ctx)})
			if errors.Is(err, ErrTaskQueued) {
				return // its result comes through the inbox (Driver.Deliver)
			}
			if err != nil {
				if ctx.Err() == nil {
					g.log.Warn("an activity got no result; the next run of the execution runs it again", g.logArgs("task_id", t.ID, "activity", t.Name, "error", err)...)
				}
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		ev := s.resultEvent(t, result, failure)
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return // the next run runs the task again
		}
		if !s.toInbox {
			s.results = append(s.results, ev)
			s.unstored[t.ID] = ev
			select {
			case s.wake <- struct{}{}:
			default:
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if err := s.storeResult(ctx, ev); err != nil && ctx.Err() == nil {
			g.log.Warn("an activity's result could not be stored", g.logArgs("task_id", t.ID, "activity", t.Name, "error", err)...)
		}
	})
}

// resultEvent is the history event of a task's result: TaskCompleted, or
// TaskFailed with failure; a result that cannot be stored (not JSON, over
// the payload limit) is a failure that says why.
func (s *stepRun) resultEvent(t ScheduleTask, result json.RawMessage, failure *FailureDetails) HistoryEvent {
	ev := HistoryEvent{EventType: EventTaskCompleted, TaskID: t.ID, ExecutionID: s.g.rec.ExecutionID, Timestamp: now()}
	if failure == nil {
		r, err := s.g.exec.c.checkJSON("task result", result)
		if err == nil {
			ev.Result = r
			return ev
		}
		failure = DetailsOf(fmt.Errorf("the result of activity %q could not be stored: %w", t.Name, err))
	}
	ev.EventType, ev.FailureDetails, ev.Failure = EventTaskFailed, failure, failure.ErrorMessage
	return ev
}

// stored forgets the results a committed step held.
func (s *stepRun) stored(evs []HistoryEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		if ev.EventType == EventTaskCompleted || ev.EventType == EventTaskFailed {
			delete(s.unstored, ev.TaskID)
		}
	}
}

// storeResult puts a task's result in the instance's inbox
// (Client.CompleteTask), retrying transient errors until ctx ends.
func (s *stepRun) storeResult(ctx context.Context, ev HistoryEvent) error {
	g := s.g
	return RetryUnavailable(ctx, func() error {
		return g.exec.c.CompleteTask(ctx, g.rec.InstanceID, g.rec.ExecutionID, ev.TaskID, ev.Result, ev.FailureDetails)
	})
}

// checkpoint stores the results the run holds and has not committed in the
// instance's inbox, and sends every later result there too: a holder about
// to stop (a drain) leaves the next holder nothing to run again but the
// activities running at the stop. A result both committed by a step and
// stored is taken once (the inbox entry of a finished task is ignored).
func (s *stepRun) checkpoint(ctx context.Context) error {
	if err := s.g.Flush(); err != nil { // the deferred steps first: they schedule the tasks
		return err
	}
	s.mu.Lock()
	s.toInbox = true
	evs := make([]HistoryEvent, 0, len(s.unstored))
	for _, ev := range s.unstored {
		evs = append(evs, ev)
	}
	s.mu.Unlock()
	slices.SortFunc(evs, func(a, b HistoryEvent) int { return a.TaskID - b.TaskID })
	for _, ev := range evs {
		if err := s.storeResult(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// firstTimer is when the first pending timer fires; zero if none.
func (g *Engine) firstTimer() time.Time {
	st := g.step
	st.mu.Lock()
	defer st.mu.Unlock()
	var at time.Time
	for _, t := range st.timers {
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at
}
