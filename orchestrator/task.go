package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrEventTimeout is what Await returns for WaitForExternalEvent when its
// timeout fired before the event arrived.
var ErrEventTimeout = errors.New("orchestrator: timed out waiting for the external event")

// TaskFailedError is what Await returns for an activity that failed (after
// its retries).
type TaskFailedError struct {
	Name    string
	Message string
}

func (e *TaskFailedError) Error() string {
	return fmt.Sprintf("activity %s failed: %s", e.Name, e.Message)
}

type taskKind int

const (
	kindActivity taskKind = iota
	kindTimer
	kindEvent
)

func (k taskKind) String() string {
	switch k {
	case kindActivity:
		return "activity"
	case kindTimer:
		return "timer"
	}
	return "event"
}

// Task is the pending result of an activity, a durable timer or an external
// event. Tasks belong to their orchestration's goroutine: await them there.
type Task struct {
	e      *executor
	id     int // history task ID; -1 for event waits
	kind   taskKind
	name   string
	input  json.RawMessage
	fireAt time.Time
	retry  *RetryPolicy

	done    bool
	result  json.RawMessage
	err     error
	onDone  []func()
	started bool // its work (activity call or timer) runs on this holder
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
			return fmt.Errorf("orchestrator: result of %s %q does not fit %T: %w", t.kind, t.name, v, err)
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

// RetryPolicy retries a failed activity on the holder that runs it. Retries
// start over after a takeover.
type RetryPolicy struct {
	// MaxAttempts counts the first call; at least 1.
	MaxAttempts int
	// FirstInterval is the wait before the second attempt. Defaults to 1s.
	FirstInterval time.Duration
	// BackoffCoefficient multiplies the wait after each attempt. Defaults to 2.
	BackoffCoefficient float64
	// MaxInterval caps the wait. Defaults to 1 minute.
	MaxInterval time.Duration
}

// Do calls try until it succeeds, fails with an error for which final
// returns true (final may be nil), or MaxAttempts (at least 1) are used up.
// It waits FirstInterval (none if 0) before the second attempt, multiplies
// the wait by BackoffCoefficient (at least 1) after each attempt and caps it
// at MaxInterval (if set). When ctx ends it stops and returns
// context.Cause(ctx). onRetry, if set, hears of each retry before its wait.
// Do uses p as it is; CallActivity fills in the defaults documented above.
// Exec and HTTP functions retry with it too.
func (p RetryPolicy) Do(ctx context.Context, try func() error, final func(error) bool,
	onRetry func(attempt int, err error, wait time.Duration)) error {
	attempts := max(p.MaxAttempts, 1)
	wait := p.FirstInterval
	for attempt := 1; ; attempt++ {
		err := try()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case final != nil && final(err):
			if attempt > 1 {
				return fmt.Errorf("attempt %d of %d failed and is not retried: %w", attempt, attempts, err)
			}
			return err
		case attempt >= attempts:
			if attempts > 1 {
				return fmt.Errorf("all %d attempts failed, the last: %w", attempts, err)
			}
			return err
		}
		if onRetry != nil {
			onRetry(attempt, err, wait)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			case <-t.C:
			}
		}
		wait = time.Duration(float64(wait) * max(p.BackoffCoefficient, 1))
		if p.MaxInterval > 0 {
			wait = min(wait, p.MaxInterval)
		}
	}
}

// ActivityOption configures CallActivity.
type ActivityOption func(*Task)

// WithRetry retries the activity per p.
func WithRetry(p RetryPolicy) ActivityOption {
	return func(t *Task) { t.retry = &p }
}
