package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// effects counts side effects by key, and remembers the fencing token of
// each.
type effects struct {
	mu     sync.Mutex
	counts map[string]int
	tokens map[string][]int64
}

func newEffects() *effects {
	return &effects{counts: map[string]int{}, tokens: map[string][]int64{}}
}

func (f *effects) record(ctx context.Context, key string) {
	info, _ := orchestrator.ActivityInfoFrom(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[key]++
	f.tokens[key] = append(f.tokens[key], info.FencingToken)
}

func (f *effects) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[key]
}

// crashHolder cuts the holder of id from etcd as a crash would (its lease
// is not revoked) and waits until another node runs the instance.
func crashHolder(t *testing.T, c *cluster, id string) *testNode {
	t.Helper()
	victim := holderOf(c, id)
	if victim == nil {
		t.Fatalf("no holder of %s", id)
	}
	cl := c.client()
	before, err := cl.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	_ = victim.etcd.Close()
	// Taken over: another node holds it, or has written it with a larger
	// token (it may have finished already). The victim may go on believing
	// it holds the instance until its safe-until passes, so "the first node
	// that holds it" is not the test.
	eventually(t, 15*time.Second, "takeover of "+id, func() bool {
		for _, n := range c.nodes {
			if n != victim && slices.Contains(n.Held(), id) {
				return true
			}
		}
		st, err := cl.Status(context.Background(), id)
		return err == nil && st.FencingToken > before.FencingToken
	})
	return victim
}

func historyCount(t *testing.T, cl *orchestrator.Client, id string, typ orchestrator.EventType) int {
	t.Helper()
	h, err := cl.History(context.Background(), id, "")
	if err != nil {
		return -1
	}
	n := 0
	for _, ev := range h {
		if ev.EventType == typ {
			n++
		}
	}
	return n
}

// TestTakeoverResumesSequence kills the holder while the fourth of five
// sequential activities runs: the new holder resumes from the history, so
// each completed activity ran exactly once and only the one in flight ran
// again.
func TestTakeoverResumesSequence(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	gate := make(chan struct{})
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Step", orchestrator.Activity(func(ctx context.Context, i int) (int, error) {
		fx.record(ctx, fmt.Sprint(i))
		if i == 3 {
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return i * 10, nil
	}))
	_ = reg.AddOrchestrator("Sequence", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var out []int
		for i := 0; i < 5; i++ {
			var r int
			if err := ctx.CallActivity("Step", i).Await(&r); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	})
	c := newCluster(t, 3, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Sequence", orchestrator.StartOptions{InstanceID: "seq"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "step 3 running", func() bool { return fx.count("3") == 1 })
	crashHolder(t, c, "seq")
	eventually(t, 10*time.Second, "step 3 re-run", func() bool { return fx.count("3") == 2 })
	close(gate)
	st := waitStatus(t, cl, "seq", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != "[0,10,20,30,40]" {
		t.Fatalf("output %s", st.Output)
	}
	for i, want := range []int{1, 1, 1, 2, 1} {
		if got := fx.count(fmt.Sprint(i)); got != want {
			t.Errorf("activity %d ran %d times, want %d", i, got, want)
		}
	}
	t.Logf("activity executions by step: 0:%d 1:%d 2:%d 3:%d 4:%d", fx.count("0"), fx.count("1"), fx.count("2"), fx.count("3"), fx.count("4"))
	tok := fx.tokens["3"]
	if len(tok) == 2 && tok[1] <= tok[0] {
		t.Errorf("re-run of step 3 has token %d, not above %d", tok[1], tok[0])
	}
}

// TestTakeoverFanOut: ten activities in parallel; five finish before the
// holder dies. Those never run again; the others finish on the new holder.
func TestTakeoverFanOut(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	gate := make(chan struct{})
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Part", orchestrator.Activity(func(ctx context.Context, i int) (int, error) {
		fx.record(ctx, fmt.Sprint(i))
		if i >= 5 {
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return i, nil
	}))
	_ = reg.AddOrchestrator("FanOut", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var tasks []*orchestrator.Task
		for i := 0; i < 10; i++ {
			tasks = append(tasks, ctx.CallActivity("Part", i))
		}
		sum := 0
		for _, task := range tasks {
			var r int
			if err := task.Await(&r); err != nil {
				return nil, err
			}
			sum += r
		}
		return sum, nil
	})
	c := newCluster(t, 3, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "FanOut", orchestrator.StartOptions{InstanceID: "fan"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "five completions committed", func() bool {
		return historyCount(t, cl, "fan", orchestrator.EventTaskCompleted) == 5
	})
	crashHolder(t, c, "fan")
	close(gate)
	st := waitStatus(t, cl, "fan", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != "45" {
		t.Fatalf("output %s", st.Output)
	}
	for i := 0; i < 10; i++ {
		got := fx.count(fmt.Sprint(i))
		if i < 5 && got != 1 {
			t.Errorf("completed activity %d ran %d times, want 1", i, got)
		}
		if i >= 5 && (got < 1 || got > 2) {
			t.Errorf("in-flight activity %d ran %d times, want 1 or 2", i, got)
		}
	}
}

// TestTimerKeepsFireTime: a durable timer fires at its original time after
// a takeover, not a full duration after it.
func TestTimerKeepsFireTime(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Sleeper", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		start := ctx.CurrentTime()
		if err := ctx.CreateTimer(5 * time.Second).Await(nil); err != nil {
			return nil, err
		}
		return map[string]time.Time{"start": start, "fired": ctx.CurrentTime()}, nil
	})
	c := newCluster(t, 3, 2*time.Second, reg)
	cl := c.client()
	begin := time.Now()
	if _, err := cl.Start(context.Background(), "Sleeper", orchestrator.StartOptions{InstanceID: "timer"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "timer created", func() bool {
		return historyCount(t, cl, "timer", orchestrator.EventTimerCreated) == 1
	})
	crashHolder(t, c, "timer")
	st := waitStatus(t, cl, "timer", orchestrator.StatusCompleted, 15*time.Second)
	took := time.Since(begin)
	t.Logf("5s timer with a takeover in between completed after %v", took.Round(time.Millisecond))
	if took > 7500*time.Millisecond {
		t.Fatalf("timer restarted on takeover: completed after %v", took)
	}
	var out map[string]time.Time
	_ = json.Unmarshal(st.Output, &out)
	if d := out["fired"].Sub(out["start"]); d < 5*time.Second {
		t.Fatalf("timer fired %v after its start, before its time", d)
	}
}

// TestTakeoverEventDeliveredOnce: an event consumed before the takeover is
// not delivered again; one raised during the takeover is delivered once.
func TestTakeoverEventDeliveredOnce(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Use", orchestrator.Activity(func(ctx context.Context, s string) (string, error) {
		fx.record(ctx, s)
		return s, nil
	}))
	_ = reg.AddOrchestrator("Events", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var got []string
		for _, name := range []string{"first", "second"} {
			var s string
			if err := ctx.WaitForExternalEvent(name, 0).Await(&s); err != nil {
				return nil, err
			}
			if err := ctx.CallActivity("Use", s).Await(&s); err != nil {
				return nil, err
			}
			got = append(got, s)
		}
		return got, nil
	})
	c := newCluster(t, 3, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Events", orchestrator.StartOptions{InstanceID: "ev"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "ev", orchestrator.StatusRunning, 10*time.Second)
	if err := cl.RaiseEvent(context.Background(), "ev", "first", json.RawMessage(`"a"`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first used", func() bool {
		return historyCount(t, cl, "ev", orchestrator.EventTaskCompleted) == 1
	})
	victim := holderOf(c, "ev")
	_ = victim.etcd.Close()
	if err := cl.RaiseEvent(context.Background(), "ev", "second", json.RawMessage(`"b"`)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "ev", orchestrator.StatusCompleted, 15*time.Second)
	if string(st.Output) != `["a","b"]` {
		t.Fatalf("output %s", st.Output)
	}
	if fx.count("a") != 1 || fx.count("b") != 1 {
		t.Fatalf("activity ran a:%d b:%d times, want 1 each", fx.count("a"), fx.count("b"))
	}
	if n := historyCount(t, cl, "ev", orchestrator.EventEventRaised); n != 2 {
		t.Fatalf("history holds %d EventRaised, want 2", n)
	}
}

// TestEternalAcrossTakeovers: an orchestration that continues as new runs
// every generation, across a takeover, and completes.
func TestEternalAcrossTakeovers(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Tick", orchestrator.Activity(func(ctx context.Context, n int) (int, error) {
		fx.record(ctx, fmt.Sprint(n))
		return n, nil
	}))
	_ = reg.AddOrchestrator("Countdown", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var in struct {
			N     int   `json:"n"`
			Ticks []int `json:"ticks"`
		}
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		if in.N == 0 {
			return in.Ticks, nil
		}
		var n int
		if err := ctx.CallActivity("Tick", in.N).Await(&n); err != nil {
			return nil, err
		}
		if err := ctx.CreateTimer(300 * time.Millisecond).Await(nil); err != nil {
			return nil, err
		}
		in.Ticks = append(in.Ticks, n)
		in.N--
		ctx.ContinueAsNew(in)
		return nil, nil
	})
	c := newCluster(t, 3, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Countdown", orchestrator.StartOptions{InstanceID: "cd", Input: json.RawMessage(`{"n":8}`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a few generations", func() bool { return fx.count("6") >= 1 })
	eventually(t, 5*time.Second, "a holder", func() bool { return holderOf(c, "cd") != nil })
	crashHolder(t, c, "cd")
	st := waitStatus(t, cl, "cd", orchestrator.StatusCompleted, 30*time.Second)
	if string(st.Output) != "[8,7,6,5,4,3,2,1]" {
		t.Fatalf("output %s", st.Output)
	}
	again := 0
	for n := 1; n <= 8; n++ {
		switch got := fx.count(fmt.Sprint(n)); {
		case got == 2:
			again++
		case got != 1:
			t.Errorf("tick %d ran %d times", n, got)
		}
	}
	if again > 1 {
		t.Errorf("%d ticks ran twice; at most the one in flight may", again)
	}
}
