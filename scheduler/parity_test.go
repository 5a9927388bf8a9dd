package scheduler_test

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

// Durable Task parity: sub-orchestrations, failure details, scheduled
// starts, versions, waits, tags.

// A parent calls a child; parent and child run on different nodes, and the
// parent's holder is killed while it waits for the child: the child is
// started once, and its result reaches the parent's new holder.
func TestSubOrchestrationAcrossTakeover(t *testing.T) {
	t.Parallel()
	var childRuns atomic.Int32
	childReg := orchestrator.NewRegistry()  // nodes with only the child, or only the parent:
	parentReg := orchestrator.NewRegistry() // parent and child surely run on different nodes
	_ = childReg.AddOrchestrator("Child", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if !ctx.IsReplaying() {
			childRuns.Add(1)
		}
		var n int
		_ = ctx.GetInput(&n)
		if err := ctx.WaitForExternalEvent("go", 0).Await(nil); err != nil {
			return nil, err
		}
		return n * 2, nil
	})
	_ = parentReg.AddOrchestrator("Parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var a, b int
		if err := ctx.CallSubOrchestrator("Child", orchestrator.WithSubOrchestratorInput(20),
			orchestrator.WithSubOrchestrationInstanceID("kid")).Await(&a); err != nil {
			return nil, err
		}
		if err := ctx.CallSubOrchestrator("Child", orchestrator.WithSubOrchestratorInput(1)).Await(&b); err != nil {
			return nil, err
		}
		return a + b, nil
	})
	c := newCluster(t, 0, 2*time.Second, parentReg)
	c.addNode("parent-1")
	c.addNode("parent-2")
	c.reg = childReg
	c.addNode("child")
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Parent", orchestrator.StartOptions{InstanceID: "dad"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "child held", func() bool { return holderOf(c, "kid") != nil && holderOf(c, "dad") != nil })
	if holderOf(c, "kid").ID() != "child" || holderOf(c, "dad").ID() == "child" {
		t.Fatalf("parent on %s, child on %s", holderOf(c, "dad").ID(), holderOf(c, "kid").ID())
	}
	st, err := cl.Status(context.Background(), "kid")
	if err != nil || st.ParentInstanceID != "dad" {
		t.Fatalf("child status %+v, %v: want parent dad", st, err)
	}
	crashHolder(t, c, "dad")
	// And the child's holder too: the child resumes on another child node.
	c.addNode("child-2")
	crashHolder(t, c, "kid")
	if err := cl.RaiseEvent(context.Background(), "kid", "go", nil); err != nil {
		t.Fatal(err)
	}
	// The second child has a derived ID: dad:0001.
	eventually(t, 15*time.Second, "second child", func() bool {
		_, err := cl.Status(context.Background(), "dad:0001")
		return err == nil
	})
	if err := cl.RaiseEvent(context.Background(), "dad:0001", "go", nil); err != nil {
		t.Fatal(err)
	}
	out := waitStatus(t, cl, "dad", orchestrator.StatusCompleted, 20*time.Second)
	if string(out.Output) != "42" {
		t.Fatalf("output %s, want 42", out.Output)
	}
	if n := childRuns.Load(); n != 2 {
		t.Fatalf("children began live %d times, want 2: once each (kid's takeover replays its start; the parent's takeover starts no child again)", n)
	}
	h, err := cl.History(context.Background(), "dad", "")
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, ev := range h {
		if ev.EventType == orchestrator.EventSubOrchestrationInstanceCreated {
			created++
		}
	}
	if created != 2 {
		t.Fatalf("history has %d SubOrchestrationInstanceCreated, want 2", created)
	}
}

// A failing child fails the parent's task with the child's failure
// details; the parent sees them with errors.As, the type included.
func TestSubOrchestrationFailureDetails(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Broken", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, &orchestrator.ApplicationError{Type: "OutOfStock", Message: "no widgets left"}
	})
	_ = reg.AddOrchestrator("Parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		err := ctx.CallSubOrchestrator("Broken").Await(nil)
		var tf *orchestrator.TaskFailedError
		if !errors.As(err, &tf) || tf.Details == nil || tf.Details.ErrorType != "OutOfStock" {
			return nil, fmt.Errorf("want a TaskFailedError with the child's details, got %v", err)
		}
		return map[string]string{"type": tf.Details.ErrorType, "message": tf.Details.ErrorMessage}, nil
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Parent", orchestrator.StartOptions{InstanceID: "p"}); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "p", orchestrator.StatusCompleted, 10*time.Second)
	if !strings.Contains(string(st.Output), "OutOfStock") || !strings.Contains(string(st.Output), "no widgets left") {
		t.Fatalf("output %s", st.Output)
	}
	child, err := cl.Status(context.Background(), "p:0000")
	if err != nil || child.RuntimeStatus != orchestrator.StatusFailed || child.FailureDetails == nil || child.FailureDetails.ErrorType != "OutOfStock" {
		t.Fatalf("child status %+v, %v", child, err)
	}
}

// Terminating a parent recursively terminates its active children.
func TestTerminateRecursive(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.WaitForExternalEvent("never", 0).Await(nil)
	})
	_ = reg.AddOrchestrator("Parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		a := ctx.CallSubOrchestrator("Wait")
		b := ctx.CallSubOrchestrator("Wait")
		return nil, ctx.WhenAll(a, b)
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Parent", orchestrator.StartOptions{InstanceID: "tree"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "children held", func() bool { return holderOf(c, "tree:0000") != nil && holderOf(c, "tree:0001") != nil })
	if _, err := cl.TerminateRecursive(context.Background(), "tree", "stop all"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"tree", "tree:0000", "tree:0001"} {
		waitStatus(t, cl, id, orchestrator.StatusTerminated, 10*time.Second)
	}
	n, err := cl.PurgeRecursive(context.Background(), "tree")
	if err != nil || n != 3 {
		t.Fatalf("PurgeRecursive: %d, %v; want 3", n, err)
	}
}

// Recursive terminate and purge reach a running grandchild below a
// finished child: Root awaits L1, which starts L2 without awaiting it and
// finishes one step later (a timer). TerminateRecursive(Root) ends L2
// Terminated with the reason and leaves L1 Completed; PurgeRecursive then
// deletes all three.
func TestTerminateRecursiveBelowFinishedChild(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("L2", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.WaitForExternalEvent("never", 0).Await(nil)
	})
	_ = reg.AddOrchestrator("L1", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		ctx.CallSubOrchestrator("L2", orchestrator.WithSubOrchestrationInstanceID("l2"))
		if err := ctx.CreateTimer(10 * time.Millisecond).Await(nil); err != nil {
			return nil, err
		}
		return "l1 done", nil
	})
	_ = reg.AddOrchestrator("Root", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if err := ctx.CallSubOrchestrator("L1", orchestrator.WithSubOrchestrationInstanceID("l1")).Await(nil); err != nil {
			return nil, err
		}
		return nil, ctx.WaitForExternalEvent("never", 0).Await(nil)
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	ctx := context.Background()
	if _, err := cl.Start(ctx, "Root", orchestrator.StartOptions{InstanceID: "root"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "l1", orchestrator.StatusCompleted, 15*time.Second)
	waitStatus(t, cl, "l2", orchestrator.StatusRunning, 15*time.Second)
	// Root has seen L1's completion and waits for its event.
	eventually(t, 15*time.Second, "root to record l1's completion", func() bool {
		h, err := cl.History(ctx, "root", "")
		if err != nil {
			return false
		}
		for _, ev := range h {
			if ev.EventType == orchestrator.EventSubOrchestrationInstanceCompleted {
				return true
			}
		}
		return false
	})
	st, err := cl.TerminateRecursive(ctx, "root", "stop the tree")
	if err != nil || st.InstanceID != "root" || st.RuntimeStatus != orchestrator.StatusTerminated {
		t.Fatalf("TerminateRecursive: %+v, %v", st, err)
	}
	for _, id := range []string{"root", "l2"} {
		got := waitStatus(t, cl, id, orchestrator.StatusTerminated, 10*time.Second)
		if string(got.Output) != `"stop the tree"` {
			t.Fatalf("%s output %s, want the reason", id, got.Output)
		}
	}
	if l1, err := cl.Status(ctx, "l1"); err != nil || l1.RuntimeStatus != orchestrator.StatusCompleted || string(l1.Output) != `"l1 done"` {
		t.Fatalf("l1 %+v, %v: want it Completed as it was", l1, err)
	}
	n, err := cl.PurgeRecursive(ctx, "root")
	if err != nil || n != 3 {
		t.Fatalf("PurgeRecursive: %d, %v; want 3", n, err)
	}
	for _, id := range []string{"root", "l1", "l2"} {
		if _, err := cl.Status(ctx, id); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			t.Fatalf("%s after the purge: %v, want not found", id, err)
		}
	}
}

// A scheduled start stays Pending until its time, across a restart of
// every node.
func TestScheduledStartAcrossRestart(t *testing.T) {
	t.Parallel()
	var ranAt atomic.Int64
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Later", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		ranAt.CompareAndSwap(0, time.Now().UnixNano())
		return "ran", nil
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	at := time.Now().Add(3 * time.Second)
	r, err := cl.Start(context.Background(), "Later", orchestrator.StartOptions{InstanceID: "later", StartAt: at})
	if err != nil || r.Status.ScheduledStartTime == nil {
		t.Fatalf("Start: %+v, %v", r, err)
	}
	for _, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = n.Drain(ctx)
		cancel()
	}
	if st, _ := cl.Status(context.Background(), "later"); st.RuntimeStatus != orchestrator.StatusPending {
		t.Fatalf("status %s before its start time", st.RuntimeStatus)
	}
	c.addNode("node-a")
	c.addNode("node-b")
	st := waitStatus(t, cl, "later", orchestrator.StatusCompleted, 15*time.Second)
	if ran := time.Unix(0, ranAt.Load()); ran.Before(at) {
		t.Fatalf("ran at %v, %v before its scheduled start", ran, at.Sub(ran))
	}
	if st.ScheduledStartTime == nil || !st.ScheduledStartTime.Equal(at.UTC().Truncate(time.Millisecond)) {
		t.Fatalf("scheduledStartTime %v, want %v", st.ScheduledStartTime, at)
	}
}

// Versions in a rolling upgrade: a node that has only v1 never runs an
// instance started as v2; a node with both runs both.
func TestVersionsInRollingUpgrade(t *testing.T) {
	t.Parallel()
	v1 := func(ctx *orchestrator.OrchestrationContext) (any, error) { return "v1:" + ctx.Version(), nil }
	v2 := func(ctx *orchestrator.OrchestrationContext) (any, error) { return "v2:" + ctx.Version(), nil }
	oldReg := orchestrator.NewRegistry()
	_ = oldReg.AddOrchestratorVersion("Job", "1", v1, true)
	newReg := orchestrator.NewRegistry()
	_ = newReg.AddOrchestratorVersion("Job", "1", v1, false)
	_ = newReg.AddOrchestratorVersion("Job", "2", v2, true)
	if v, _ := newReg.DefaultVersion("Job"); v != "2" {
		t.Fatalf("default version %q", v)
	}
	c := newCluster(t, 0, 5*time.Second, oldReg)
	old := c.addNode("old")
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Job", orchestrator.StartOptions{InstanceID: "new-one", Version: "2"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the window in which the old node must not take it
	if st, _ := cl.Status(context.Background(), "new-one"); st.RuntimeStatus != orchestrator.StatusPending || st.Node != "" {
		t.Fatalf("an old node ran a v2 instance: %+v", st)
	}
	if _, err := cl.Start(context.Background(), "Job", orchestrator.StartOptions{InstanceID: "old-one", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, cl, "old-one", orchestrator.StatusCompleted, 10*time.Second); string(st.Output) != `"v1:1"` {
		t.Fatalf("old-one output %s", st.Output)
	}
	c.reg = newReg
	c.addNode("new")
	st := waitStatus(t, cl, "new-one", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `"v2:2"` || st.Version != "2" {
		t.Fatalf("new-one: %s version %q", st.Output, st.Version)
	}
	if n := old.counter("soloist_campaigns_total", "result", "won"); n != 1 {
		t.Fatalf("the old node won %v campaigns, want 1 (only v1)", n)
	}
}

// WaitForOrchestrationStart and WaitForOrchestrationCompletion return when
// the instance starts and ends.
func TestWaits(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Approve", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var by string
		err := ctx.WaitForExternalEvent("ok", 0).Await(&by)
		return by, err
	})
	c := newCluster(t, 1, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Approve", orchestrator.StartOptions{InstanceID: "w", Tags: map[string]string{"team": "ops"}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cl.WaitForOrchestrationStart(ctx, "w")
	if err != nil || st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("WaitForOrchestrationStart: %+v, %v", st, err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = cl.WaitForOrchestrationCompletion(short, "w")
	cancelShort()
	if err == nil {
		t.Fatal("WaitForOrchestrationCompletion returned before the instance completed")
	}
	done := make(chan *orchestrator.Status, 1)
	go func() {
		st, _ := cl.WaitForOrchestrationCompletion(ctx, "w")
		done <- st
	}()
	if err := cl.RaiseEvent(context.Background(), "w", "ok", json.RawMessage(`"ann"`)); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-done:
		if st == nil || st.RuntimeStatus != orchestrator.StatusCompleted || string(st.Output) != `"ann"` {
			t.Fatalf("WaitForOrchestrationCompletion: %+v", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitForOrchestrationCompletion did not return after the completion")
	}
	page, _, err := cl.List(context.Background(), orchestrator.ListOptions{Tags: map[string]string{"team": "ops"}})
	if err != nil || len(page) != 1 || page[0].Tags["team"] != "ops" {
		t.Fatalf("list by tag: %+v, %v", page, err)
	}
	page, _, _ = cl.List(context.Background(), orchestrator.ListOptions{Tags: map[string]string{"team": "dev"}})
	if len(page) != 0 {
		t.Fatalf("list by another tag: %d items", len(page))
	}
}

// Rewind after a takeover: the activity that completed before the failure
// is not run again, the failed one and what follows run again, and the
// instance completes.
func TestRewindAfterTakeover(t *testing.T) {
	t.Parallel()
	var a, b, c atomic.Int32
	var fixed atomic.Bool
	gate := make(chan struct{})
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("A", orchestrator.Activity(func(ctx context.Context, _ any) (int, error) { a.Add(1); return 1, nil }))
	_ = reg.AddActivity("B", orchestrator.Activity(func(ctx context.Context, _ any) (int, error) {
		b.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if !fixed.Load() {
			return 0, errors.New("B is broken")
		}
		return 10, nil
	}))
	_ = reg.AddActivity("C", orchestrator.Activity(func(ctx context.Context, _ any) (int, error) { c.Add(1); return 100, nil }))
	_ = reg.AddOrchestrator("ABC", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		sum := 0
		for _, name := range []string{"A", "B", "C"} {
			var n int
			if err := ctx.CallActivity(name, nil).Await(&n); err != nil {
				return nil, err
			}
			sum += n
		}
		return sum, nil
	})
	cl2 := newCluster(t, 2, 2*time.Second, reg)
	cl := cl2.client()
	if _, err := cl.Start(context.Background(), "ABC", orchestrator.StartOptions{InstanceID: "rw"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B running", func() bool { return b.Load() == 1 })
	crashHolder(t, cl2, "rw") // B runs again on the new holder
	eventually(t, 10*time.Second, "B running again", func() bool { return b.Load() == 2 })
	close(gate)
	st := waitStatus(t, cl, "rw", orchestrator.StatusFailed, 10*time.Second)
	if st.FailureDetails == nil || !strings.Contains(st.FailureDetails.ErrorMessage, "B is broken") {
		t.Fatalf("failure %+v", st.FailureDetails)
	}
	if _, err := cl.Rewind(context.Background(), "rp-missing", ""); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Rewind of a missing instance: %v", err)
	}
	fixed.Store(true)
	if _, err := cl.Rewind(context.Background(), "rw", "B is fixed"); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, cl, "rw", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != "111" || st.FailureDetails != nil {
		t.Fatalf("after rewind: %s %+v", st.Output, st.FailureDetails)
	}
	if a.Load() != 1 || b.Load() != 3 || c.Load() != 1 {
		t.Fatalf("runs A %d B %d C %d, want 1, 3 (a takeover and the rewind), 1", a.Load(), b.Load(), c.Load())
	}
	if _, err := cl.Rewind(context.Background(), "rw", ""); !errors.Is(err, orchestrator.ErrNotRewindable) {
		t.Fatalf("Rewind of a Completed instance: %v, want ErrNotRewindable", err)
	}
	if got := historyCount(t, cl, "rw", orchestrator.EventExecutionRewound); got != 1 {
		t.Fatalf("history has %d ExecutionRewound", got)
	}
}

// ContinueAsNew drops the events the code has not received with
// PreserveUnprocessedEvents(false), and carries them by default.
func TestContinueAsNewDropsEvents(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Gen", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var in struct {
			Gen  int
			Keep bool
		}
		_ = ctx.GetInput(&in)
		if in.Gen == 0 {
			if err := ctx.WaitForExternalEvent("go", 0).Await(nil); err != nil {
				return nil, err
			}
			in.Gen = 1
			ctx.ContinueAsNew(in, orchestrator.PreserveUnprocessedEvents(in.Keep))
			return nil, nil
		}
		var s string
		if err := ctx.WaitForExternalEvent("x", time.Second).Await(&s); errors.Is(err, orchestrator.ErrEventTimeout) {
			return "dropped", nil
		}
		return s, nil
	})
	c := newCluster(t, 1, 5*time.Second, reg)
	cl := c.client()
	for _, keep := range []bool{false, true} {
		id := fmt.Sprintf("can-%v", keep)
		in, _ := json.Marshal(map[string]any{"Gen": 0, "Keep": keep})
		if _, err := cl.Start(context.Background(), "Gen", orchestrator.StartOptions{InstanceID: id, Input: in}); err != nil {
			t.Fatal(err)
		}
		if err := cl.RaiseEvent(context.Background(), id, "x", json.RawMessage(`"kept"`)); err != nil {
			t.Fatal(err)
		}
		if err := cl.RaiseEvent(context.Background(), id, "go", nil); err != nil {
			t.Fatal(err)
		}
		want := `"dropped"`
		if keep {
			want = `"kept"`
		}
		if st := waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second); string(st.Output) != want {
			t.Fatalf("PreserveUnprocessedEvents(%v): output %s, want %s", keep, st.Output, want)
		}
	}
}

// An instance whose function no live node registers: its status says so,
// a gauge counts it, and once a node with the function comes it runs.
func TestUnrunnableInstance(t *testing.T) {
	t.Parallel()
	plain := orchestrator.NewRegistry()
	_ = plain.AddOrchestrator("Other", func(ctx *orchestrator.OrchestrationContext) (any, error) { return nil, nil })
	c := newCluster(t, 0, 5*time.Second, plain)
	a := c.addNode("a")
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Ghost", orchestrator.StartOptions{InstanceID: "g"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "counted unrunnable", func() bool { return a.counter("soloist_unrunnable_instances", "function", "Ghost") == 1 })
	st, err := cl.Status(context.Background(), "g")
	if err != nil || !strings.Contains(st.Unrunnable, "Ghost") {
		t.Fatalf("status %+v, %v: want it to say no node registers Ghost", st, err)
	}
	ghost := orchestrator.NewRegistry()
	_ = ghost.AddOrchestrator("Ghost", func(ctx *orchestrator.OrchestrationContext) (any, error) { return "boo", nil })
	c.reg = ghost
	c.addNode("b")
	waitStatus(t, cl, "g", orchestrator.StatusCompleted, 10*time.Second)
	eventually(t, 5*time.Second, "no longer counted", func() bool { return a.counter("soloist_unrunnable_instances", "function", "Ghost") == 0 })
	if st, _ := cl.Status(context.Background(), "g"); st.Unrunnable != "" {
		t.Fatalf("a completed instance says %q", st.Unrunnable)
	}
}
