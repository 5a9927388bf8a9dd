package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"
)

// ErrEventTimeout is what Await returns for WaitForExternalEvent when its
// timeout fired before the event arrived.
var ErrEventTimeout = errors.New("orchestrator: timed out waiting for the external event")

// TaskFailedError is what Await returns for an activity or a
// sub-orchestration that failed (after its retries). errors.As on it, or
// through it on an *ApplicationError, tells failures apart.
type TaskFailedError struct {
	// Kind is "activity" or "sub-orchestration".
	Kind string
	// Name is the activity's or sub-orchestration's name.
	Name string
	// InstanceID is a sub-orchestration's instance ID.
	InstanceID string
	Message    string
	// NonRetriable is set when retrying cannot help (no such activity, a
	// result that cannot be stored).
	NonRetriable bool
	// Attempts is how many attempts were made, when a retry policy ran.
	Attempts int
	// Details describe the failure (of the last attempt).
	Details *FailureDetails
}

// Unwrap returns the failure's details, so that errors.As finds an
// *ApplicationError's type through them and errors.Is works on them.
func (e *TaskFailedError) Unwrap() error {
	if e.Details == nil {
		return nil
	}
	return e.Details
}

func (e *TaskFailedError) Error() string {
	what := e.Kind
	if what == "" {
		what = "activity"
	}
	name := e.Name
	if e.InstanceID != "" {
		name = fmt.Sprintf("%s (instance '%s')", e.Name, e.InstanceID)
	}
	if e.Attempts > 1 {
		return fmt.Sprintf("%s %s failed after %d attempts: %s", what, name, e.Attempts, e.Message)
	}
	return fmt.Sprintf("%s %s failed: %s", what, name, e.Message)
}

type taskKind int

const (
	kindActivity taskKind = iota
	kindTimer
	kindEvent
	kindRetry // an activity or sub-orchestration with a retry policy: attempts and timers in history
	kindSub   // a sub-orchestration
)

func (k taskKind) String() string {
	switch k {
	case kindActivity, kindRetry:
		return "activity"
	case kindTimer:
		return "timer"
	case kindSub:
		return "sub-orchestration"
	}
	return "event"
}

// Task is the pending result of an activity, a durable timer or an external
// event. Tasks belong to their orchestration's goroutine: await them there.
type Task struct {
	e      *executor
	id     int // history task ID; -1 for event waits and retried activities
	kind   taskKind
	name   string
	input  json.RawMessage
	fireAt time.Time
	retry  *RetryPolicy

	done    bool
	result  json.RawMessage
	err     error
	onDone  []func()
	started bool        // its work (activity call or timer) runs on this holder
	timer   *time.Timer // a live durable timer
	attempt int         // the attempt this activity task is, from 1
	sub     *subCall    // a sub-orchestration's start
	durable bool        // an attempt of a retry policy: never batched
	batched bool        // a local activity started before its schedule was committed, not finished
	childOK atomic.Bool // a sub-orchestration's start succeeded (or found it started)
}

// action is the task's scheduling, as the engine takes it.
func (t *Task) action() Action {
	switch t.kind {
	case kindTimer:
		return CreateTimer{ID: t.id, FireAt: t.fireAt}
	case kindSub:
		return CreateSubOrchestration{ID: t.id, Name: t.name, InstanceID: t.sub.id, Version: t.sub.version, Input: t.input}
	}
	return ScheduleTask{ID: t.id, Name: t.name, Input: t.input}
}

// scheduled is the event type that schedules the task.
func (t *Task) scheduled() EventType {
	switch t.kind {
	case kindTimer:
		return EventTimerCreated
	case kindSub:
		return EventSubOrchestrationInstanceCreated
	case kindActivity:
		return EventTaskScheduled
	}
	return ""
}

// Done reports whether the task has finished.
func (t *Task) Done() bool { return t.done }

// Await blocks the orchestration until the task finishes, then stores its
// result in v (if v is not nil) and returns its error: *TaskFailedError for
// a failed activity, ErrEventTimeout for an event that did not come in time.
func (t *Task) Await(v any) error {
	t.e.waitFor(t)
	if t.err != nil {
		return t.err
	}
	if v != nil && len(t.result) > 0 {
		if err := json.Unmarshal(t.result, v); err != nil {
			return fmt.Errorf("orchestrator: the result of %s %q is %s, which does not fit the %s it is read into",
				t.kind, t.name, jsonKind(t.result), goKind(v))
		}
	}
	return nil
}

func (t *Task) complete(result json.RawMessage, err error) {
	if t.done {
		return
	}
	t.done, t.result, t.err = true, result, err
	for _, f := range t.onDone {
		f()
	}
}

// RetryPolicy retries a failed activity. With CallActivity the retries are
// durable: each attempt is a task of its own in the history and each wait
// a durable timer, so after a takeover the attempts go on where they were
// (never more than MaxAttempts in all) and the waits keep their end.
type RetryPolicy struct {
	// MaxAttempts counts the first call; at least 1.
	MaxAttempts int
	// FirstInterval is the wait before the second attempt. Defaults to 1s.
	FirstInterval time.Duration
	// BackoffCoefficient multiplies the wait after each attempt. Defaults to 2.
	BackoffCoefficient float64
	// MaxInterval caps the wait. Defaults to 1 minute.
	MaxInterval time.Duration
	// RetryTimeout, if set, bounds the time from the first attempt's
	// schedule (Do: its start) within which another attempt may start.
	RetryTimeout time.Duration
	// Handle, if set, says which failures to retry (it gets the attempt's
	// *TaskFailedError; in Do, the error the attempt returned); others
	// fail the task at once. It must be deterministic.
	Handle func(error) bool
}

// Do calls try until it succeeds, fails with an error for which final
// returns true (final may be nil) or Handle returns false (Handle may be
// nil; it gets the attempt's error as try returned it), MaxAttempts (at
// least 1) are used up, or the next attempt would start more than
// RetryTimeout (if set) after the first one started. It waits
// FirstInterval (none if 0) before the second attempt, multiplies the wait
// by BackoffCoefficient (at least 1) after each attempt and caps it at
// MaxInterval (if set). When ctx ends it stops and returns
// context.Cause(ctx). onRetry, if set, hears of each retry before its wait.
// Do uses p as it is, in memory (exec and HTTP functions retry with it);
// CallActivity's retries are durable instead, with the same rules.
func (p RetryPolicy) Do(ctx context.Context, try func() error, final func(error) bool,
	onRetry func(attempt int, err error, wait time.Duration)) error {
	attempts := max(p.MaxAttempts, 1)
	wait := p.FirstInterval
	began := time.Now()
	for attempt := 1; ; attempt++ {
		err := try()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case (final != nil && final(err)) || (p.Handle != nil && !p.Handle(err)):
			if attempt > 1 {
				return fmt.Errorf("attempt %d of %d failed and is not retried: %w", attempt, attempts, err)
			}
			return err
		case attempt >= attempts:
			if attempts > 1 {
				return fmt.Errorf("all %d attempts failed, the last: %w", attempts, err)
			}
			return err
		case p.RetryTimeout > 0 && time.Since(began)+wait > p.RetryTimeout:
			return fmt.Errorf("attempt %d of %d failed and the retry timeout of %s leaves no room for another: %w",
				attempt, attempts, p.RetryTimeout, err)
		}
		if onRetry != nil {
			onRetry(attempt, err, wait)
		}
		if wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		wait = p.next(wait)
	}
}

func (p RetryPolicy) next(wait time.Duration) time.Duration {
	wait = time.Duration(float64(wait) * max(p.BackoffCoefficient, 1))
	if p.MaxInterval > 0 {
		wait = min(wait, p.MaxInterval)
	}
	return wait
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

// ActivityOption configures CallActivity.
type ActivityOption func(*Task)

// WithRetry retries the activity per p, durably.
func WithRetry(p RetryPolicy) ActivityOption {
	return func(t *Task) { t.retry = &p }
}

// retried runs the attempts of a retried activity: outer completes with the
// first attempt that succeeds, or the last failure. Every attempt and wait
// is a task of the history, issued from the completion of the one before,
// so replay rebuilds the same sequence.
func (e *executor) retried(outer *Task, p RetryPolicy) {
	p = p.withDefaults()
	began := e.now
	wait := p.FirstInterval
	var attempt func(n int)
	attempt = func(n int) {
		kind := kindActivity
		if outer.sub != nil {
			kind = kindSub
		}
		t := e.newTask(kind, outer.name)
		t.input, t.attempt, t.durable = outer.input, n, true
		if outer.sub != nil {
			sc := *outer.sub
			t.sub = &sc
			t.sub.id = e.childID(t)
		}
		t.onDone = append(t.onDone, func() {
			var fe *TaskFailedError
			if t.err == nil || !errors.As(t.err, &fe) {
				outer.complete(t.result, t.err)
				e.wake()
				return
			}
			retry := n < p.MaxAttempts && !fe.NonRetriable && (p.Handle == nil || p.Handle(fe)) &&
				(p.RetryTimeout <= 0 || e.now.Add(wait).Sub(began) <= p.RetryTimeout)
			if !retry {
				f := *fe
				f.Attempts = n
				outer.complete(nil, &f)
				e.wake()
				return
			}
			timer := e.newTask(kindTimer, "")
			timer.fireAt = e.now.Add(wait)
			wait = p.next(wait)
			timer.onDone = append(timer.onDone, func() { attempt(n + 1) })
		})
	}
	attempt(1)
}

// jsonKind names the kind of a JSON value for a message.
func jsonKind(b json.RawMessage) string {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return "a JSON object"
		case '[':
			return "a JSON array"
		case '"':
			return "a JSON string"
		case 't', 'f':
			return "a JSON boolean"
		case 'n':
			return "JSON null"
		}
		return "a JSON number"
	}
	return "empty"
}

// goKind names the JSON shape a Go value v decodes from, without Go's type
// syntax.
func goKind(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "value"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "JSON object"
	case reflect.Slice, reflect.Array:
		return "JSON array"
	case reflect.String:
		return "JSON string"
	case reflect.Bool:
		return "JSON boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "JSON number"
	}
	return "value"
}
