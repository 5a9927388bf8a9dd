package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// TestNonDeterminismFailsInstance: a new holder whose code no longer matches
// the history fails the instance with a message naming the mismatch.
func TestNonDeterminismFailsInstance(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	defer close(gate)
	block := orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return "ok", nil
	})
	quick := orchestrator.Activity(func(ctx context.Context, _ any) (string, error) { return "ok", nil })
	v1 := orchestrator.NewRegistry()
	_ = v1.AddActivity("A", quick)
	_ = v1.AddActivity("B", block)
	_ = v1.AddOrchestrator("Flow", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		return nil, ctx.CallActivity("B", nil).Await(nil)
	})
	c := newCluster(t, 1, 2*time.Second, v1)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Flow", orchestrator.StartOptions{InstanceID: "nd"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B scheduled", func() bool {
		return historyCount(t, cl, "nd", orchestrator.EventTaskScheduled) == 2
	})
	// Version 2 of the code calls C where the history has B.
	v2 := orchestrator.NewRegistry()
	_ = v2.AddActivity("A", quick)
	_ = v2.AddActivity("C", quick)
	_ = v2.AddOrchestrator("Flow", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		return nil, ctx.CallActivity("C", nil).Await(nil)
	})
	c.reg = v2
	c.addNode("v2")
	_ = c.nodes[0].etcd.Close()
	st := waitStatus(t, cl, "nd", orchestrator.StatusFailed, 15*time.Second)
	var msg string
	_ = json.Unmarshal(st.Output, &msg)
	t.Logf("failure: %s", msg)
	if !strings.Contains(msg, "non-deterministic") || !strings.Contains(msg, `"B"`) || !strings.Contains(msg, `"C"`) {
		t.Fatalf("failure message does not name the mismatch: %s", msg)
	}
}

// TestSuspendBuffersEvents: events raised while suspended are kept and
// delivered after resume, in order; the history records the suspension.
func TestSuspendBuffersEvents(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Collect", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var got []string
		for i := 0; i < 3; i++ {
			var s string
			if err := ctx.WaitForExternalEvent("item", 0).Await(&s); err != nil {
				return nil, err
			}
			got = append(got, s)
		}
		return got, nil
	})
	c := newCluster(t, 2, 2*time.Second, reg)
	cl := c.client()
	ctx := context.Background()
	if _, err := cl.Start(ctx, "Collect", orchestrator.StartOptions{InstanceID: "col"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "col", orchestrator.StatusRunning, 10*time.Second)
	if err := cl.RaiseEvent(ctx, "col", "item", json.RawMessage(`"1"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Suspend(ctx, "col", "maintenance"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "released", func() bool { return holderOf(c, "col") == nil })
	for _, v := range []string{`"2"`, `"3"`} {
		if err := cl.RaiseEvent(ctx, "col", "item", json.RawMessage(v)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // give a wrongly running holder a chance to act
	if st, _ := cl.Status(ctx, "col"); st.RuntimeStatus != orchestrator.StatusSuspended {
		t.Fatalf("status %s while suspended", st.RuntimeStatus)
	}
	if _, err := cl.Resume(ctx, "col", "done"); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "col", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `["1","2","3"]` {
		t.Fatalf("output %s", st.Output)
	}
	// The resumption is the inbox's last event: the orchestration completes
	// on item 3 before it, and events after the end are dropped.
	if historyCount(t, cl, "col", orchestrator.EventExecutionSuspended) != 1 || historyCount(t, cl, "col", orchestrator.EventExecutionResumed) > 1 {
		h, _ := cl.History(ctx, "col", "")
		for _, ev := range h {
			t.Logf("%d %s %s %s", ev.Seq, ev.EventType, ev.Name, ev.Input)
		}
		t.Fatal("history does not record the suspension and resumption once each")
	}
}

// TestTerminateDuringActivity stops the running activity at once.
func TestTerminateDuringActivity(t *testing.T) {
	t.Parallel()
	cancelled := make(chan error, 1)
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Long", orchestrator.Activity(func(ctx context.Context, _ any) (any, error) {
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	}))
	_ = reg.AddOrchestrator("Job", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.CallActivity("Long", nil).Await(nil)
	})
	c := newCluster(t, 1, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Job", orchestrator.StartOptions{InstanceID: "term"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "activity scheduled", func() bool {
		return historyCount(t, cl, "term", orchestrator.EventTaskScheduled) == 1
	})
	if _, err := cl.Terminate(context.Background(), "term", "stop"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("activity not cancelled within 1s of terminate")
	}
	if _, err := cl.Terminate(context.Background(), "term", "again"); !errors.Is(err, orchestrator.ErrInstanceTerminal) {
		t.Fatalf("second terminate: %v", err)
	}
}

// TestRestartAndPurge: restart runs a new execution with the original
// input; purge removes the record, history and inbox.
func TestRestartAndPurge(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Echo", orchestrator.Activity(func(ctx context.Context, s string) (string, error) { return s, nil }))
	_ = reg.AddOrchestrator("Echoer", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var in string
		_ = ctx.GetInput(&in)
		var out string
		err := ctx.CallActivity("Echo", in).Await(&out)
		return out, err
	})
	c := newCluster(t, 1, 2*time.Second, reg)
	cl := c.client()
	ctx := context.Background()
	first, err := cl.Start(ctx, "Echoer", orchestrator.StartOptions{InstanceID: "rp", Input: json.RawMessage(`"hi"`)})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "rp", orchestrator.StatusCompleted, 10*time.Second)
	res, err := cl.Restart(ctx, "rp", orchestrator.RestartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.ExecutionID == first.Status.ExecutionID {
		t.Fatal("restart kept the execution ID")
	}
	st := waitStatus(t, cl, "rp", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `"hi"` || st.ExecutionID != res.Status.ExecutionID {
		t.Fatalf("restarted run: %s %s", st.Output, st.ExecutionID)
	}
	if err := cl.Purge(ctx, "rp"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cl.Keys().Instance("rp"), cl.Keys().HistoryPrefix("rp"), cl.Keys().InboxPrefix("rp")} {
		resp, err := c.nodes[0].etcd.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 0 {
			t.Fatalf("after purge %s has %d keys (%v)", p, resp.Count, err)
		}
	}
	if _, err := cl.Status(ctx, "rp"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("status after purge: %v", err)
	}
}
