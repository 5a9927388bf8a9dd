package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

func historyTypes(t *testing.T, v *env, id, exec string) []orchestrator.EventType {
	t.Helper()
	h, err := v.c.History(ctxT(t), id, exec)
	if err != nil {
		t.Fatalf("history of %s is not well formed: %v", id, err)
	}
	var out []orchestrator.EventType
	for _, ev := range h {
		out = append(out, ev.EventType)
	}
	return out
}

// TestStaleHolderHistoryAppendFenced: a holder that lost its owners key
// while an activity ran cannot append the completion; the history stays
// well formed, and the next holder appends after it.
func TestStaleHolderHistoryAppendFenced(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	gate := make(chan struct{})
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Gate", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
		select {
		case <-gate:
			return "done", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}))
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallActivity("Gate", nil).Await(&s)
		return s, err
	})
	x, h := v.running(t, "stale", "null")
	st := x.Status()
	errc := make(chan error, 1)
	go func() { errc <- reg.Run(ctxT(t), x) }()
	eventually(t, 10*time.Second, "activity scheduled", func() bool {
		return len(historyTypes(t, v, "stale", st.ExecutionID)) == 2
	})
	if _, err := v.raw.Delete(ctxT(t), v.keys.Owner("stale")); err != nil {
		t.Fatal(err)
	}
	close(gate)
	select {
	case err := <-errc:
		if !errors.Is(err, orchestrator.ErrFenced) {
			t.Fatalf("stale holder's run returned %v, want ErrFenced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stale holder's run did not end")
	}
	if h.rejects.Load() == 0 {
		t.Fatal("the fence's OnReject was not called")
	}
	got := historyTypes(t, v, "stale", st.ExecutionID)
	if len(got) != 2 || got[1] != orchestrator.EventTaskScheduled {
		t.Fatalf("history after the fenced append: %v", got)
	}
	// The next holder replays and appends after the same history.
	h2 := v.hold(t, "stale", st.ExecutionID)
	if h2.fence.Token <= h.fence.Token {
		t.Fatalf("token did not grow: %d -> %d", h.fence.Token, h2.fence.Token)
	}
	x2, err := v.c.Open(ctxT(t), "stale", st.ExecutionID, h2.fence)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Run(ctxT(t), x2); err != nil {
		t.Fatal(err)
	}
	want := []orchestrator.EventType{orchestrator.EventExecutionStarted, orchestrator.EventTaskScheduled,
		orchestrator.EventTaskCompleted, orchestrator.EventExecutionCompleted}
	if got := historyTypes(t, v, "stale", st.ExecutionID); len(got) != len(want) || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("history %v, want %v", got, want)
	}
	if rec := v.decode(t, "stale"); rec.RuntimeStatus != orchestrator.StatusCompleted || rec.FencingToken != h2.fence.Token {
		t.Fatalf("record %s by token %d", rec.RuntimeStatus, rec.FencingToken)
	}
}

// TestHistoryLimitFailsCleanly: an execution whose history would pass the
// limit fails with a message that says to use ContinueAsNew.
func TestHistoryLimitFailsCleanly(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Noop", orchestrator.Activity(func(ctx context.Context, _ any) (any, error) { return nil, nil }))
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var tasks []*orchestrator.Task
		for i := 0; i < orchestrator.MaxHistoryEvents; i++ {
			tasks = append(tasks, ctx.CallActivity("Noop", nil))
		}
		return nil, ctx.WhenAll(tasks...)
	})
	x, _ := v.running(t, "big", "null")
	if err := reg.Run(ctxT(t), x); err != nil {
		t.Fatal(err)
	}
	rec := v.decode(t, "big")
	var msg string
	_ = json.Unmarshal(rec.Output, &msg)
	if rec.RuntimeStatus != orchestrator.StatusFailed || !strings.Contains(msg, "ContinueAsNew") {
		t.Fatalf("status %s, output %s", rec.RuntimeStatus, rec.Output)
	}
	if _, err := v.c.History(ctxT(t), "big", ""); err != nil {
		t.Fatalf("history not well formed: %v", err)
	}
}

// TestContinueAsNewCarriesEvents: events raised and not consumed by one
// generation are delivered to the next.
func TestContinueAsNewCarriesEvents(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var gen int
		_ = ctx.GetInput(&gen)
		var s string
		if gen == 0 {
			if err := ctx.WaitForExternalEvent("a", 0).Await(&s); err != nil {
				return nil, err
			}
			if err := ctx.CreateTimer(50 * time.Millisecond).Await(nil); err != nil {
				return nil, err
			}
			ctx.ContinueAsNew(1)
			return nil, nil
		}
		err := ctx.WaitForExternalEvent("b", 0).Await(&s)
		return s, err
	})
	x, _ := v.running(t, "can", "0")
	first := x.Status().ExecutionID
	for _, ev := range []struct{ name, data string }{{"b", `"kept"`}, {"a", `"used"`}} {
		if err := v.c.RaiseEvent(ctxT(t), "can", ev.name, json.RawMessage(ev.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Run(ctxT(t), x); err != nil {
		t.Fatal(err)
	}
	rec := v.decode(t, "can")
	if rec.RuntimeStatus != orchestrator.StatusContinuedAsNew || rec.ExecutionID == first || string(rec.Input) != "1" {
		t.Fatalf("after ContinueAsNew: %s exec %s input %s output %s", rec.RuntimeStatus, rec.ExecutionID, rec.Input, rec.Output)
	}
	if got := historyTypes(t, v, "can", first); len(got) != 0 {
		t.Fatalf("old generation's history kept: %v", got)
	}
	h := v.hold(t, "can", rec.ExecutionID)
	x2, err := v.c.Open(ctxT(t), "can", rec.ExecutionID, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Run(ctxT(t), x2); err != nil {
		t.Fatal(err)
	}
	if rec := v.decode(t, "can"); rec.RuntimeStatus != orchestrator.StatusCompleted || string(rec.Output) != `"kept"` {
		t.Fatalf("second generation: %s %s", rec.RuntimeStatus, rec.Output)
	}
}

// TestActivityRunsOnlyAfterItsScheduleCommits: after a replay, an activity
// the code schedules past the end of the history does not run if its
// schedule cannot be committed (here: the holder was fenced out) - when
// batching is off. With batching on (the default) a local activity may run
// before its schedule commits, as the doc says, but nothing of the step is
// written: the history is what it was.
func TestActivityRunsOnlyAfterItsScheduleCommits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		budget time.Duration
		maxB   int32
	}{{"unbatched", 0, 0}, {"batched", time.Second, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			var ranB atomic.Int32
			reg := orchestrator.NewRegistry()
			_ = reg.AddActivity("A", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) { return "a", nil }))
			_ = reg.AddActivity("B", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
				ranB.Add(1)
				return "b", nil
			}))
			_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
				if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
					return nil, err
				}
				return nil, ctx.CallActivity("B", nil).Await(nil)
			})
			x, _ := v.running(t, "order", "null")
			st := x.Status()
			ts := time.Now().UTC()
			hist, _ := json.Marshal([]orchestrator.HistoryEvent{
				{Seq: 0, EventType: orchestrator.EventExecutionStarted, Timestamp: ts, Name: "fn", Input: json.RawMessage("null")},
				{Seq: 1, EventType: orchestrator.EventTaskScheduled, Timestamp: ts, TaskID: 0, Name: "A", Input: json.RawMessage("null")},
				{Seq: 2, EventType: orchestrator.EventTaskCompleted, Timestamp: ts, TaskID: 0, Name: "A", Result: json.RawMessage(`"a"`)},
			})
			if _, err := v.raw.Put(ctxT(t), v.keys.History("order", st.ExecutionID)+"0000000000", string(hist)); err != nil {
				t.Fatal(err)
			}
			if _, err := v.raw.Delete(ctxT(t), v.keys.Owner("order")); err != nil {
				t.Fatal(err)
			}
			done := make(chan orchestrator.Outcome, 1)
			if _, err := reg.Drive(ctxT(t), x, orchestrator.RunOptions{WatchInbox: true, BatchBudget: tc.budget,
				OnEnd: func(o orchestrator.Outcome) { done <- o }}); err != nil {
				t.Fatal(err)
			}
			if out := <-done; !errors.Is(out.Err, orchestrator.ErrFenced) {
				t.Fatalf("run ended with %+v, want ErrFenced", out)
			}
			if n := ranB.Load(); n > tc.maxB {
				t.Fatalf("activity B ran %d times, at most %d allowed", n, tc.maxB)
			}
			if got := historyTypes(t, v, "order", st.ExecutionID); len(got) != 3 {
				t.Fatalf("history after the fenced run: %v, want the 3 events written before", got)
			}
		})
	}
}

// TestRetryPolicyDo: attempts, final errors, backoff growth and cancellation.
func TestRetryPolicyDo(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var waits []time.Duration
	calls := 0
	p := orchestrator.RetryPolicy{MaxAttempts: 4, FirstInterval: time.Millisecond, BackoffCoefficient: 3, MaxInterval: 5 * time.Millisecond}
	err := p.Do(context.Background(), func() error { calls++; return boom }, nil,
		func(_ int, _ error, w time.Duration) { waits = append(waits, w) })
	if calls != 4 || !errors.Is(err, boom) || !strings.Contains(err.Error(), "all 4 attempts failed") {
		t.Fatalf("calls %d, err %v", calls, err)
	}
	if want := []time.Duration{time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond}; fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	calls = 0
	err = p.Do(context.Background(), func() error { calls++; return boom }, func(error) bool { return calls == 2 }, nil)
	if calls != 2 || !strings.Contains(err.Error(), "attempt 2 of 4 failed and is not retried") {
		t.Fatalf("final: calls %d, err %v", calls, err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	calls = 0
	err = orchestrator.RetryPolicy{MaxAttempts: 100, FirstInterval: time.Hour}.Do(ctx, func() error {
		calls++
		cancel(errors.New("stopped"))
		return boom
	}, nil, nil)
	if calls != 1 || err == nil || err.Error() != "stopped" {
		t.Fatalf("cancel: calls %d, err %v", calls, err)
	}

	// Handle: a failure it refuses is not retried; the error is the
	// attempt's own.
	transient := errors.New("transient")
	calls = 0
	p = orchestrator.RetryPolicy{MaxAttempts: 10, FirstInterval: time.Millisecond, Handle: func(err error) bool { return errors.Is(err, transient) }}
	err = p.Do(context.Background(), func() error {
		if calls++; calls < 3 {
			return transient
		}
		return boom
	}, nil, nil)
	if calls != 3 || !errors.Is(err, boom) || !strings.Contains(err.Error(), "attempt 3 of 10 failed and is not retried") {
		t.Fatalf("Handle: calls %d, err %v", calls, err)
	}
	calls = 0
	if err = p.Do(context.Background(), func() error { calls++; return boom }, nil, nil); calls != 1 || err != boom {
		t.Fatalf("Handle refusing the first failure: calls %d, err %v", calls, err)
	}

	// RetryTimeout: no attempt starts later than 1s after the first began;
	// with 300ms between attempts that is at most 4 attempts of 100.
	calls = 0
	began := time.Now()
	var starts []time.Duration
	p = orchestrator.RetryPolicy{MaxAttempts: 100, FirstInterval: 300 * time.Millisecond, BackoffCoefficient: 1, RetryTimeout: time.Second}
	err = p.Do(context.Background(), func() error {
		starts = append(starts, time.Since(began))
		calls++
		return boom
	}, nil, nil)
	if calls < 2 || calls > 4 || !errors.Is(err, boom) || !strings.Contains(err.Error(), "retry timeout of 1s") {
		t.Fatalf("RetryTimeout: calls %d, err %v", calls, err)
	}
	if last := starts[len(starts)-1]; last > time.Second {
		t.Fatalf("an attempt started %v after the first, past the retry timeout (starts %v)", last, starts)
	}
}

// TestActivityRetry: an activity with WithRetry is called again until it
// succeeds; without enough attempts the task fails with every attempt used.
func TestActivityRetry(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var calls atomic.Int32
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Flaky", orchestrator.Activity(func(ctx context.Context, okAt int32) (int32, error) {
		n := calls.Add(1)
		if n < okAt {
			return 0, fmt.Errorf("attempt %d fails", n)
		}
		return n, nil
	}))
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var okAt int32
		_ = ctx.GetInput(&okAt)
		var n int32
		err := ctx.CallActivity("Flaky", okAt, orchestrator.WithRetry(orchestrator.RetryPolicy{
			MaxAttempts: 3, FirstInterval: time.Millisecond})).Await(&n)
		return n, err
	})
	x, _ := v.running(t, "retry-ok", "3")
	if err := reg.Run(ctxT(t), x); err != nil {
		t.Fatal(err)
	}
	if rec := v.decode(t, "retry-ok"); rec.RuntimeStatus != orchestrator.StatusCompleted || string(rec.Output) != "3" {
		t.Fatalf("%s %s", rec.RuntimeStatus, rec.Output)
	}
	calls.Store(0)
	x, _ = v.running(t, "retry-fail", "4")
	if err := reg.Run(ctxT(t), x); err != nil {
		t.Fatal(err)
	}
	rec := v.decode(t, "retry-fail")
	if rec.RuntimeStatus != orchestrator.StatusFailed || !strings.Contains(string(rec.Output), "failed after 3 attempts") || calls.Load() != 3 {
		t.Fatalf("%s %s after %d calls", rec.RuntimeStatus, rec.Output, calls.Load())
	}
}
