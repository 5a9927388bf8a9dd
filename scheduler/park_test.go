package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// These tests hold parked runs (Config.ParkAfter) to the promise of any
// run: an orchestration that waited long enough to be dropped from memory
// goes on exactly as if it had stayed, whatever wakes it (an event, its
// timer), however events race its parking, and whoever holds it next.

// parkCluster is a cluster of n nodes that park runs idle for parkAfter.
func parkCluster(t *testing.T, n int, parkAfter time.Duration, reg *orchestrator.Registry) *cluster {
	t.Helper()
	c := &cluster{t: t, e: leasetest.Start(t), prefix: "/" + t.Name() + "/", reg: reg, ttl: 2 * time.Second,
		configure: func(cfg *scheduler.Config) { cfg.ParkAfter = parkAfter }}
	for i := 0; i < n; i++ {
		c.addNode(fmt.Sprintf("node-%d", i))
	}
	return c
}

// collectRegistry has Collect: it runs the activity Once, then waits for
// input.N events "e" (no timeout) and returns their data in the order it
// received them.
func collectRegistry(fx *effects) *orchestrator.Registry {
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Once", orchestrator.Activity(func(ctx context.Context, in string) (string, error) {
		fx.record(ctx, in)
		return in, nil
	}))
	_ = reg.AddOrchestrator("Collect", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var in struct{ N int }
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("Once", ctx.InstanceID()).Await(nil); err != nil {
			return nil, err
		}
		got := []int{}
		for i := 0; i < in.N; i++ {
			var v int
			if err := ctx.WaitForExternalEvent("e", 0).Await(&v); err != nil {
				return nil, err
			}
			got = append(got, v)
		}
		return got, nil
	})
	_ = reg.AddOrchestrator("Nap", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		if err := ctx.CreateTimer(1500 * time.Millisecond).Await(nil); err != nil {
			return nil, err
		}
		return "rested", nil
	})
	return reg
}

func startCollect(t *testing.T, cl *orchestrator.Client, id string, n int) {
	t.Helper()
	if _, err := cl.Start(context.Background(), "Collect", orchestrator.StartOptions{InstanceID: id, Input: json.RawMessage(fmt.Sprintf(`{"N":%d}`, n))}); err != nil {
		t.Fatal(err)
	}
}

func raise(t *testing.T, cl *orchestrator.Client, id string, v int) {
	t.Helper()
	if err := cl.RaiseEvent(context.Background(), id, "e", json.RawMessage(fmt.Sprint(v))); err != nil {
		t.Error(err)
	}
}

func parkedOn(n *testNode) float64 { return n.counter("soloist_instances_parked") }

func outputInts(t *testing.T, st *orchestrator.Status) []int {
	t.Helper()
	var got []int
	if err := json.Unmarshal(st.Output, &got); err != nil {
		t.Fatalf("output %s: %v", st.Output, err)
	}
	return got
}

// A run idle for ParkAfter is parked (held, counted, no driver), and each
// event wakes it: it replays from etcd, takes the event, parks again, and
// finally completes with every event once and its activity run once.
func TestParkedRunWakesOnEvents(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	c := parkCluster(t, 1, 100*time.Millisecond, collectRegistry(fx))
	wakesOnThreeEvents(t, c, fx, "p", "parked", parkedOn)
}

// wakesOnThreeEvents starts a Collect of three events as id on c's one
// node and raises each once the run waits as waiting counts it (parked or
// unloaded, named state), and still held: each wakes it, and it completes
// with every event once and its activity run once, leaving nothing
// waiting or held.
func wakesOnThreeEvents(t *testing.T, c *cluster, fx *effects, id, state string, waiting func(*testNode) float64) {
	t.Helper()
	n := c.nodes[0]
	cl := c.client()
	startCollect(t, cl, id, 3)
	for i := 1; i <= 3; i++ {
		eventually(t, 10*time.Second, fmt.Sprintf("%s before event %d", state, i), func() bool { return waiting(n) == 1 })
		if h := n.Held(); len(h) != 1 || h[0] != id {
			t.Fatalf("a %s run is still held: Held() = %v", state, h)
		}
		raise(t, cl, id, i)
		eventually(t, 10*time.Second, fmt.Sprintf("woken by event %d", i), func() bool {
			return n.counter("soloist_run_wakes_total", "reason", "event") >= float64(i)
		})
	}
	st := waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second)
	if got := outputInts(t, st); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("output %v, want [1 2 3]", got)
	}
	if k := fx.count(id); k != 1 {
		t.Fatalf("activity ran %d times across %s waits, want 1", k, state)
	}
	if k := historyCount(t, cl, id, orchestrator.EventEventRaised); k != 3 {
		t.Fatalf("history has %d EventRaised, want 3", k)
	}
	eventually(t, 5*time.Second, "nothing "+state+" or held", func() bool { return waiting(n) == 0 && len(n.Held()) == 0 })
}

// Events raised while the run parks, wakes and parks again (ParkAfter 1ms,
// four writers with random gaps, some long enough to park in): every event
// is received exactly once.
func TestParkedRunRacesEvents(t *testing.T) {
	t.Parallel()
	const total = 120
	c := parkCluster(t, 1, time.Millisecond, collectRegistry(newEffects()))
	cl := c.client()
	startCollect(t, cl, "race", total)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 4 {
				gap := time.Duration(rand.IntN(4000)) * time.Microsecond
				if rand.IntN(8) == 0 {
					gap = 30 * time.Millisecond // time to park, now and then
				}
				time.Sleep(gap)
				raise(t, cl, "race", i)
			}
		}()
	}
	wg.Wait()
	st := waitStatus(t, cl, "race", orchestrator.StatusCompleted, 60*time.Second)
	got := outputInts(t, st)
	sort.Ints(got)
	for i, v := range got {
		if v != i {
			t.Fatalf("received %v; want each of 0..%d once", got, total-1)
		}
	}
	if len(got) != total {
		t.Fatalf("received %d events, want %d", len(got), total)
	}
	if w := c.nodes[0].counter("soloist_run_wakes_total"); w == 0 {
		t.Fatal("the run never parked: the test did not test parking")
	}
}

// A parked run waiting on a durable timer is woken by it, on time.
func TestParkedRunWakesOnTimer(t *testing.T) {
	t.Parallel()
	c := parkCluster(t, 1, 100*time.Millisecond, collectRegistry(newEffects()))
	n := c.nodes[0]
	cl := c.client()
	began := time.Now()
	if _, err := cl.Start(context.Background(), "Nap", orchestrator.StartOptions{InstanceID: "nap"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "parked", func() bool { return parkedOn(n) == 1 })
	st := waitStatus(t, cl, "nap", orchestrator.StatusCompleted, 10*time.Second)
	if took := time.Since(began); took < 1500*time.Millisecond {
		t.Fatalf("completed after %v, before its 1.5s timer", took)
	}
	if string(st.Output) != `"rested"` {
		t.Fatalf("output %s", st.Output)
	}
	if w := n.counter("soloist_run_wakes_total", "reason", "timer"); w != 1 {
		t.Fatalf("timer wakes %v, want 1", w)
	}
}

// A parked run's holder dies: the next holder takes it over (it replays
// like any other), parks it in turn, and the instance completes with its
// activity run once.
func TestParkedRunTakenOver(t *testing.T) {
	t.Parallel()
	fx := newEffects()
	c := parkCluster(t, 2, 100*time.Millisecond, collectRegistry(fx))
	cl := c.client()
	startCollect(t, cl, "moved", 2)
	eventually(t, 10*time.Second, "held", func() bool { return holderOf(c, "moved") != nil })
	first := holderOf(c, "moved")
	raise(t, cl, "moved", 7)
	eventually(t, 10*time.Second, "parked after the first event", func() bool {
		return parkedOn(first) == 1 && historyCount(t, cl, "moved", orchestrator.EventEventRaised) == 1
	})
	victim := crashHolder(t, c, "moved")
	// crashHolder may return on the larger token in etcd before the new
	// holder lists the instance, and the victim may still list it until
	// its safe-until: wait for the other node.
	var next *testNode
	eventually(t, 10*time.Second, "held by the other node", func() bool {
		for _, n := range c.nodes {
			if n != victim && slices.Contains(n.Held(), "moved") {
				next = n
				return true
			}
		}
		return false
	})
	eventually(t, 10*time.Second, "parked on the next holder", func() bool { return parkedOn(next) == 1 })
	raise(t, cl, "moved", 8)
	st := waitStatus(t, cl, "moved", orchestrator.StatusCompleted, 10*time.Second)
	if got := outputInts(t, st); fmt.Sprint(got) != "[7 8]" {
		t.Fatalf("output %v, want [7 8]", got)
	}
	if k := fx.count("moved"); k != 1 {
		t.Fatalf("activity ran %d times, want 1", k)
	}
}

// Terminating a parked instance ends its holding; draining a node hands
// its parked instances over at once.
func TestParkedRunTerminatedAndHandedOff(t *testing.T) {
	t.Parallel()
	c := parkCluster(t, 1, 100*time.Millisecond, collectRegistry(newEffects()))
	n := c.nodes[0]
	cl := c.client()
	startCollect(t, cl, "a", 1)
	startCollect(t, cl, "b", 1)
	eventually(t, 10*time.Second, "both parked", func() bool { return parkedOn(n) == 2 })
	if _, err := cl.Terminate(context.Background(), "a", "test"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "a", orchestrator.StatusTerminated, 10*time.Second)
	eventually(t, 5*time.Second, "a released", func() bool { return len(n.Held()) == 1 && parkedOn(n) == 1 })
	peer := c.addNode("node-peer")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if p := parkedOn(n); p != 0 {
		t.Fatalf("drained node still counts %v parked", p)
	}
	eventually(t, 5*time.Second, "b handed off", func() bool { return holderOf(c, "b") == peer })
	if h := peer.counter("soloist_handoffs_total"); h != 1 {
		t.Fatalf("peer counted %v handoffs, want 1", h)
	}
	raise(t, cl, "b", 5)
	st := waitStatus(t, cl, "b", orchestrator.StatusCompleted, 10*time.Second)
	if got := outputInts(t, st); fmt.Sprint(got) != "[5]" {
		t.Fatalf("output %v", got)
	}
}

// Every metric a node registers is in the contract (docs/contract.md
// section 7) and in the Metrics section of docs/operations.md, so neither
// falls behind.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	c := parkCluster(t, 1, 0, orchestrator.NewRegistry())
	mfs, err := c.nodes[0].reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	contract, err := os.ReadFile("../docs/contract.md")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(ops), "\n## Metrics\n")
	if !ok {
		t.Fatal(`docs/operations.md has no "## Metrics" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	if len(mfs) < 10 {
		t.Fatalf("gathered only %d metrics", len(mfs))
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.Contains(string(contract), "`"+name+"`") {
			t.Errorf("%s is not in docs/contract.md section 7", name)
		}
		if short := strings.TrimPrefix(name, "soloist_"); !strings.Contains(section, "`"+short) {
			t.Errorf("%s is not in the Metrics section of docs/operations.md (as `%s`)", name, short)
		}
	}
}

// A run idle for a second is unloaded before it parks (its goroutine
// ends, its history stays in memory, counted apart from parked runs), and
// each event wakes it from memory: it completes with every event once and
// its activity run once. Past ParkAfter the unloaded run parks.
func TestUnloadedRunWakesOnEvents(t *testing.T) {
	t.Parallel()
	unloadedOn := func(n *testNode) float64 { return n.counter("soloist_instances_unloaded") }
	for _, parkAfter := range []time.Duration{-1, 3 * time.Second} {
		t.Run(fmt.Sprint(parkAfter), func(t *testing.T) {
			t.Parallel()
			fx := newEffects()
			c := parkCluster(t, 1, parkAfter, collectRegistry(fx))
			n := c.nodes[0]
			cl := c.client()
			wakesOnThreeEvents(t, c, fx, "u", "unloaded", unloadedOn)
			if parkAfter < 0 {
				if p := parkedOn(n); p != 0 {
					t.Fatalf("%v parked with ParkAfter < 0", p)
				}
				return
			}
			// Left waiting, the unloaded run parks after ParkAfter.
			startCollect(t, cl, "v", 1)
			eventually(t, 10*time.Second, "unloaded", func() bool { return unloadedOn(n) == 1 })
			eventually(t, 10*time.Second, "parked after ParkAfter", func() bool { return parkedOn(n) == 1 && unloadedOn(n) == 0 })
			raise(t, cl, "v", 7)
			st := waitStatus(t, cl, "v", orchestrator.StatusCompleted, 10*time.Second)
			if got := outputInts(t, st); fmt.Sprint(got) != "[7]" {
				t.Fatalf("output %v, want [7]", got)
			}
		})
	}
}
