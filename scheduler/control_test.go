package scheduler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// TestTerminateStopsRun: terminating a held instance cancels its run at once
// and the owners key goes.
func TestTerminateStopsRun(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	stopped := make(chan error, 1)
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Block", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		rec.mu.Lock()
		rec.runs = append(rec.runs, runRecord{token: ctx.FencingToken()})
		rec.mu.Unlock()
		<-ctx.Context().Done()
		stopped <- context.Cause(ctx.Context())
		return nil, ctx.Context().Err()
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: "t"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "t", orchestrator.StatusRunning, 10*time.Second)
	eventually(t, 5*time.Second, "run", func() bool { return rec.count() == 1 })
	at := time.Now()
	if _, err := cl.Terminate(context.Background(), "t", "enough"); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-stopped:
		t.Logf("run stopped %v after terminate: %v", time.Since(at).Round(time.Millisecond), cause)
	case <-time.After(time.Second):
		t.Fatal("run did not stop within 1s of terminate")
	}
	eventually(t, 2*time.Second, "owners key released", func() bool {
		resp, err := c.nodes[0].etcd.Get(context.Background(), cl.Keys().Owner("t"))
		return err == nil && len(resp.Kvs) == 0
	})
	st, _ := cl.Status(context.Background(), "t")
	if st.RuntimeStatus != orchestrator.StatusTerminated || string(st.Output) != `"enough"` {
		t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
	}
	if rec.count() != 1 {
		t.Fatalf("ran %d times", rec.count())
	}
}

// TestSuspendResume: a suspended instance is released and not run; resume
// runs it again.
func TestSuspendResume(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 2, 5*time.Second, newBlockingRegistry(rec, nil))
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: "s"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first run", func() bool { return rec.count() == 1 })
	if _, err := cl.Suspend(context.Background(), "s", "pause"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "release", func() bool { return holderOf(c, "s") == nil })
	// Stays unheld while suspended, over several resync rounds.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if holderOf(c, "s") != nil || rec.count() != 1 {
			t.Fatal("a suspended instance was run")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := cl.Resume(context.Background(), "s", "go"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "second run", func() bool { return rec.count() == 2 })
	close(rec.finish)
	waitStatus(t, cl, "s", orchestrator.StatusCompleted, 5*time.Second)
}

// TestSpread: rendezvous hashing spreads instances over the nodes.
func TestSpread(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 3, 5*time.Second, newBlockingRegistry(rec, nil))
	cl := c.client()
	const n = 30
	for i := 0; i < n; i++ {
		if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: fmt.Sprintf("i%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "all held", func() bool {
		total := 0
		for _, n := range c.nodes {
			total += len(n.Held())
		}
		return total == n
	})
	for _, node := range c.nodes {
		t.Logf("%s holds %d of %d", node.ID(), len(node.Held()), n)
		if h := len(node.Held()); h == 0 || h == n {
			t.Fatalf("%s holds %d of %d: not spread", node.ID(), h, n)
		}
	}
	close(rec.finish)
	for i := 0; i < n; i++ {
		waitStatus(t, cl, fmt.Sprintf("i%02d", i), orchestrator.StatusCompleted, 10*time.Second)
	}
}

// TestMaxConcurrent: a node never holds more than MaxConcurrent instances.
func TestMaxConcurrent(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 0, 5*time.Second, newBlockingRegistry(rec, nil))
	c.maxConcurrent = 2
	node := c.addNode("capped")
	cl := c.client()
	for i := 0; i < 5; i++ {
		if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "two held", func() bool { return len(node.Held()) == 2 })
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if h := len(node.Held()); h > 2 {
			t.Fatalf("holds %d > MaxConcurrent 2", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(rec.finish)
	for i := 0; i < 5; i++ {
		waitStatus(t, cl, fmt.Sprintf("m%d", i), orchestrator.StatusCompleted, 10*time.Second)
	}
}
