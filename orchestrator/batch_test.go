package orchestrator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// helloCities is the README's example: three activities in sequence.
func helloCities(reg *orchestrator.Registry, say func(ctx context.Context, city string) (string, error)) {
	_ = reg.AddActivity("SayHello", orchestrator.Activity(say))
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var out []string
		for _, city := range []string{"Tokyo", "Seattle", "London"} {
			var s string
			if err := ctx.CallActivity("SayHello", city).Await(&s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	})
}

// driveToEnd drives x with opts and waits for its outcome.
func driveToEnd(t *testing.T, reg *orchestrator.Registry, x *orchestrator.Execution, opts orchestrator.RunOptions) orchestrator.Outcome {
	t.Helper()
	done := make(chan orchestrator.Outcome, 1)
	opts.WatchInbox = true
	opts.OnEnd = func(o orchestrator.Outcome) { done <- o }
	if _, err := reg.Drive(ctxT(t), x, opts); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-done:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not end")
	}
	return orchestrator.Outcome{}
}

// writesOf counts the etcd transactions that wrote a key of instance id
// between revisions from (excluded) and to (included): every write
// transaction is one revision.
func writesOf(t *testing.T, v *env, id string, from, to int64) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	// The keys of an instance live under several prefixes: watch them all
	// from the root of the test's prefix.
	root := strings.TrimSuffix(v.keys.Instance("x"), "v1/instances/x")
	all := v.raw.Watch(ctx, root, clientv3.WithPrefix(), clientv3.WithRev(from+1))
	revs := map[int64][]string{}
	var order []int64
	for wr := range all {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			if ev.Kv.ModRevision > to {
				continue
			}
			if strings.Contains(k, "/"+id) {
				if _, ok := revs[ev.Kv.ModRevision]; !ok {
					order = append(order, ev.Kv.ModRevision)
				}
				revs[ev.Kv.ModRevision] = append(revs[ev.Kv.ModRevision], strings.TrimPrefix(k, root))
			}
		}
		if wr.Header.Revision >= to {
			break
		}
	}
	var out []string
	for _, r := range order {
		out = append(out, strings.Join(revs[r], " "))
	}
	return out
}

// TestHelloCitiesCommitsOnce: with batching, the three activities and the
// final write are one transaction after the acquire (and its open read);
// without, every step is a commit.
func TestHelloCitiesCommitsOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		budget time.Duration
		want   int
	}{{"batched", time.Second, 1}, {"unbatched", 0, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			reg := orchestrator.NewRegistry()
			helloCities(reg, func(_ context.Context, city string) (string, error) { return "Hello " + city + "!", nil })
			x, _ := v.running(t, "hello", "null")
			r0, err := v.raw.Get(ctxT(t), "probe")
			if err != nil {
				t.Fatal(err)
			}
			if o := driveToEnd(t, reg, x, orchestrator.RunOptions{BatchBudget: tc.budget}); o.Status != orchestrator.StatusCompleted {
				t.Fatalf("outcome %+v", o)
			}
			r1, err := v.raw.Get(ctxT(t), "probe")
			if err != nil {
				t.Fatal(err)
			}
			w := writesOf(t, v, "hello", r0.Header.Revision, r1.Header.Revision)
			if len(w) != tc.want {
				t.Fatalf("%d write transactions after the acquire, want %d: %q", len(w), tc.want, w)
			}
			if st := v.decode(t, "hello"); string(st.Output) != `["Hello Tokyo!","Hello Seattle!","Hello London!"]` {
				t.Fatalf("output %s", st.Output)
			}
			if got := historyTypes(t, v, "hello", x.Status().ExecutionID); len(got) != 8 {
				t.Fatalf("history %v", got)
			}
		})
	}
}

// TestBatchCheckpointsWithinBudget: an activity that outlasts the batch's
// time budget gets the batch committed meanwhile, and its own result is in
// etcd before the next activity starts.
func TestBatchCheckpointsWithinBudget(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	var seenAtLondon, seenDuringSeattle atomic.Value
	helloCities(reg, func(ctx context.Context, city string) (string, error) {
		info, _ := orchestrator.ActivityInfoFrom(ctx)
		types := func() string {
			h, err := v.c.History(ctx, "slow", info.ExecutionID)
			if err != nil {
				return err.Error()
			}
			var s []string
			for _, ev := range h {
				s = append(s, string(ev.EventType))
			}
			return strings.Join(s, " ")
		}
		switch city {
		case "Seattle":
			time.Sleep(700 * time.Millisecond) // the budget is 200ms
			seenDuringSeattle.Store(types())
		case "London":
			seenAtLondon.Store(types())
		}
		return "Hello " + city + "!", nil
	})
	x, _ := v.running(t, "slow", "null")
	if o := driveToEnd(t, reg, x, orchestrator.RunOptions{BatchBudget: 200 * time.Millisecond}); o.Status != orchestrator.StatusCompleted {
		t.Fatalf("outcome %+v", o)
	}
	if got, want := seenDuringSeattle.Load(), "ExecutionStarted TaskScheduled TaskCompleted TaskScheduled"; got != want {
		t.Errorf("history while the slow activity ran: %q, want the batch so far checkpointed: %q", got, want)
	}
	// Seattle's result is committed before London starts (London's own
	// schedule may or may not be: a checkpoint that raced the result).
	got, _ := seenAtLondon.Load().(string)
	if want := "ExecutionStarted TaskScheduled TaskCompleted TaskScheduled TaskCompleted"; !strings.HasPrefix(got, want) {
		t.Errorf("history when the next activity started: %q, want it to begin with %q", got, want)
	}
}

// TestLostChild (issue 18, L1/L2): a parent that schedules a child in its
// last step without awaiting it and returns creates the child before its
// final write.
func TestLostChild(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		ctx.CallSubOrchestrator("L2", orchestrator.WithSubOrchestrationInstanceID("lost-l2"))
		return "l1 done", nil
	})
	_ = reg.AddOrchestrator("L2", func(ctx *orchestrator.OrchestrationContext) (any, error) { return "l2", nil })
	x, _ := v.running(t, "lost-l1", "null")
	if o := driveToEnd(t, reg, x, orchestrator.RunOptions{BatchBudget: time.Second}); o.Status != orchestrator.StatusCompleted {
		t.Fatalf("outcome %+v", o)
	}
	st, err := v.c.Status(ctxT(t), "lost-l2")
	if err != nil {
		t.Fatalf("the child of the parent's last step: %v", err)
	}
	if st.ParentInstanceID != "lost-l1" || st.RuntimeStatus != orchestrator.StatusPending {
		t.Fatalf("child %+v", st)
	}
}

// TestBatchCrashKeepsRetriesAndFailures: with batching on, a failed local
// activity is committed with its failure details like a result, and a
// retried activity's attempts are committed before they run, so a crash
// (the run stopped mid-attempt, the instance taken by a new holder) repeats
// only the attempt that was running, under its own number: MaxAttempts
// holds across the takeover.
func TestBatchCrashKeepsRetriesAndFailures(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	crashed := make(chan struct{})
	var crashOnce sync.Once
	var mu sync.Mutex
	var attempts []int // of Flaky, in call order
	_ = reg.AddActivity("Boom", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
		return "", &orchestrator.ApplicationError{Type: "Oops", Message: "boom"}
	}))
	_ = reg.AddActivity("Flaky", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
		info, _ := orchestrator.ActivityInfoFrom(ctx)
		mu.Lock()
		attempts = append(attempts, info.Attempt)
		first2 := info.Attempt == 2 && len(attempts) == 2
		mu.Unlock()
		if first2 { // the holder dies during attempt 2
			crashOnce.Do(func() { close(crashed) })
			<-ctx.Done()
			return "", context.Cause(ctx)
		}
		return "", fmt.Errorf("attempt %d fails", info.Attempt)
	}))
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if err := ctx.CallActivity("Boom", nil).Await(nil); err == nil {
			return nil, errors.New("Boom succeeded")
		}
		return nil, ctx.CallActivity("Flaky", nil, orchestrator.WithRetry(orchestrator.RetryPolicy{
			MaxAttempts: 3, FirstInterval: time.Millisecond})).Await(nil)
	})
	x, _ := v.running(t, "crash", "null")
	exec := x.Status().ExecutionID
	opts := orchestrator.RunOptions{WatchInbox: true, BatchBudget: time.Second}

	// The first holder runs until attempt 2 of Flaky is under way, then
	// stops writing (a crash, as far as etcd can tell).
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan orchestrator.Outcome, 1)
	opts.OnEnd = func(o orchestrator.Outcome) { done <- o }
	if _, err := reg.Drive(ctx, x, opts); err != nil {
		t.Fatal(err)
	}
	select {
	case <-crashed:
	case o := <-done:
		t.Fatalf("the run ended before attempt 2: %+v", o)
	case <-time.After(30 * time.Second):
		t.Fatal("attempt 2 of Flaky never started")
	}
	cancel()
	if o := <-done; o.Status != "" {
		t.Fatalf("the crashed run wrote %s", o.Status)
	}

	// What the crash left: Boom's failure with its details, and the two
	// attempts' schedules, all committed.
	h, err := v.c.History(ctxT(t), "crash", exec)
	if err != nil {
		t.Fatal(err)
	}
	var boom *orchestrator.HistoryEvent
	flakySched := 0
	for i, ev := range h {
		switch {
		case ev.EventType == orchestrator.EventTaskFailed && ev.Name == "Boom":
			boom = &h[i]
		case ev.EventType == orchestrator.EventTaskScheduled && ev.Name == "Flaky":
			flakySched++
		}
	}
	if boom == nil || boom.FailureDetails == nil || boom.FailureDetails.ErrorType != "Oops" || boom.FailureDetails.ErrorMessage != "boom" {
		t.Fatalf("Boom's failure in etcd after the crash: %+v", boom)
	}
	if flakySched != 2 {
		t.Fatalf("%d attempts of Flaky scheduled in etcd after the crash, want 2 (each committed before it runs)", flakySched)
	}

	// A new holder takes over: attempt 2 runs again, then attempt 3, and
	// no more.
	if _, err := v.raw.Delete(ctxT(t), v.keys.Owner("crash")); err != nil {
		t.Fatal(err)
	}
	h2 := v.hold(t, "crash", exec)
	x2, err := v.c.Open(ctxT(t), "crash", exec, h2.fence)
	if err != nil {
		t.Fatal(err)
	}
	if o := driveToEnd(t, reg, x2, orchestrator.RunOptions{BatchBudget: time.Second}); o.Status != orchestrator.StatusFailed {
		t.Fatalf("outcome %+v, want Failed (Flaky always fails)", o)
	}
	mu.Lock()
	got := fmt.Sprint(attempts)
	mu.Unlock()
	if got != "[1 2 2 3]" {
		t.Fatalf("attempts of Flaky in call order %s, want [1 2 2 3]: the crashed attempt again, then the last", got)
	}
	if st := v.decode(t, "crash"); !strings.Contains(string(st.Output), "3 attempts") {
		t.Fatalf("failure %s, want it to say all 3 attempts failed", st.Output)
	}
}

// TestCheckpointCommitsBatch: Driver.Checkpoint commits the batch's
// results at once (the budget is far away) while its running activity
// goes on, and turns batching off: the next activity starts only after
// the result before it and its own schedule are committed. A run stopped
// then leaves the next holder only the running activity to repeat. On an
// ended run Checkpoint returns at once.
func TestCheckpointCommitsBatch(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	var runs sync.Map // city -> *atomic.Int32
	seattle, london, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var atLondon string
	x, _ := v.running(t, "ckpt", "null")
	exec := x.Status().ExecutionID
	helloCities(reg, func(ctx context.Context, city string) (string, error) {
		n, _ := runs.LoadOrStore(city, new(atomic.Int32))
		if n.(*atomic.Int32).Add(1) == 1 {
			switch city {
			case "Seattle":
				close(seattle)
				select {
				case <-release:
				case <-ctx.Done():
					return "", context.Cause(ctx)
				}
			case "London": // runs until the holder stops
				h, err := v.c.History(ctx, "ckpt", exec)
				var types []orchestrator.EventType
				for _, ev := range h {
					types = append(types, ev.EventType)
				}
				atLondon = fmt.Sprint(types, err)
				close(london)
				<-ctx.Done()
				return "", context.Cause(ctx)
			}
		}
		return "Hello " + city + "!", nil
	})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan orchestrator.Outcome, 1)
	d, err := reg.Drive(ctx, x, orchestrator.RunOptions{WatchInbox: true, BatchBudget: time.Hour,
		OnEnd: func(o orchestrator.Outcome) { done <- o }})
	if err != nil {
		t.Fatal(err)
	}
	<-seattle
	if got := historyTypes(t, v, "ckpt", exec); len(got) != 0 {
		t.Fatalf("history before the checkpoint %v: the batch should not have committed yet", got)
	}
	if err := d.Checkpoint(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(historyTypes(t, v, "ckpt", exec)), "[ExecutionStarted TaskScheduled TaskCompleted TaskScheduled]"; got != want {
		t.Fatalf("history after the checkpoint %s, want %s", got, want)
	}
	close(release)
	<-london
	if want := "[ExecutionStarted TaskScheduled TaskCompleted TaskScheduled TaskCompleted TaskScheduled] <nil>"; atLondon != want {
		t.Fatalf("history when London started %s, want %s: no batching after a checkpoint", atLondon, want)
	}
	cancel() // the drain stops the run
	<-done
	if err := d.Checkpoint(ctxT(t)); err != nil {
		t.Fatalf("Checkpoint of an ended run: %v", err)
	}

	// The next holder runs London again, and nothing else.
	if _, err := v.raw.Delete(ctxT(t), v.keys.Owner("ckpt")); err != nil {
		t.Fatal(err)
	}
	h2 := v.hold(t, "ckpt", exec)
	x2, err := v.c.Open(ctxT(t), "ckpt", exec, h2.fence)
	if err != nil {
		t.Fatal(err)
	}
	if o := driveToEnd(t, reg, x2, orchestrator.RunOptions{BatchBudget: time.Hour}); o.Status != orchestrator.StatusCompleted {
		t.Fatalf("outcome %+v", o)
	}
	for city, want := range map[string]int32{"Tokyo": 1, "Seattle": 1, "London": 2} {
		n, _ := runs.Load(city)
		if got := n.(*atomic.Int32).Load(); got != want {
			t.Errorf("%s ran %d times, want %d", city, got, want)
		}
	}
}

// TestCheckpointDoesNotWaitForCode: a run with nothing uncommitted whose
// code is busy in a long step (as an exec function's program is) answers
// Checkpoint at once: a drain is not held up by it.
func TestCheckpointDoesNotWaitForCode(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	reg := orchestrator.NewRegistry()
	busy := make(chan struct{})
	_ = reg.AddOrchestrator("fn", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		close(busy)
		<-ctx.Context().Done() // the program runs until the holder stops
		return nil, ctx.Context().Err()
	})
	x, _ := v.running(t, "busy", "null")
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	done := make(chan orchestrator.Outcome, 1)
	d, err := reg.Drive(ctx, x, orchestrator.RunOptions{WatchInbox: true, BatchBudget: time.Second,
		OnEnd: func(o orchestrator.Outcome) { done <- o }})
	if err != nil {
		t.Fatal(err)
	}
	<-busy
	cctx, ccancel := context.WithTimeout(ctxT(t), 10*time.Second)
	defer ccancel()
	began := time.Now()
	if err := d.Checkpoint(cctx); err != nil {
		t.Fatalf("Checkpoint of a run busy in its code: %v after %v", err, time.Since(began))
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("Checkpoint took %v: it waited for the code's step", took)
	}
	cancel()
	<-done
}
