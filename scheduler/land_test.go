package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// preferredID returns an instance ID whose rendezvous-preferred node among
// nodes is want.
func preferredID(t *testing.T, want string, nodes []string) string {
	t.Helper()
	for i := 0; i < 10000; i++ {
		if id := fmt.Sprintf("land-%d", i); preferredNode(id, nodes) == want {
			return id
		}
	}
	t.Fatalf("no ID prefers %s", want)
	return ""
}

// preferredNode is id's rendezvous-preferred node among nodes.
func preferredNode(id string, nodes []string) string {
	best, top := "", uint64(0)
	for _, n := range nodes {
		if s := scheduler.Score(n, id); best == "" || s > top {
			best, top = n, s
		}
	}
	return best
}

func nodeIDs(c *cluster) []string {
	ids := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.ID()
	}
	return ids
}

func campaigned(n *testNode) float64 { return n.counter("soloist_campaigns_total") }

// waitNodesSeen waits until every node's view lists every node, so that
// ranks are what the test computes.
func waitNodesSeen(t *testing.T, c *cluster) {
	t.Helper()
	cl := c.client()
	eventually(t, 10*time.Second, "every node key", func() bool {
		resp, err := cl.Etcd().Get(context.Background(), cl.Keys().Nodes(), clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == len(c.nodes)
	})
	time.Sleep(100 * time.Millisecond) // the watches deliver the node keys
}

// A start received by the node that should run the instance takes it in
// the start's own transaction: when StartInstance returns the node already
// runs it, no node campaigned, and the run's fencing token is the owners
// key's CreateRevision - the start commit's revision. The run then behaves
// as any other: it completes and its final write releases the key.
func TestStartLandsOnReceivingNode(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 3, 5*time.Second, newBlockingRegistry(rec, nil))
	waitNodesSeen(t, c)
	recv := c.nodes[1]
	id := preferredID(t, recv.ID(), nodeIDs(c))

	res, err := recv.StartInstance(context.Background(), "Block", orchestrator.StartOptions{InstanceID: id})
	if err != nil || !res.Started {
		t.Fatalf("StartInstance: %+v, %v", res, err)
	}
	if h := recv.Held(); len(h) != 1 || h[0] != id {
		t.Fatalf("receiving node holds %v right after the start, want [%s]", h, id)
	}
	if got := recv.counter("soloist_starts_landed_total"); got != 1 {
		t.Fatalf("starts landed = %v, want 1", got)
	}
	cl := c.client()
	st, err := cl.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != recv.ID() || st.FencingToken != res.Revision {
		t.Fatalf("holder %q token %d, want %s with the start commit's revision %d", st.Node, st.FencingToken, recv.ID(), res.Revision)
	}
	eventually(t, 5*time.Second, "the run to begin", func() bool { return rec.count() == 1 })
	if tok := rec.last().token; tok != res.Revision {
		t.Fatalf("the run's fencing token %d, want %d", tok, res.Revision)
	}
	time.Sleep(2 * 50 * time.Millisecond * 3) // past every rank's preference delay
	for _, n := range c.nodes {
		if got := campaigned(n); got != 0 {
			t.Fatalf("%s campaigned %v times for a landed start, want 0", n.ID(), got)
		}
	}
	close(rec.finish)
	waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second)
	if rec.count() != 1 {
		t.Fatalf("ran %d times, want 1", rec.count())
	}
	eventually(t, 5*time.Second, "the owners key released", func() bool {
		resp, err := cl.Etcd().Get(context.Background(), cl.Keys().Owner(id))
		return err == nil && len(resp.Kvs) == 0
	})
}

// A landed run opens from what its start wrote rather than reading it
// back: it gets the start's input and the inbox entries that were there
// before the start (a raise that raced an earlier execution's final
// write leaves one), and its commits keep the record's fields (version,
// tags) the start wrote. It keeps a copy of the input, not the caller's
// buffer.
func TestLandedRunSeesWhatTheStartWrote(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Echo", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var late int
		if err := ctx.WaitForExternalEvent("late", 0).Await(&late); err != nil {
			return nil, err
		}
		if err := ctx.WaitForExternalEvent("go", 0).Await(nil); err != nil {
			return nil, err
		}
		var in map[string]int
		if err := ctx.GetInput(&in); err != nil {
			return nil, err
		}
		ctx.SetCustomStatus("got it")
		return in["n"] + late, nil
	})
	c := newCluster(t, 3, 5*time.Second, reg)
	waitNodesSeen(t, c)
	recv := c.nodes[0]
	id := preferredID(t, recv.ID(), nodeIDs(c))
	cl := c.client()
	if _, err := cl.Etcd().Put(context.Background(), cl.Keys().InboxPrefix(id)+"leftover",
		`{"seq":0,"eventType":"EventRaised","name":"late","input":2}`); err != nil {
		t.Fatal(err)
	}
	buf := []byte(`{"n": 40}`)
	res, err := recv.StartInstance(context.Background(), "Echo", orchestrator.StartOptions{
		InstanceID: id, Input: buf, Tags: map[string]string{"team": "a"}})
	if err != nil || !res.Started {
		t.Fatalf("StartInstance: %+v, %v", res, err)
	}
	// The caller's buffer is its own again once the start returns: the
	// run reads its input (after "go") from a copy.
	copy(buf, `{"n": 99}`)
	if err := cl.RaiseEvent(context.Background(), id, "go", nil); err != nil {
		t.Fatal(err)
	}
	if got := recv.counter("soloist_starts_landed_total"); got != 1 {
		t.Fatalf("starts landed = %v, want 1", got)
	}
	st := waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != "42" || string(st.Input) != `{"n": 40}` || string(st.CustomStatus) != `"got it"` ||
		st.Tags["team"] != "a" || st.ExecutionID != res.Status.ExecutionID {
		t.Fatalf("completed: output %s input %s custom %s tags %v execution %s (started %s)",
			st.Output, st.Input, st.CustomStatus, st.Tags, st.ExecutionID, res.Status.ExecutionID)
	}
	for _, n := range c.nodes {
		if got := campaigned(n); got != 0 {
			t.Fatalf("%s campaigned %v times, want 0: the start was to land", n.ID(), got)
		}
	}
}

// A client that sends every start to one node does not pile the
// instances there: that node takes the starts it receives while it holds
// at most 1.25 x its even share plus 8 (the landing slack), and the
// preferred nodes campaign for the rest. 60 instances that keep running,
// none preferring the receiving node, all started through it: it holds
// some (it lands while under the bound), at most the bound, and the other
// two the rest, each run once.
func TestLandingSpreadsStartsSentToOneNode(t *testing.T) {
	t.Parallel()
	sp := startThroughOneNode(t, "pile", false)
	// The bound at the last start: 4 x mine x 3 <= 5 x 59 + 4 x 8 x 3.
	if bound := (5*(len(sp.ids)-1)+96)/12 + 1; sp.mine > bound {
		t.Errorf("the receiving node holds %d of %d, want at most %d (1.25 x its share + 8)", sp.mine, len(sp.ids), bound)
	}
	if landed := sp.recv.counter("soloist_starts_landed_total"); landed < 8 || int(landed) > sp.mine {
		t.Errorf("the receiving node landed %v starts and holds %d, want at least 8 landed (its slack) and no more than it holds", landed, sp.mine)
	}
	sp.finish(t)
}

// 60 starts sent to one node at once, none of them preferring it: the
// node's starts in flight count towards its share, and the other nodes'
// takes are assumed only as far as the view saw them take, so it still
// takes no more than its bound and the rest run elsewhere.
func TestLandingSpreadsABurstSentToOneNode(t *testing.T) {
	t.Parallel()
	sp := startThroughOneNode(t, "burst", true)
	// The sequential bound (1.25 x 20 + 8 = 33), and for the starts in
	// flight at once a quarter of the burst more.
	if bound := (5*(len(sp.ids)-1)+96)/12 + 1 + len(sp.ids)/4; sp.mine > bound {
		t.Errorf("the receiving node holds %d of %d, want at most %d", sp.mine, len(sp.ids), bound)
	}
	sp.finish(t)
}

// spread is 60 blocking instances started through one node of three.
type spread struct {
	c    *cluster
	rec  *recorder
	recv *testNode
	ids  []string
	mine int // held by the receiving node once all are held
}

// startThroughOneNode starts 60 instances that keep running, none
// preferring the receiving node, all through it (one after the other, or
// all at once), and waits until all are held.
func startThroughOneNode(t *testing.T, prefix string, atOnce bool) *spread {
	t.Helper()
	sp := &spread{rec: &recorder{finish: make(chan struct{})}}
	sp.c = newCluster(t, 3, 5*time.Second, newBlockingRegistry(sp.rec, nil))
	waitNodesSeen(t, sp.c)
	sp.recv = sp.c.nodes[0]
	for i := 0; len(sp.ids) < 60; i++ {
		if id := fmt.Sprintf("%s-%d", prefix, i); preferredNode(id, nodeIDs(sp.c)) != sp.recv.ID() {
			sp.ids = append(sp.ids, id)
		}
	}
	start := func(id string) error {
		if res, err := sp.recv.StartInstance(context.Background(), "Block", orchestrator.StartOptions{InstanceID: id}); err != nil || !res.Started {
			return fmt.Errorf("StartInstance %s: %+v, %v", id, res, err)
		}
		return nil
	}
	errs := make(chan error, len(sp.ids))
	var wg sync.WaitGroup
	for _, id := range sp.ids {
		if !atOnce {
			errs <- start(id)
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- start(id) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "all 60 held", func() bool {
		held := 0
		for _, n := range sp.c.nodes {
			held += len(n.Held())
		}
		return held == len(sp.ids)
	})
	sp.mine = len(sp.recv.Held())
	t.Logf("the receiving node holds %d of %d; the others %d and %d", sp.mine, len(sp.ids), len(sp.c.nodes[1].Held()), len(sp.c.nodes[2].Held()))
	return sp
}

// finish lets every instance complete and checks each ran once.
func (sp *spread) finish(t *testing.T) {
	t.Helper()
	eventually(t, 10*time.Second, "every instance running", func() bool { return sp.rec.count() == len(sp.ids) })
	close(sp.rec.finish)
	cl := sp.c.client()
	for _, id := range sp.ids {
		waitStatus(t, cl, id, orchestrator.StatusCompleted, 20*time.Second)
	}
	if sp.rec.count() != len(sp.ids) {
		t.Fatalf("%d runs for %d instances, want one each", sp.rec.count(), len(sp.ids))
	}
}

// 150 racing starts of one ID through the StartInstance of three nodes:
// exactly one is acknowledged, the others are refused with
// ErrInstanceExists, and the orchestration runs once, on one node, taken
// either by the landing start or by one campaign.
func TestRacingLandedStartsRunOnce(t *testing.T) {
	t.Parallel()
	var runs atomic.Int64
	reg := orchestrator.NewRegistry()
	release := make(chan struct{})
	_ = reg.AddOrchestrator("Once", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Context().Done():
			return nil, ctx.Context().Err()
		}
		return "done", nil
	})
	c := newCluster(t, 3, 5*time.Second, reg)
	waitNodesSeen(t, c)
	const racers = 150
	var started, exists atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			_, err := c.nodes[i%3].StartInstance(context.Background(), "Once", orchestrator.StartOptions{InstanceID: "singleton"})
			switch {
			case err == nil:
				started.Add(1)
			case errors.Is(err, orchestrator.ErrInstanceExists):
				exists.Add(1)
			default:
				t.Errorf("start: %v", err)
			}
		}(i)
	}
	close(gate)
	wg.Wait()
	if started.Load() != 1 || exists.Load() != racers-1 {
		t.Fatalf("want 1 started and %d refused, got %d and %d", racers-1, started.Load(), exists.Load())
	}
	eventually(t, 10*time.Second, "the run to start", func() bool { return runs.Load() == 1 })
	close(release)
	waitStatus(t, c.client(), "singleton", orchestrator.StatusCompleted, 10*time.Second)
	var taken float64
	for _, n := range c.nodes {
		taken += n.counter("soloist_campaigns_total", "result", "won") + n.counter("soloist_starts_landed_total")
	}
	if runs.Load() != 1 || taken != 1 {
		t.Fatalf("ran %d times, taken %v times (landed + campaigns won), want 1 and 1", runs.Load(), taken)
	}
}

// A start received by a node that must not run the instance is a start as
// before, and the instance runs elsewhere: on an API-only node, on a node
// at its MaxConcurrent, on a node without the start's version.
func TestStartThatCannotLandRunsElsewhere(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	full := newBlockingRegistry(rec, nil)
	old := orchestrator.NewRegistry()
	block := func(ctx *orchestrator.OrchestrationContext) (any, error) {
		rec.mu.Lock()
		rec.runs = append(rec.runs, runRecord{token: ctx.FencingToken(), exec: ctx.ExecutionID()})
		rec.mu.Unlock()
		select {
		case <-rec.finish:
			return "ok", nil
		case <-ctx.Context().Done():
			return nil, context.Cause(ctx.Context())
		}
	}
	if err := full.AddOrchestratorVersion("Versioned", "v1", block, true); err != nil {
		t.Fatal(err)
	}
	if err := full.AddOrchestratorVersion("Versioned", "v2", block, false); err != nil {
		t.Fatal(err)
	}
	if err := old.AddOrchestratorVersion("Versioned", "v1", block, true); err != nil {
		t.Fatal(err)
	}
	if err := old.AddOrchestrator("Block", block); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 0, 5*time.Second, full)
	c.configure = func(cfg *scheduler.Config) {
		switch cfg.NodeID {
		case "api":
			cfg.Role = scheduler.RoleAPI
		case "max":
			cfg.MaxConcurrent = 1
		case "old":
			cfg.Registry = old
		}
	}
	runner := c.addNode("runner")
	api, maxed, oldNode := c.addNode("api"), c.addNode("max"), c.addNode("old")
	waitNodesSeen(t, c)
	cl := c.client()

	// Fill "max": a start it receives lands there (it holds nothing yet).
	if _, err := maxed.StartInstance(context.Background(), "Block", orchestrator.StartOptions{InstanceID: "fill"}); err != nil {
		t.Fatal(err)
	}
	if h := maxed.Held(); len(h) != 1 {
		t.Fatalf("max holds %v, want the instance it landed", h)
	}

	cases := []struct {
		name     string
		recv     *testNode
		fn, ver  string
		holders  []*testNode // where it may run
		notLands *testNode
	}{
		{"api-only", api, "Block", "", []*testNode{runner, oldNode}, api},
		{"max-concurrent", maxed, "Block", "", []*testNode{runner, oldNode}, maxed},
		{"without-version", oldNode, "Versioned", "v2", []*testNode{runner}, oldNode},
	}
	for _, tc := range cases {
		id := "elsewhere-" + tc.name
		landed := tc.recv.counter("soloist_starts_landed_total")
		res, err := tc.recv.StartInstance(context.Background(), tc.fn, orchestrator.StartOptions{InstanceID: id, Version: tc.ver})
		if err != nil || !res.Started {
			t.Fatalf("%s: start: %+v, %v", tc.name, res, err)
		}
		if got := tc.recv.counter("soloist_starts_landed_total"); got != landed {
			t.Fatalf("%s: the receiving node landed the start", tc.name)
		}
		var h *testNode
		eventually(t, 10*time.Second, tc.name+": a holder", func() bool { h = holderOf(c, id); return h != nil })
		ok := false
		for _, want := range tc.holders {
			ok = ok || h == want
		}
		if !ok {
			t.Fatalf("%s: held by %s", tc.name, h.ID())
		}
		waitStatus(t, cl, id, orchestrator.StatusRunning, 10*time.Second)
	}
	close(rec.finish)
	for _, id := range []string{"fill", "elsewhere-api-only", "elsewhere-max-concurrent", "elsewhere-without-version"} {
		waitStatus(t, cl, id, orchestrator.StatusCompleted, 10*time.Second)
	}
}

// The holder of a landed start dies right after acknowledging it (its etcd
// connection goes away, its lease expires): another node takes the
// instance over with a larger fencing token and completes it. The
// acknowledged start is never lost.
func TestLandedStartSurvivesHolderLoss(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 3, 2*time.Second, newBlockingRegistry(rec, nil))
	waitNodesSeen(t, c)
	victim := c.nodes[0]
	id := preferredID(t, victim.ID(), nodeIDs(c))
	res, err := victim.StartInstance(context.Background(), "Block", orchestrator.StartOptions{InstanceID: id})
	if err != nil {
		t.Fatal(err)
	}
	if victim.counter("soloist_starts_landed_total") != 1 {
		t.Fatal("the start did not land on the receiving node")
	}
	_ = victim.etcd.Close() // a crash as etcd sees it: no release, no revoke
	var h *testNode
	eventually(t, 15*time.Second, "a takeover", func() bool { h = holderOf(c, id); return h != nil && h != victim })
	close(rec.finish)
	st := waitStatus(t, c.client(), id, orchestrator.StatusCompleted, 10*time.Second)
	var out map[string]int64
	_ = json.Unmarshal(st.Output, &out)
	if out["token"] <= res.Revision {
		t.Fatalf("completed with token %d, want one larger than the landed holding's %d", out["token"], res.Revision)
	}
	if f := h.counter("soloist_failovers_total"); f != 1 {
		t.Fatalf("failovers on the new holder = %v, want 1", f)
	}
}
