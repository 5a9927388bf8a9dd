package scheduler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// TestDrainCommitsBatch: a drain commits the batch of local activities its
// runs applied before it stops them (the budget is an hour away), so the
// node that takes the instance over runs again only the activity that was
// running at the drain.
func TestDrainCommitsBatch(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	runs := map[int]int{}
	stuck := make(chan struct{})
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Step", orchestrator.Activity(func(ctx context.Context, i int) (int, error) {
		mu.Lock()
		runs[i]++
		first := runs[i] == 1
		mu.Unlock()
		if i == 5 && first { // runs until the drain stops it
			close(stuck)
			<-ctx.Done()
			return 0, context.Cause(ctx)
		}
		return i, nil
	}))
	_ = reg.AddOrchestrator("Chain", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		sum := 0
		for i := 0; i < 10; i++ {
			var n int
			if err := ctx.CallActivity("Step", i).Await(&n); err != nil {
				return nil, err
			}
			sum += n
		}
		return sum, nil
	})
	c := newCluster(t, 0, 2*time.Second, reg)
	c.configure = func(cfg *scheduler.Config) { cfg.BatchBudget = time.Hour }
	c.addNode("node-0")
	c.addNode("node-1")
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Chain", orchestrator.StartOptions{InstanceID: "chain"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(15 * time.Second):
		t.Fatal("activity 5 never ran")
	}
	victim := holderOf(c, "chain")
	if victim == nil {
		t.Fatal("nobody holds the chain while its activity runs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := victim.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, cl, "chain", orchestrator.StatusCompleted, 15*time.Second); string(st.Output) != "45" {
		t.Fatalf("output %s, want 45", st.Output)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[int]int{0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 1, 7: 1, 8: 1, 9: 1}
	if fmt.Sprint(runs) != fmt.Sprint(want) {
		t.Fatalf("runs per activity %v, want %v: only the one running at the drain runs again", runs, want)
	}
}
