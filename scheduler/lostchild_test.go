package scheduler_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// TestLostChildOnTwoNodes (issue 18, L1/L2): Root calls L1 and waits; L1
// starts L2 with a fixed ID in its last step without awaiting it and
// returns. L2 is created (before L1's final write) and completes, once: a
// crash of its holder after L1 ended does not create it again.
func TestLostChildOnTwoNodes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	execs := map[string]bool{} // L2's executions that ran
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Root", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallSubOrchestrator("L1").Await(&s)
		return s, err
	})
	_ = reg.AddOrchestrator("L1", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		ctx.CallSubOrchestrator("L2", orchestrator.WithSubOrchestrationInstanceID("l2-fixed"))
		return "l1", nil
	})
	_ = reg.AddOrchestrator("L2", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		mu.Lock()
		execs[ctx.ExecutionID()] = true
		mu.Unlock()
		var s string
		err := ctx.WaitForExternalEvent("go", 0).Await(&s)
		return s, err
	})
	c := newCluster(t, 0, 2*time.Second, reg)
	c.configure = func(cfg *scheduler.Config) { cfg.BatchBudget = time.Second }
	c.addNode("node-0")
	c.addNode("node-1")
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Root", orchestrator.StartOptions{InstanceID: "root"}); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, cl, "root", orchestrator.StatusCompleted, 15*time.Second); string(st.Output) != `"l1"` {
		t.Fatalf("root output %s", st.Output)
	}
	eventually(t, 10*time.Second, "l2-fixed held", func() bool { return holderOf(c, "l2-fixed") != nil })
	crashHolder(t, c, "l2-fixed")
	if err := cl.RaiseEvent(context.Background(), "l2-fixed", "go", json.RawMessage(`"l2"`)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "l2-fixed", orchestrator.StatusCompleted, 15*time.Second)
	if st.ParentInstanceID == "" || string(st.Output) != `"l2"` {
		t.Fatalf("l2: parent %q output %s", st.ParentInstanceID, st.Output)
	}
	if n := historyCount(t, cl, "l2-fixed", orchestrator.EventExecutionStarted); n != 1 {
		t.Fatalf("l2 has %d ExecutionStarted, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(execs) != 1 {
		t.Fatalf("l2 ran %d executions, want 1 (created once)", len(execs))
	}
}
