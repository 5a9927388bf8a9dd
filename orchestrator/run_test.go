package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Run marks the record Running, calls the function with what it needs, and
// writes Completed with the marshalled output.
func TestRunCompletes(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	r := v.start(t, "run-ok", `{"name":"world"}`)
	h := v.hold(t, "run-ok", r.Status.ExecutionID)
	x, err := v.c.Open(ctxT(t), "run-ok", r.Status.ExecutionID, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	type in struct{ Name string }
	err = orchestrator.Run(ctxT(t), x, func(ctx *orchestrator.OrchestrationContext) (any, error) {
		// Code that runs without waiting has its record marked Running
		// within moments, not only at its first step.
		deadline := time.Now().Add(2 * time.Second)
		for v.decode(t, "run-ok").RuntimeStatus != orchestrator.StatusRunning {
			if time.Now().After(deadline) {
				return nil, errors.New("record not Running while the function runs: " + string(v.decode(t, "run-ok").RuntimeStatus))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if ctx.InstanceID() != "run-ok" || ctx.Name() != "fn" || ctx.ExecutionID() != r.Status.ExecutionID || ctx.FencingToken() != h.fence.Token {
			return nil, errors.New("wrong identity")
		}
		if !jsonEqual(t, ctx.RawInput(), `{"name":"world"}`) {
			return nil, errors.New("wrong raw input")
		}
		var i in
		if err := ctx.GetInput(&i); err != nil || i.Name != "world" {
			return nil, errors.New("GetInput")
		}
		var wrong []int
		if err := ctx.GetInput(&wrong); err == nil {
			return nil, errors.New("GetInput into a wrong type succeeded")
		}
		if err := ctx.SetCustomStatus(map[string]int{"progress": 50}); err != nil {
			return nil, err
		}
		if st := v.decode(t, "run-ok"); !jsonEqual(t, st.CustomStatus, `{"progress":50}`) {
			return nil, errors.New("custom status not visible while running")
		}
		return map[string]string{"greeting": "hello " + i.Name}, nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := v.decode(t, "run-ok")
	if st.RuntimeStatus != orchestrator.StatusCompleted || !jsonEqual(t, st.Output, `{"greeting":"hello world"}`) || !jsonEqual(t, st.CustomStatus, `{"progress":50}`) {
		t.Fatalf("record after Run: %+v (output %s)", st, st.Output)
	}
	if o := v.get(t, v.keys.Owner("run-ok")); o != nil {
		t.Fatalf("owners key left after Run: %v", o)
	}
}

// A function error or panic fails the instance with the message as output;
// an output that cannot be stored fails it too.
func TestRunFails(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	big := strings.Repeat("x", orchestrator.DefaultMaxPayload)
	for _, c := range []struct {
		name string
		fn   orchestrator.OrchestratorFunc
		want []string // substrings of the output message
	}{
		{"error", func(*orchestrator.OrchestrationContext) (any, error) {
			return "ignored", errors.New("upstream said 503")
		}, []string{"upstream said 503"}},
		{"panic", func(*orchestrator.OrchestrationContext) (any, error) {
			panic("nil map write")
		}, []string{"orchestration panicked", "nil map write"}},
		{"panic with error", func(*orchestrator.OrchestrationContext) (any, error) {
			var m map[string]int
			m["x"] = 1
			return nil, nil
		}, []string{"orchestration panicked", "assignment to entry in nil map"}},
		{"output too large", func(*orchestrator.OrchestrationContext) (any, error) {
			return big, nil
		}, []string{"output", "too large"}},
		{"output not marshallable", func(*orchestrator.OrchestrationContext) (any, error) {
			return make(chan int), nil
		}, []string{"output", "chan"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			id := "fail-" + strings.ReplaceAll(c.name, " ", "-")
			x, h := v.running(t, id, `1`)
			if err := orchestrator.Run(ctxT(t), x, c.fn); err != nil {
				t.Fatalf("Run: %v (a failed instance is a successful Run)", err)
			}
			st := v.decode(t, id)
			var msg string
			if st.RuntimeStatus != orchestrator.StatusFailed || json.Unmarshal(st.Output, &msg) != nil {
				t.Fatalf("record: %s output %s, want Failed with a message", st.RuntimeStatus, st.Output)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("failure message %q does not contain %q", msg, w)
				}
			}
			if len(st.Output) > orchestrator.DefaultMaxPayload {
				t.Fatalf("failure output is %d bytes", len(st.Output))
			}
			if o := v.get(t, v.keys.Owner(id)); o != nil || h.rejects.Load() != 0 {
				t.Fatalf("owners key %v, rejects %d", o, h.rejects.Load())
			}
		})
	}
}

// When the run's context ends (lost holding, drain), Run writes nothing and
// returns the cause: the instance stays Running and held for the next try.
func TestRunCancelled(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "cancel", `1`)
	before := v.record(t, "cancel")
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("node draining")
	entered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- orchestrator.Run(ctx, x, func(c *orchestrator.OrchestrationContext) (any, error) {
			close(entered)
			<-c.Context().Done()
			return "partial", nil // a result after cancellation is discarded
		})
	}()
	<-entered
	cancel(stop)
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("Run: %v, want the cancel cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if after := v.record(t, "cancel"); after.String() != before.String() {
		t.Fatalf("cancelled Run wrote: %v -> %v", before, after)
	}
	if o := v.get(t, v.keys.Owner("cancel")); o == nil {
		t.Fatal("cancelled Run deleted the owners key")
	}
}

// A holder fenced out during the run gets ErrFenced from Run and leaves the
// record alone; SetCustomStatus after losing reports ErrFenced even though
// the run's context is already cancelled.
func TestRunFencedMidway(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, h := v.running(t, "midway", `1`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var setErr error
	err := orchestrator.Run(ctx, x, func(c *orchestrator.OrchestrationContext) (any, error) {
		if _, err := v.raw.Delete(ctxT(t), v.keys.Owner("midway")); err != nil {
			return nil, err
		}
		cancel() // the node noticed the loss; the write is attempted anyway
		setErr = c.SetCustomStatus("late")
		return "x", nil
	})
	if !errors.Is(setErr, orchestrator.ErrFenced) {
		t.Fatalf("SetCustomStatus after the loss: %v, want ErrFenced", setErr)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	st := v.decode(t, "midway")
	if st.RuntimeStatus != orchestrator.StatusRunning || string(st.CustomStatus) != "null" {
		t.Fatalf("record: %+v", st)
	}
	if h.rejects.Load() != 1 {
		t.Fatalf("OnReject called %d times, want 1", h.rejects.Load())
	}

	// Without cancellation, Run's own final write is fenced.
	x2, h2 := v.running(t, "midway-2", `1`)
	err = orchestrator.Run(ctxT(t), x2, func(c *orchestrator.OrchestrationContext) (any, error) {
		_, err := v.raw.Revoke(ctxT(t), h2.leaseID)
		return "x", err
	})
	if !errors.Is(err, orchestrator.ErrFenced) {
		t.Fatalf("Run after the lease was revoked: %v, want ErrFenced", err)
	}
	if st := v.decode(t, "midway-2"); st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("fenced Run wrote %s", st.RuntimeStatus)
	}
}

// SetCustomStatus checks the payload limit and JSON before writing.
func TestSetCustomStatusLimits(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.c = orchestrator.NewClient(v.cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), MaxPayload: 64, Logger: quiet})
	x, _ := v.running(t, "cs", `1`)
	var tooLarge, bad, ok error
	err := orchestrator.Run(ctxT(t), x, func(c *orchestrator.OrchestrationContext) (any, error) {
		tooLarge = c.SetCustomStatus(strings.Repeat("y", 100))
		bad = c.SetCustomStatus(func() {})
		if st := v.decode(t, "cs"); string(st.CustomStatus) != "null" {
			return nil, errors.New("refused custom status stored: " + string(st.CustomStatus))
		}
		ok = c.SetCustomStatus(strings.Repeat("y", 62)) // 64 bytes with quotes
		return nil, errors.New("stop")
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(tooLarge, orchestrator.ErrPayloadTooLarge) {
		t.Fatalf("oversized custom status: %v", tooLarge)
	}
	if bad == nil {
		t.Fatal("unmarshallable custom status accepted")
	}
	if ok != nil {
		t.Fatalf("custom status of exactly the limit: %v", ok)
	}
	if st := v.decode(t, "cs"); len(st.CustomStatus) != 64 || st.RuntimeStatus != orchestrator.StatusFailed {
		t.Fatalf("record: %s custom status %s", st.RuntimeStatus, st.CustomStatus)
	}
}

// Run on an execution already Running (a new holder taking over) does not
// rewrite the status before calling the function.
func TestRunOnRunningRecord(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x1, h1 := v.running(t, "again", `1`)
	if _, err := v.raw.Revoke(ctxT(t), h1.leaseID); err != nil {
		t.Fatal(err)
	}
	h2 := v.hold(t, "again", x1.Status().ExecutionID)
	x2, err := v.c.Open(ctxT(t), "again", x1.Status().ExecutionID, h2.fence)
	if err != nil {
		t.Fatal(err)
	}
	before := v.record(t, "again")
	err = orchestrator.Run(ctxT(t), x2, func(c *orchestrator.OrchestrationContext) (any, error) {
		if after := v.record(t, "again"); after.String() != before.String() {
			return nil, errors.New("record rewritten before the function ran")
		}
		if c.FencingToken() != h2.fence.Token {
			return nil, errors.New("old token")
		}
		return 7, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := v.decode(t, "again"); st.RuntimeStatus != orchestrator.StatusCompleted || string(st.Output) != "7" || st.FencingToken != h2.fence.Token {
		t.Fatalf("record: %+v", st)
	}
}

// Run's final write survives a lost reply: the commit landed, Run retries
// and finds its own write, and reports success.
func TestRunUnknownOutcome(t *testing.T) {
	t.Parallel()
	v, proxy := proxiedEnv(t)
	x, h := v.running(t, "run-lost", `1`)
	done := make(chan error, 1)
	go func() {
		done <- orchestrator.Run(ctxT(t), x, func(*orchestrator.OrchestrationContext) (any, error) {
			// From here every reply comes 3s late; the test cuts the
			// connections as soon as the final write has committed, so
			// its reply never arrives.
			proxy.DelayRx(3 * time.Second)
			return "result", nil
		})
	}()
	eventually(t, 5*time.Second, "the final write landed", func() bool {
		return v.decode(t, "run-lost").RuntimeStatus == orchestrator.StatusCompleted
	})
	landed := v.record(t, "run-lost")
	proxy.Heal()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v, want nil after its final write landed", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	if after := v.record(t, "run-lost"); after.String() != landed.String() {
		t.Fatalf("Run wrote twice: %v -> %v", landed, after)
	}
	if h.rejects.Load() != 0 {
		t.Fatal("Run's retry counted as fenced")
	}
}

// A final write that etcd does not take within its bound is an error, not
// a success: Run returns it and the record stays as it was (Running), so
// the holder runs the execution again rather than believe it ended. (Not
// parallel: it shortens the package's final write timeout.)
func TestRunFinalWriteNotCommitted(t *testing.T) {
	defer orchestrator.SetFinalWriteTimeout(time.Second)()
	v, proxy := proxiedEnv(t)
	x, _ := v.running(t, "run-refused", `1`)
	done := make(chan error, 1)
	go func() {
		done <- orchestrator.Run(ctxT(t), x, func(*orchestrator.OrchestrationContext) (any, error) {
			proxy.Blackhole(true, true) // no write of this run reaches etcd from here
			return "result", nil
		})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil though its final write never reached etcd")
		}
		if !errors.Is(err, orchestrator.ErrUnavailable) {
			t.Fatalf("Run: %v, want an ErrUnavailable", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	proxy.Heal()
	if st := v.decode(t, "run-refused"); st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("record is %s, want Running (the final write was not committed)", st.RuntimeStatus)
	}
}
