package orchestrator_test

import (
	"context"
	"strings"
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
