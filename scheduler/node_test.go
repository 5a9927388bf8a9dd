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

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// testNode is one node of a test cluster with its own etcd client.
type testNode struct {
	*scheduler.Node
	etcd *clientv3.Client
	reg  *prometheus.Registry
}

func (tn *testNode) counter(name string, labels ...string) float64 {
	mfs, err := tn.reg.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
			if h := m.GetHistogram(); h != nil {
				sum += float64(h.GetSampleCount())
			}
		}
	}
	return sum
}

type cluster struct {
	t      *testing.T
	e      *leasetest.Etcd
	prefix string
	reg    *orchestrator.Registry
	nodes  []*testNode
	ttl    time.Duration
	// maxConcurrent applies to nodes added after it is set.
	maxConcurrent int
	// configure, if set, adjusts each node's Config before it is created.
	configure func(*scheduler.Config)
	// endpoints, if set, are where nodes added after it reach etcd (a proxy).
	endpoints []string
	// prepare, if set, sees each node's etcd client before the node does.
	prepare func(*clientv3.Client)
}

func newEtcd(t *testing.T) *leasetest.Etcd { return leasetest.Start(t) }

func newProxy(t *testing.T, e *leasetest.Etcd) *leasetest.Proxy {
	return leasetest.NewProxy(t, e.Endpoints[0])
}

func newCluster(t *testing.T, n int, ttl time.Duration, reg *orchestrator.Registry) *cluster {
	t.Helper()
	c := &cluster{t: t, e: leasetest.Start(t), prefix: "/" + t.Name() + "/", reg: reg, ttl: ttl}
	for i := 0; i < n; i++ {
		c.addNode(fmt.Sprintf("node-%d", i))
	}
	return c
}

func (c *cluster) addNode(id string) *testNode {
	c.t.Helper()
	cli := c.e.Client()
	if c.endpoints != nil {
		var err error
		cli, err = clientv3.New(clientv3.Config{Endpoints: c.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { _ = cli.Close() })
	}
	if c.prepare != nil {
		c.prepare(cli)
	}
	preg := prometheus.NewRegistry()
	cfg := scheduler.Config{
		Etcd: cli, Prefix: c.prefix, NodeID: id, LeaseTTL: c.ttl, Registry: c.reg,
		Registerer: preg, PreferenceDelay: 50 * time.Millisecond, MaxConcurrent: c.maxConcurrent,
	}
	if c.configure != nil {
		c.configure(&cfg)
	}
	node, err := scheduler.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		c.t.Fatal(err)
	}
	tn := &testNode{Node: node, etcd: cli, reg: preg}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Drain(ctx)
	})
	c.nodes = append(c.nodes, tn)
	return tn
}

func (c *cluster) client() *orchestrator.Client {
	return orchestrator.NewClient(c.e.Client(), orchestrator.ClientConfig{Prefix: c.prefix})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitStatus(t *testing.T, c *orchestrator.Client, id string, want orchestrator.RuntimeStatus, d time.Duration) *orchestrator.Status {
	t.Helper()
	var last *orchestrator.Status
	eventually(t, d, fmt.Sprintf("%s to be %s", id, want), func() bool {
		st, err := c.Status(context.Background(), id)
		if err == nil {
			last = st
		}
		return err == nil && st.RuntimeStatus == want
	})
	return last
}

// TestRacingStartsRunOnce fires many concurrent starts of one ID through the
// clients of three nodes: exactly one is acknowledged, every other is
// refused with ErrInstanceExists, and the orchestration runs exactly once.
func TestRacingStartsRunOnce(t *testing.T) {
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
	c := newCluster(t, 3, 2*time.Second, reg)
	const racers = 150
	var started, exists, other atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cl := c.nodes[i%3].Client()
			<-gate
			_, err := cl.Start(context.Background(), "Once", orchestrator.StartOptions{InstanceID: "singleton"})
			switch {
			case err == nil:
				started.Add(1)
			case errors.Is(err, orchestrator.ErrInstanceExists):
				exists.Add(1)
			default:
				other.Add(1)
				t.Errorf("start: %v", err)
			}
		}(i)
	}
	close(gate)
	wg.Wait()
	t.Logf("racing starts: %d started, %d refused with 409, %d other errors", started.Load(), exists.Load(), other.Load())
	if started.Load() != 1 || exists.Load() != racers-1 {
		t.Fatalf("want 1 started and %d refused, got %d and %d", racers-1, started.Load(), exists.Load())
	}
	cl := c.client()
	eventually(t, 10*time.Second, "the run to start", func() bool { return runs.Load() == 1 })
	close(release)
	st := waitStatus(t, cl, "singleton", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `"done"` {
		t.Fatalf("output %s", st.Output)
	}
	if got := runs.Load(); got != 1 {
		t.Fatalf("orchestration ran %d times, want 1", got)
	}
	var won float64
	for _, n := range c.nodes {
		won += n.counter("soloist_campaigns_total", "result", "won")
	}
	if won != 1 {
		t.Fatalf("campaigns won across nodes = %v, want 1", won)
	}
	// The final write deletes the holder's own owners key; the run must
	// still count as completed, not as stopped by a lost lease.
	eventually(t, 5*time.Second, "completion counted", func() bool {
		var done float64
		for _, n := range c.nodes {
			done += n.counter("soloist_orchestrations_completed_total", "status", "Completed")
		}
		return done == 1
	})
}

// blockingRegistry has "Block": it records each run, then waits until its
// context ends or the test releases it.
type recorder struct {
	mu     sync.Mutex
	runs   []runRecord
	finish chan struct{}
}

type runRecord struct {
	node  string
	token int64
	exec  string
}

func newBlockingRegistry(rec *recorder, nodeOf func(*orchestrator.OrchestrationContext) string) *orchestrator.Registry {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Block", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		rec.mu.Lock()
		rec.runs = append(rec.runs, runRecord{token: ctx.FencingToken(), exec: ctx.ExecutionID()})
		rec.mu.Unlock()
		select {
		case <-rec.finish:
			return map[string]int64{"token": ctx.FencingToken()}, nil
		case <-ctx.Context().Done():
			return nil, context.Cause(ctx.Context())
		}
	})
	return reg
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

func (r *recorder) last() runRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[len(r.runs)-1]
}

func holderOf(c *cluster, id string) *testNode {
	for _, n := range c.nodes {
		for _, h := range n.Held() {
			if h == id {
				return n
			}
		}
	}
	return nil
}

// TestTakeoverAfterAbruptLoss kills the holder's etcd connection (no release,
// no revoke): another node takes the instance over after the lease expires
// and runs it to completion with a larger fencing token.
func TestTakeoverAfterAbruptLoss(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 3, 2*time.Second, newBlockingRegistry(rec, nil))
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: "job"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first run", func() bool { return rec.count() == 1 && holderOf(c, "job") != nil })
	first := rec.last()
	victim := holderOf(c, "job")
	// A crash as etcd sees it: the connection goes away, the lease is not
	// revoked and expires after its TTL.
	killed := time.Now()
	_ = victim.etcd.Close()
	eventually(t, 15*time.Second, "a second run on another node", func() bool {
		h := holderOf(c, "job")
		return rec.count() == 2 && h != nil && h != victim
	})
	took := time.Since(killed)
	second := rec.last()
	t.Logf("takeover after abrupt loss with TTL %v: %v (tokens %d -> %d)", c.ttl, took.Round(time.Millisecond), first.token, second.token)
	if second.token <= first.token {
		t.Fatalf("fencing token did not grow: %d -> %d", first.token, second.token)
	}
	close(rec.finish)
	st := waitStatus(t, cl, "job", orchestrator.StatusCompleted, 10*time.Second)
	var out map[string]int64
	_ = json.Unmarshal(st.Output, &out)
	if out["token"] != second.token {
		t.Fatalf("completed by token %d, want the new holder's %d", out["token"], second.token)
	}
	var failovers float64
	for _, n := range c.nodes {
		if n != victim {
			failovers += n.counter("soloist_failovers_total")
		}
	}
	if failovers != 1 {
		t.Fatalf("failovers counted = %v, want 1", failovers)
	}
}

// TestHandoffOnDrain: a node that drains releases its instances and a peer
// takes them within a second, far below the TTL.
func TestHandoffOnDrain(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 2, 10*time.Second, newBlockingRegistry(rec, nil))
	cl := c.client()
	const n = 6
	for i := 0; i < n; i++ {
		if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: fmt.Sprintf("h%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "all running", func() bool {
		return len(c.nodes[0].Held())+len(c.nodes[1].Held()) == n
	})
	victim, peer := c.nodes[0], c.nodes[1]
	moving := len(victim.Held())
	if moving == 0 {
		victim, peer = peer, victim
		moving = len(victim.Held())
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := victim.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "peer to hold everything", func() bool { return len(peer.Held()) == n })
	took := time.Since(start)
	t.Logf("handoff of %d instances with TTL 10s: %v", moving, took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("handoff took %v, want under 1s", took)
	}
	eventually(t, 5*time.Second, "handoffs counted", func() bool {
		return peer.counter("soloist_handoffs_total") == float64(moving)
	})
	if got := peer.counter("soloist_failovers_total"); got != 0 {
		t.Fatalf("failovers counted %v, want 0", got)
	}
	if err := victim.Ready(); !errors.Is(err, scheduler.ErrDraining) {
		t.Fatalf("drained node Ready() = %v", err)
	}
}

// TestFencedHolderStops deletes the owners key, then revokes the lease, of a
// holder whose orchestration keeps writing: every later write is refused,
// the run stops within a second, and the rejection is counted.
func TestFencedHolderStops(t *testing.T) {
	t.Parallel()
	for _, fault := range []string{"delete", "revoke"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			var writes, rejected, firstToken atomic.Int64
			stopped := make(chan time.Time, 1)
			reg := orchestrator.NewRegistry()
			_ = reg.AddOrchestrator("Writer", func(ctx *orchestrator.OrchestrationContext) (any, error) {
				if ctx.FencingToken() != firstToken.Load() && firstToken.Load() != 0 {
					<-ctx.Context().Done() // a later holder: just wait
					return nil, ctx.Context().Err()
				}
				for i := 0; ; i++ {
					err := ctx.SetCustomStatus(i)
					if err != nil {
						if errors.Is(err, orchestrator.ErrFenced) {
							rejected.Add(1)
						}
						stopped <- time.Now()
						return nil, err
					}
					writes.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			})
			c := newCluster(t, 1, 5*time.Second, reg)
			cl := c.client()
			if _, err := cl.Start(context.Background(), "Writer", orchestrator.StartOptions{InstanceID: "w"}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "writes", func() bool { return writes.Load() > 2 })
			st, _ := cl.Status(context.Background(), "w")
			firstToken.Store(st.FencingToken)
			ownerKey := cl.Keys().Owner("w")
			cut := time.Now()
			var cutRev int64
			switch fault {
			case "delete":
				resp, err := c.e.Client().Delete(context.Background(), ownerKey)
				if err != nil {
					t.Fatal(err)
				}
				cutRev = resp.Header.Revision
			case "revoke":
				var o orchestrator.Owner
				resp, _ := c.e.Client().Get(context.Background(), ownerKey)
				_ = json.Unmarshal(resp.Kvs[0].Value, &o)
				var id int64
				_, _ = fmt.Sscanf(o.LeaseID, "%x", &id)
				rresp, err := c.e.Client().Revoke(context.Background(), clientv3.LeaseID(id))
				if err != nil {
					t.Fatal(err)
				}
				cutRev = rresp.Header.Revision
			}
			var at time.Time
			select {
			case at = <-stopped:
			case <-time.After(time.Second):
				t.Fatal("the run did not stop within 1s")
			}
			t.Logf("%s: run stopped %v after the cut", fault, at.Sub(cut).Round(time.Millisecond))
			if rejected.Load() != 1 {
				t.Fatalf("the orchestration's write was not refused by fencing")
			}
			eventually(t, 2*time.Second, "rejection counted", func() bool {
				return c.nodes[0].counter("soloist_fencing_rejections_total") >= 1
			})
			// No write of the old holder landed after the cut.
			after, err := c.nodes[0].etcd.Get(context.Background(), cl.Keys().Instance("w"))
			if err != nil {
				t.Fatal(err)
			}
			if len(after.Kvs) == 0 {
				t.Fatal("record gone")
			}
			var rec orchestrator.Status
			_ = json.Unmarshal(after.Kvs[0].Value, &rec)
			if rec.FencingToken == st.FencingToken && after.Kvs[0].ModRevision > cutRev {
				t.Fatalf("the fenced holder wrote after the cut (revision %d > %d)", after.Kvs[0].ModRevision, cutRev)
			}
		})
	}
}
