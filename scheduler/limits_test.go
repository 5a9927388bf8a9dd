package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// These tests hold Soloist at etcd's own limits (a request is at most 1.5
// MiB, a transaction at most 128 operations): every step must fit by
// construction, an instance that cannot run must not loop hot, and a
// broken watch must not end a run.

// campaignsWon sums soloist_campaigns_total{result="won"} over the nodes.
func (c *cluster) campaignsWon() float64 {
	var n float64
	for _, tn := range c.nodes {
		n += tn.counter("soloist_campaigns_total", "result", "won")
	}
	return n
}

// runCounts counts activity runs by key.
type runCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runCounts) add(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[k]++
}

func (r *runCounts) get(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[k]
}

// A fan-out of 8 activities with 200 KiB inputs each (1.6 MB in all, over
// etcd's 1.5 MiB request limit, every input under --max-payload) completes
// with each activity run once and one campaign: the large inputs go to
// blobs written before the step that refers to them.
func TestFanOutBeyondRequestLimit(t *testing.T) {
	t.Parallel()
	var runs runCounts
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Big", orchestrator.Activity(func(ctx context.Context, in string) (int, error) {
		runs.add(in[:1])
		return len(in), nil
	}))
	_ = reg.AddOrchestrator("FanOut", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var tasks []*orchestrator.Task
		for i := 0; i < 8; i++ {
			tasks = append(tasks, ctx.CallActivity("Big", fmt.Sprint(i)+strings.Repeat("x", 200<<10)))
		}
		total := 0
		for _, t := range tasks {
			var n int
			if err := t.Await(&n); err != nil {
				return nil, err
			}
			total += n
		}
		return total, nil
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "FanOut", orchestrator.StartOptions{InstanceID: "fan"}); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "fan", orchestrator.StatusCompleted, 20*time.Second)
	if string(st.Output) != fmt.Sprint(8*(1+200<<10)) {
		t.Fatalf("output %s", st.Output)
	}
	for i := 0; i < 8; i++ {
		if n := runs.get(fmt.Sprint(i)); n != 1 {
			t.Errorf("activity %d ran %d times, want once", i, n)
		}
	}
	if won := c.campaignsWon(); won != 1 {
		t.Errorf("campaigns won %v, want 1 (a step that does not fit must not make the instance bounce)", won)
	}
	// The history reads back whole, large inputs included.
	h, err := cl.History(context.Background(), "fan", "")
	if err != nil {
		t.Fatal(err)
	}
	scheduled := 0
	for _, ev := range h {
		if ev.EventType == orchestrator.EventTaskScheduled && len(ev.Input) > 200<<10 {
			scheduled++
		}
	}
	if scheduled != 8 {
		t.Fatalf("history shows %d scheduled activities with their 200 KiB input, want 8", scheduled)
	}
}

// 130 events raised before the orchestration runs (etcd allows 128
// operations in one transaction) are all delivered, once each, with one
// campaign.
func TestManyBufferedEvents(t *testing.T) {
	t.Parallel()
	const n = 130
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Collect", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		sum := 0
		for i := 0; i < n; i++ {
			var v int
			if err := ctx.WaitForExternalEvent("e", 0).Await(&v); err != nil {
				return nil, err
			}
			sum += v
		}
		return sum, nil
	})
	c := newCluster(t, 0, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Collect", orchestrator.StartOptions{InstanceID: "many"}); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 1; i <= n; i++ {
		want += i
		if err := cl.RaiseEvent(context.Background(), "many", "e", json.RawMessage(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.addNode("node-0") // only now does a node run it, with 130 events waiting
	st := waitStatus(t, cl, "many", orchestrator.StatusCompleted, 20*time.Second)
	if string(st.Output) != fmt.Sprint(want) {
		t.Fatalf("output %s, want %d", st.Output, want)
	}
	if won := c.campaignsWon(); won != 1 {
		t.Errorf("campaigns won %v, want 1", won)
	}
	if got := historyCount(t, cl, "many", orchestrator.EventEventRaised); got != n {
		t.Errorf("history has %d EventRaised, want %d", got, n)
	}
}

// ContinueAsNew carrying 7 events of 250 KiB that the code received into
// its buffer but never awaited (1.75 MB): the next generation gets them.
func TestContinueAsNewCarriesLargeEvents(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Gen", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var gen int
		_ = ctx.GetInput(&gen)
		if gen == 0 {
			// Wait for the go signal; the big events arrive first and
			// are buffered, not awaited.
			if err := ctx.WaitForExternalEvent("go", 0).Await(nil); err != nil {
				return nil, err
			}
			ctx.ContinueAsNew(1)
			return nil, nil
		}
		total := 0
		for i := 0; i < 7; i++ {
			var s string
			if err := ctx.WaitForExternalEvent("big", 0).Await(&s); err != nil {
				return nil, err
			}
			total += len(s)
		}
		return total, nil
	})
	c := newCluster(t, 1, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Gen", orchestrator.StartOptions{InstanceID: "gen", Input: json.RawMessage("0")}); err != nil {
		t.Fatal(err)
	}
	big, _ := json.Marshal(strings.Repeat("b", 250<<10))
	for i := 0; i < 7; i++ {
		if err := cl.RaiseEvent(context.Background(), "gen", "big", big); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.RaiseEvent(context.Background(), "gen", "go", nil); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "gen", orchestrator.StatusCompleted, 20*time.Second)
	if string(st.Output) != fmt.Sprint(7*250<<10) {
		t.Fatalf("output %s", st.Output)
	}
	if won := c.campaignsWon(); won != 2 {
		t.Errorf("campaigns won %v, want 2 (one per generation)", won)
	}
}

// An instance that cannot run (here its history key is corrupt) stays
// with the node that took it and is retried with a growing backoff: no
// hot loop of campaigns, releases and replays.
func TestFailingRunBacksOff(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.WaitForExternalEvent("never", 0).Await(nil)
	})
	c := newCluster(t, 2, 5*time.Second, reg)
	cl := c.client()
	r, err := cl.Start(context.Background(), "Wait", orchestrator.StartOptions{InstanceID: "bad"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first run", func() bool { return holderOf(c, "bad") != nil })
	holder := holderOf(c, "bad")
	// Break the instance, then make its holder read it again.
	raw := c.e.Client()
	if _, err := raw.Put(context.Background(), cl.Keys().History("bad", r.Status.ExecutionID)+"0000000001", "not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(context.Background(), cl.Keys().Owner("bad")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the window whose campaigns are counted
	won := c.campaignsWon()
	var retries float64
	for _, n := range c.nodes {
		retries += n.counter("soloist_run_retries_total")
	}
	t.Logf("in 3 s with a corrupt history: %v campaigns won, %v run retries (holder %s)", won, retries, holder.ID())
	if won > 3 {
		t.Fatalf("%v campaigns in 3 s for an instance that cannot run: a hot loop", won)
	}
	if retries < 1 || retries > 8 {
		t.Fatalf("%v run retries in 3 s, want a few with a growing backoff", retries)
	}
}

// A broken watch after a compaction ends no run: instances waiting on
// events keep their owners keys and receive events raised afterwards.
func TestWatchBreakAfterCompactionKeepsRuns(t *testing.T) {
	t.Parallel()
	const n = 20
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v string
		err := ctx.WaitForExternalEvent("go", 0).Await(&v)
		return v, err
	})
	c := newCluster(t, 0, 10*time.Second, reg)
	p := newProxy(t, c.e)
	c.endpoints = []string{p.URL()}
	c.addNode("node-0")
	cl := c.client()
	for i := 0; i < n; i++ {
		if _, err := cl.Start(context.Background(), "Wait", orchestrator.StartOptions{InstanceID: fmt.Sprintf("w%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "all held", func() bool { return len(c.nodes[0].Held()) == n })
	raw := c.e.Client()
	tokens := map[string]int64{}
	for i := 0; i < n; i++ {
		st, err := cl.Status(context.Background(), fmt.Sprintf("w%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		tokens[st.InstanceID] = st.FencingToken
	}
	// Write, compact everything, and cut the node's connections so that
	// every watch breaks and resumes past a compacted revision.
	for i := 0; i < 50; i++ {
		if _, err := raw.Put(context.Background(), c.prefix+"noise", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := raw.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	p.Heal() // closes every connection: watches break
	time.Sleep(500 * time.Millisecond)
	if held := len(c.nodes[0].Held()); held != n {
		t.Fatalf("%d of %d runs left after the watch broke", held, n)
	}
	for i := 0; i < n; i++ {
		if err := cl.RaiseEvent(context.Background(), fmt.Sprintf("w%02d", i), "go", json.RawMessage(`"ok"`)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("w%02d", i)
		st := waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second)
		if st.FencingToken != tokens[id] {
			t.Errorf("%s completed with token %d, held with %d before: its owners key changed", id, st.FencingToken, tokens[id])
		}
	}
	if won := c.campaignsWon(); won != n {
		t.Errorf("campaigns won %v, want %d: a run ended and was taken again", won, n)
	}
}

// Events raised to a busy instance (its holder commits a step every few
// milliseconds) are all accepted at once: raising an event does not
// compare the record its holder keeps rewriting.
func TestRaiseEventOnBusyInstance(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Tick", orchestrator.Activity(func(ctx context.Context, _ any) (int, error) { return 1, nil }))
	_ = reg.AddOrchestrator("Busy", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		got := 0
		stop := ctx.WaitForExternalEvent("stop", 0)
		for !stop.Done() {
			if err := ctx.CallActivity("Tick", nil).Await(nil); err != nil {
				return nil, err
			}
			got++
		}
		return got, nil
	})
	c := newCluster(t, 1, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Busy", orchestrator.StartOptions{InstanceID: "busy"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "busy", func() bool { return historyCount(t, cl, "busy", orchestrator.EventTaskCompleted) > 20 })
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cl.RaiseEvent(context.Background(), "busy", "noise", nil); err != nil {
				failed.Add(1)
				t.Errorf("RaiseEvent on a busy instance: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := cl.RaiseEvent(context.Background(), "busy", "stop", nil); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "busy", orchestrator.StatusCompleted, 10*time.Second)
	if failed.Load() != 0 {
		t.Fatalf("%d of 100 events refused", failed.Load())
	}
}

// Events raised while suspended: none is consumed before the resume, all
// are consumed in arrival order after it, and the history records them
// where they arrived, between ExecutionSuspended and ExecutionResumed (the
// Durable Task backends' order).
func TestResumeRecordedWhenEventsFinish(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("One", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var got []int
		for range 10 {
			var n int
			if err := ctx.WaitForExternalEvent("e", 0).Await(&n); err != nil {
				return nil, err
			}
			got = append(got, n)
		}
		return got, nil
	})
	c := newCluster(t, 1, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "One", orchestrator.StartOptions{InstanceID: "sr"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "running", func() bool { return holderOf(c, "sr") != nil })
	if _, err := cl.Suspend(context.Background(), "sr", "pause"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "released", func() bool { return holderOf(c, "sr") == nil })
	for i := range 10 {
		if err := cl.RaiseEvent(context.Background(), "sr", "e", json.RawMessage(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if h, err := cl.History(context.Background(), "sr", ""); err != nil || len(h) > 1 {
		t.Fatalf("while suspended the history is %d events (%v), want at most ExecutionStarted", len(h), err)
	}
	if _, err := cl.Resume(context.Background(), "sr", "go on"); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "sr", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != "[0,1,2,3,4,5,6,7,8,9]" {
		t.Fatalf("output %s, want the 10 events in arrival order", st.Output)
	}
	h, err := cl.History(context.Background(), "sr", "")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range h {
		types = append(types, string(ev.EventType))
	}
	want := "ExecutionStarted ExecutionSuspended" + strings.Repeat(" EventRaised", 10) + " ExecutionResumed ExecutionCompleted"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
}

// Durable retries: an activity that always fails, with MaxAttempts 3, runs
// exactly 3 times in all although its holder is lost between attempts.
func TestDurableRetriesAcrossTakeover(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Fail", orchestrator.Activity(func(ctx context.Context, _ any) (any, error) {
		calls.Add(1)
		return nil, errors.New("always")
	}))
	_ = reg.AddOrchestrator("Retry", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.CallActivity("Fail", nil, orchestrator.WithRetry(orchestrator.RetryPolicy{
			MaxAttempts: 3, FirstInterval: 1500 * time.Millisecond, BackoffCoefficient: 1})).Await(nil)
	})
	c := newCluster(t, 2, 2*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Retry", orchestrator.StartOptions{InstanceID: "dr"}); err != nil {
		t.Fatal(err)
	}
	// Crash during the wait before the second attempt, once the first
	// attempt's failure is committed (an attempt in flight at a crash runs
	// again: at least once).
	eventually(t, 10*time.Second, "first attempt failed", func() bool { return historyCount(t, cl, "dr", orchestrator.EventTaskFailed) == 1 })
	crashHolder(t, c, "dr")
	st := waitStatus(t, cl, "dr", orchestrator.StatusFailed, 20*time.Second)
	if n := calls.Load(); n != 3 {
		t.Fatalf("the activity ran %d times, want exactly 3 (MaxAttempts) across the takeover", n)
	}
	if n := historyCount(t, cl, "dr", orchestrator.EventTaskScheduled); n != 3 {
		t.Fatalf("history has %d attempts scheduled, want 3", n)
	}
	if !strings.Contains(string(st.Output), "after 3 attempts") {
		t.Fatalf("output %s", st.Output)
	}
}

// Retention purges finished instances older than it (with their history),
// and nothing active.
func TestRetentionPurges(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Quick", func(ctx *orchestrator.OrchestrationContext) (any, error) { return 1, nil })
	_ = reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, ctx.WaitForExternalEvent("never", 0).Await(nil)
	})
	c := newCluster(t, 0, 5*time.Second, reg)
	c.configure = func(cfg *scheduler.Config) { cfg.Retention = 2 * time.Second }
	c.addNode("node-0")
	c.addNode("node-1")
	cl := c.client()
	for _, id := range []string{"q1", "q2"} {
		if _, err := cl.Start(context.Background(), "Quick", orchestrator.StartOptions{InstanceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Start(context.Background(), "Wait", orchestrator.StartOptions{InstanceID: "alive"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "q1", orchestrator.StatusCompleted, 10*time.Second)
	eventually(t, 10*time.Second, "finished instances purged", func() bool {
		_, e1 := cl.Status(context.Background(), "q1")
		_, e2 := cl.Status(context.Background(), "q2")
		return errors.Is(e1, orchestrator.ErrInstanceNotFound) && errors.Is(e2, orchestrator.ErrInstanceNotFound)
	})
	if _, err := cl.Status(context.Background(), "alive"); err != nil {
		t.Fatalf("an active instance was purged: %v", err)
	}
	resp, err := c.e.Client().Get(context.Background(), c.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/q1") || strings.Contains(string(kv.Key), "/q2") {
			t.Errorf("key left after the purge: %s", kv.Key)
		}
	}
	var purged float64
	for _, n := range c.nodes {
		purged += n.counter("soloist_retention_purged_total")
	}
	if purged != 2 {
		t.Errorf("soloist_retention_purged_total sums to %v over the nodes, want 2 (each purged once)", purged)
	}
}

// ContinueAsNew with 130 events raised and not yet consumed (the old
// executor carried each in an operation of its own, past etcd's 128 per
// transaction): the next generation gets all of them.
func TestContinueAsNewCarriesManyEvents(t *testing.T) {
	t.Parallel()
	const n = 130
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Gen", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var gen int
		_ = ctx.GetInput(&gen)
		if gen == 0 {
			if err := ctx.WaitForExternalEvent("go", 0).Await(nil); err != nil {
				return nil, err
			}
			ctx.ContinueAsNew(1)
			return nil, nil
		}
		sum := 0
		for i := 0; i < n; i++ {
			var v int
			if err := ctx.WaitForExternalEvent("item", 0).Await(&v); err != nil {
				return nil, err
			}
			sum += v
		}
		return sum, nil
	})
	c := newCluster(t, 0, 5*time.Second, reg)
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Gen", orchestrator.StartOptions{InstanceID: "gen", Input: json.RawMessage("0")}); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 1; i <= n; i++ {
		want += i
		if err := cl.RaiseEvent(context.Background(), "gen", "item", json.RawMessage(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.RaiseEvent(context.Background(), "gen", "go", nil); err != nil {
		t.Fatal(err)
	}
	c.addNode("node-0")
	st := waitStatus(t, cl, "gen", orchestrator.StatusCompleted, 20*time.Second)
	if string(st.Output) != fmt.Sprint(want) {
		t.Fatalf("output %s, want %d", st.Output, want)
	}
	if won := c.campaignsWon(); won != 2 {
		t.Errorf("campaigns won %v, want 2 (one per generation)", won)
	}
}

// A campaign whose acquire applies late: within the campaign's 5 s it is
// found by reading on, and the instance runs on that holding; after it,
// the campaign has failed and is tried again after a backoff (the late
// write then fails its compare, or, had it won, the session would delete
// the untracked key on its lease - lease tests show that). Either way the
// instance runs, instead of staying Pending for as long as the node lives.
func TestAcquireAppliedLate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		delay   time.Duration
		orphans float64
	}{{300 * time.Millisecond, 0}, {6 * time.Second, -1}} {
		t.Run(c.delay.String(), func(t *testing.T) {
			t.Parallel()
			testAcquireAppliedLate(t, c.delay, c.orphans)
		})
	}
}

func testAcquireAppliedLate(t *testing.T, delay time.Duration, orphans float64) {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Quick", func(ctx *orchestrator.OrchestrationContext) (any, error) { return "done", nil })
	c := newCluster(t, 0, 10*time.Second, reg)
	var late *leasetest.LateTxns
	c.prepare = func(cli *clientv3.Client) { late = leasetest.NewLateTxns(cli, delay) }
	tn := c.addNode("node-0")
	applied := late.Arm(1, func(ops []clientv3.Op) bool {
		for _, op := range ops {
			if op.IsPut() && strings.Contains(string(op.KeyBytes()), "/owners/") {
				return true
			}
		}
		return false
	})
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Quick", orchestrator.StartOptions{InstanceID: "late"}); err != nil {
		t.Fatal(err)
	}
	<-applied
	st := waitStatus(t, cl, "late", orchestrator.StatusCompleted, 15*time.Second)
	if string(st.Output) != `"done"` {
		t.Fatalf("output %s", st.Output)
	}
	if n := tn.counter("soloist_orphan_owner_keys_total"); orphans >= 0 && n != orphans {
		t.Fatalf("orphan owners keys deleted: %v, want %v", n, orphans)
	}
	late.Wait()
	eventually(t, 5*time.Second, "no owners key left", func() bool {
		resp, err := c.e.Client().Get(context.Background(), cl.Keys().Owner("late"))
		return err == nil && len(resp.Kvs) == 0
	})
}

// A write refused with NOSPACE that the node hears of from outside (the
// HTTP API's) makes it unready at once; with no alarm actually raised in
// etcd, its next alarm check (kicked by the refusal) makes it ready again.
func TestObserveStoreErrorNoSpace(t *testing.T) {
	t.Parallel()
	c := &cluster{t: t, e: leasetest.Start(t), prefix: "/" + t.Name() + "/", reg: orchestrator.NewRegistry(), ttl: 2 * time.Second,
		configure: func(cfg *scheduler.Config) { cfg.AlarmInterval = 300 * time.Millisecond }}
	n := c.addNode("n")
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	n.ObserveStoreError(fmt.Errorf("%w: etcd unavailable", orchestrator.ErrUnavailable))
	if err := n.Ready(); err != nil {
		t.Fatalf("an unavailable store made the node unready: %v", err)
	}
	n.ObserveStoreError(orchestrator.ClassifyError(rpctypes.ErrNoSpace))
	if err := n.Ready(); !errors.Is(err, orchestrator.ErrNoSpace) {
		t.Fatalf("Ready after a NOSPACE refusal = %v, want ErrNoSpace", err)
	}
	eventually(t, 5*time.Second, "ready again (etcd has no alarm)", func() bool { return n.Ready() == nil })
}
