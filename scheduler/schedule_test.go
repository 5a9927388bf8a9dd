package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// schedRun is one run of a scheduled function on one node.
type schedRun struct {
	node, exec string
	token      int64
	start, end time.Time
}

// schedRecorder records every run of "Slow" and every write of the
// schedule's state key.
type schedRecorder struct {
	mu     sync.Mutex
	runs   []*schedRun
	states []stateWrite
}

type stateWrite struct {
	orchestrator.ScheduleState
	rev int64
}

// registryFor gives each node its own registry whose "Slow" records the
// node, the token and the run's start and end, and takes d.
func (r *schedRecorder) registryFor(node string, d time.Duration) *orchestrator.Registry {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Slow", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		run := &schedRun{node: node, exec: ctx.ExecutionID(), token: ctx.FencingToken(), start: time.Now()}
		r.mu.Lock()
		r.runs = append(r.runs, run)
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			run.end = time.Now()
			r.mu.Unlock()
		}()
		select {
		case <-time.After(d):
			return "ok", nil
		case <-ctx.Context().Done():
			return nil, context.Cause(ctx.Context())
		}
	})
	return reg
}

// watchState records every write of key from now on, until the test ends.
func (r *schedRecorder) watchState(t *testing.T, cli *clientv3.Client, key string) (stop func()) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wch := cli.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wr := range wch {
			for _, ev := range wr.Events {
				var s orchestrator.ScheduleState
				if ev.Type != clientv3.EventTypePut || json.Unmarshal(ev.Kv.Value, &s) != nil {
					t.Errorf("unexpected change of %s: %v %q", key, ev.Type, ev.Kv.Value)
					continue
				}
				r.mu.Lock()
				r.states = append(r.states, stateWrite{s, ev.Kv.ModRevision})
				r.mu.Unlock()
			}
		}
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// caughtUp waits until the watch has recorded the state key's latest write.
func (r *schedRecorder) caughtUp(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("read %s: %v (%d keys)", key, err, len(resp.Kvs))
	}
	rev := resp.Kvs[0].ModRevision
	eventually(t, 5*time.Second, "the watch to catch up", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.states) > 0 && r.states[len(r.states)-1].rev >= rev
	})
}

func (r *schedRecorder) stateCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

// check verifies the recorded history: every state write moves to a later
// tick (no tick claimed twice), every started tick has its own execution,
// a skip names the execution still active, every run belongs to a started
// tick, and no two runs overlap in time. It counts the ticks started,
// skipped, and claimed by nobody between the first and the last claimed.
func (r *schedRecorder) check(t *testing.T, period time.Duration) (started, skipped, missed int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	tickOf := map[string]time.Time{}
	active := ""
	for i, s := range r.states {
		if i > 0 {
			prev := r.states[i-1]
			if !s.LastTick.After(prev.LastTick) {
				t.Errorf("state went from tick %s to %s: a tick was claimed twice", prev.LastTick.Format(time.TimeOnly), s.LastTick.Format(time.TimeOnly))
			}
			missed += int(s.LastTick.Sub(prev.LastTick)/period) - 1
		}
		switch s.Result {
		case orchestrator.TickStarted:
			started++
			if _, dup := tickOf[s.ExecutionID]; dup {
				t.Errorf("execution %s started by two ticks", s.ExecutionID)
			}
			tickOf[s.ExecutionID] = s.LastTick
			active = s.ExecutionID
		case orchestrator.TickSkipped:
			skipped++
			if active != "" && s.ExecutionID != active {
				t.Errorf("tick %s skipped for execution %s, but the last started is %s", s.LastTick.Format(time.TimeOnly), s.ExecutionID, active)
			}
		default:
			t.Errorf("state with result %q", s.Result)
		}
	}
	sort.Slice(r.runs, func(i, j int) bool { return r.runs[i].start.Before(r.runs[j].start) })
	for i, run := range r.runs {
		if _, ok := tickOf[run.exec]; !ok {
			t.Errorf("run of execution %s on %s was started by no recorded tick", run.exec, run.node)
		}
		if run.end.IsZero() {
			t.Errorf("run of %s on %s never ended", run.exec, run.node)
		}
		if i > 0 && run.start.Before(r.runs[i-1].end) {
			p := r.runs[i-1]
			t.Errorf("runs overlap: %s on %s (token %d) [%s, %s] and %s on %s (token %d) from %s",
				p.exec[:8], p.node, p.token, p.start.Format(time.StampMilli), p.end.Format(time.StampMilli),
				run.exec[:8], run.node, run.token, run.start.Format(time.StampMilli))
		}
	}
	return started, skipped, missed
}

func (r *schedRecorder) byNode() map[string][2]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][2]int{}
	for _, s := range r.states {
		c := out[s.Node]
		if s.Result == orchestrator.TickStarted {
			c[0]++
		} else {
			c[1]++
		}
		out[s.Node] = c
	}
	return out
}

func scheduleCluster(t *testing.T, rec *schedRecorder, runFor time.Duration, s scheduler.Schedule) *cluster {
	c := newCluster(t, 0, 2*time.Second, nil)
	c.configure = func(cfg *scheduler.Config) {
		cfg.Registry = rec.registryFor(cfg.NodeID, runFor)
		cfg.Schedules = []scheduler.Schedule{s}
	}
	return c
}

func drainAll(t *testing.T, nodes []*testNode) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := n.Drain(ctx); err != nil {
				t.Errorf("drain %s: %v", n.ID(), err)
			}
		}()
	}
	wg.Wait()
}

// tickCounts sums soloist_schedule_ticks_total over nodes.
func tickCounts(nodes []*testNode, schedule string) (started, skipped, errs float64, per string) {
	var parts []string
	for _, n := range nodes {
		st := n.counter("soloist_schedule_ticks_total", "schedule", schedule, "result", "started")
		sk := n.counter("soloist_schedule_ticks_total", "schedule", schedule, "result", "skipped")
		started += st
		skipped += sk
		errs += n.counter("soloist_schedule_ticks_total", "schedule", schedule, "result", "error")
		parts = append(parts, fmt.Sprintf("%s %v started/%v skipped", n.ID(), st, sk))
	}
	return started, skipped, errs, strings.Join(parts, ", ")
}

// TestScheduleNoOverlap: three nodes share "@every 1s" of a function that
// takes 2.5 s. Runs never overlap, each tick is claimed once across the
// cluster (started or skipped), no tick starts twice, and the nodes'
// counters add up to the ticks claimed.
func TestScheduleNoOverlap(t *testing.T) {
	t.Parallel()
	rec := &schedRecorder{}
	c := scheduleCluster(t, rec, 2500*time.Millisecond, scheduler.Schedule{
		Name: "every-second", Spec: "@every 1s", Function: "Slow", Input: json.RawMessage(`{"n":1}`),
	})
	key := c.client().Keys().Schedule("every-second")
	rec.watchState(t, c.e.Client(), key)
	for i := 0; i < 3; i++ {
		c.addNode(fmt.Sprintf("node-%d", i))
	}
	eventually(t, 20*time.Second, "8 ticks claimed", func() bool { return rec.stateCount() >= 8 })
	drainAll(t, c.nodes)
	rec.caughtUp(t, c.e.Client(), key)
	started, skipped, missed := rec.check(t, time.Second)
	mStarted, mSkipped, mErrs, per := tickCounts(c.nodes, "every-second")
	t.Logf("%d ticks claimed: %d started, %d skipped, %d missed; runs %d; per node: %s; errors %v",
		started+skipped, started, skipped, missed, len(rec.runs), per, mErrs)
	t.Logf("claims by node (state key): %v", rec.byNode())
	if int(mStarted) != started || int(mSkipped) != skipped {
		t.Fatalf("counters say %v started and %v skipped; the state key recorded %d and %d", mStarted, mSkipped, started, skipped)
	}
	if missed > 1 {
		t.Fatalf("%d ticks were claimed by no node", missed)
	}
	if started < 2 || skipped+missed < 2*(started-1) {
		t.Fatalf("with 2.5 s runs every 1 s, want about two skips per start; got %d started, %d skipped", started, skipped)
	}
	if len(rec.runs) < started-1 {
		t.Fatalf("%d runs for %d started ticks", len(rec.runs), started)
	}
}

// TestScheduleAcrossRestarts drains every node in the middle of a run,
// starts new nodes, and checks that the ticks go on from where they were:
// the tick state never goes back, no tick starts twice, the run that was
// interrupted is handed over (not started again by a tick), and no two runs
// overlap across the restart. Ticks that pass while no node runs are not
// caught up.
func TestScheduleAcrossRestarts(t *testing.T) {
	t.Parallel()
	rec := &schedRecorder{}
	c := scheduleCluster(t, rec, 1500*time.Millisecond, scheduler.Schedule{
		Name: "restarts", Spec: "@every 1s", Function: "Slow", InstanceID: "restarts-run",
	})
	cl := c.client()
	key := cl.Keys().Schedule("restarts")
	rec.watchState(t, c.e.Client(), key)
	gen1 := []*testNode{c.addNode("old-0"), c.addNode("old-1")}
	eventually(t, 15*time.Second, "3 ticks claimed", func() bool { return rec.stateCount() >= 3 })
	// Drain while a run is in progress (it takes 1.5 s), so the new nodes
	// inherit it.
	eventually(t, 5*time.Second, "a run in progress", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.runs {
			if r.end.IsZero() && time.Since(r.start) < 500*time.Millisecond {
				return true
			}
		}
		return false
	})
	drainAll(t, gen1)
	rec.caughtUp(t, c.e.Client(), key)
	last, err := cl.ScheduleState(context.Background(), "restarts")
	if err != nil || last == nil {
		t.Fatalf("state after the drain: %+v, %v", last, err)
	}
	claimed1 := rec.stateCount()
	// A node that comes back with a clock behind claims the last tick again:
	// nothing happens.
	again, err := cl.ClaimTick(context.Background(), orchestrator.Tick{
		Schedule: "restarts", Function: "Slow", InstanceID: "restarts-run", At: last.LastTick, Node: "late-clock"})
	if err != nil || again.Result != orchestrator.TickTaken {
		t.Fatalf("claiming the last tick again: %+v, %v; want taken", again, err)
	}
	time.Sleep(1200 * time.Millisecond) // at least one tick with no node running
	gen2 := []*testNode{c.addNode("new-0"), c.addNode("new-1")}
	eventually(t, 15*time.Second, "3 ticks claimed by the new nodes", func() bool { return rec.stateCount() >= claimed1+3 })
	drainAll(t, gen2)
	rec.caughtUp(t, c.e.Client(), key)

	started, skipped, missed := rec.check(t, time.Second)
	rec.mu.Lock()
	gap := rec.states[claimed1].LastTick.Sub(rec.states[claimed1-1].LastTick)
	for _, s := range rec.states[claimed1:] {
		if !strings.HasPrefix(s.Node, "new-") {
			t.Errorf("tick %s claimed by %s after every old node drained", s.LastTick.Format(time.TimeOnly), s.Node)
		}
	}
	handedOver := map[string]int{}
	for _, r := range rec.runs {
		handedOver[r.exec]++
	}
	rec.mu.Unlock()
	s1, k1, e1, per1 := tickCounts(gen1, "restarts")
	s2, k2, e2, per2 := tickCounts(gen2, "restarts")
	t.Logf("before the restart: %s; after: %s; errors %v/%v", per1, per2, e1, e2)
	t.Logf("%d started, %d skipped; gap across the restart %v (ticks not caught up: %d); runs per execution %v",
		started, skipped, gap, missed, handedOver)
	if int(s1+k1) != claimed1 || int(s1+k1+s2+k2) != started+skipped {
		t.Fatalf("counters (%v+%v before, %v+%v after) do not match the %d ticks claimed before and %d in all",
			s1, k1, s2, k2, claimed1, started+skipped)
	}
	if gap < 2*time.Second {
		t.Fatalf("the first tick after the restart is %v after the last one; want a gap (missed ticks are not caught up)", gap)
	}
	rerun := false
	for _, n := range handedOver {
		rerun = rerun || n > 1
	}
	if !rerun {
		t.Fatalf("the interrupted run was not handed over to a new node: runs per execution %v", handedOver)
	}
}

func TestParseCron(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone data:", err)
	}
	cases := []struct {
		spec     string
		loc      *time.Location
		from, to string
	}{
		// @every ticks at whole multiples, whenever the node started.
		{"@every 30s", nil, "2030-01-01T12:00:05Z", "2030-01-01T12:00:30Z"},
		{"@every 30s", nil, "2030-01-01T12:00:30Z", "2030-01-01T12:01:00Z"},
		{"@every 1h", berlin, "2030-01-01T12:59:59Z", "2030-01-01T13:00:00Z"},
		{"0 2 * * *", nil, "2030-01-01T00:00:00Z", "2030-01-01T02:00:00Z"},
		{"0 2 * * *", berlin, "2030-01-01T00:00:00Z", "2030-01-01T01:00:00Z"}, // CET
		{"0 2 * * *", berlin, "2030-07-01T00:00:00Z", "2030-07-02T00:00:00Z"}, // CEST, 02:00 already passed
		{"@daily", nil, "2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"},
		{"*/15 * * * 1-5", nil, "2030-01-04T23:50:00Z", "2030-01-07T00:00:00Z"}, // Friday night to Monday
	}
	for _, c := range cases {
		cr, err := scheduler.ParseCron(c.spec)
		if err != nil {
			t.Fatalf("%s: %v", c.spec, err)
		}
		got := cr.Next(at(c.from), c.loc)
		if !got.Equal(at(c.to)) || got.Location() != time.UTC {
			t.Errorf("%s in %v after %s: %v, want %s", c.spec, c.loc, c.from, got, c.to)
		}
	}
	for _, bad := range []string{"", "* * * *", "0 0 2 * * *", "61 * * * *", "@every 0s", "@every -1m", "@every 1.5s", "@every", "@everyday", "@reboot", "TZ=UTC 0 2 * * *", "0 0 31 2 *"} {
		if _, err := scheduler.ParseCron(bad); err == nil {
			t.Errorf("ParseCron(%q) accepted it", bad)
		}
	}
}

// New refuses schedules it could never run, with the reason.
func TestScheduleConfigValidation(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Job", func(*orchestrator.OrchestrationContext) (any, error) { return nil, nil })
	ok := scheduler.Schedule{Name: "s", Spec: "@hourly", Function: "Job"}
	cases := []struct {
		name string
		edit func(*scheduler.Schedule)
		dup  bool
		want string
	}{
		{"bad name", func(s *scheduler.Schedule) { s.Name = "a/b" }, false, `schedule name "a/b"`},
		{"bad cron", func(s *scheduler.Schedule) { s.Spec = "every hour" }, false, `invalid cron "every hour"`},
		{"unknown function", func(s *scheduler.Schedule) { s.Function = "Jbo" }, false, `function "Jbo" is not registered`},
		{"bad instance ID", func(s *scheduler.Schedule) { s.InstanceID = "#x" }, false, "invalid instance ID"},
		{"duplicate name", func(s *scheduler.Schedule) { s.Name = "ok" }, true, `schedule "ok" is defined twice`},
		{"input not JSON", func(s *scheduler.Schedule) { s.Input = json.RawMessage("{") }, false, "input is not valid JSON"},
		{"input too large", func(s *scheduler.Schedule) { s.Input = json.RawMessage(`"` + strings.Repeat("x", 300<<10) + `"`) }, false, "the limit is 262144 bytes"},
	}
	for _, c := range cases {
		s := ok
		c.edit(&s)
		scheds := []scheduler.Schedule{s}
		if c.dup {
			scheds = append(scheds, s)
		}
		_, err := scheduler.New(scheduler.Config{Etcd: e.Client(), NodeID: "n", Registry: reg, Schedules: scheds})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := scheduler.New(scheduler.Config{Etcd: e.Client(), NodeID: "n", Registry: reg, Schedules: []scheduler.Schedule{ok}}); err != nil {
		t.Fatalf("valid schedule: %v", err)
	}
}
