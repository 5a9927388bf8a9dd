package main

import (
	"context"
	"fmt"
	"math"
	"time"
)

// releaseWait is how long a reading waits after the GC it forced.
const releaseWait = 6 * time.Second

// nodeReading is what the idle phase reads of the node and etcd.
type nodeReading struct {
	rss        int64   // VmRSS
	heapInuse  float64 // go_memstats_heap_inuse_bytes
	stackInuse float64 // go_memstats_stack_inuse_bytes
	heapFree   float64 // go_memstats_heap_idle_bytes - go_memstats_heap_released_bytes: free, not returned to the OS
	goroutines float64 // go_goroutines
	etcd       etcdWatch
	gc         bool // a GC was forced just before
}

// readNode reads the node after forcing a GC; settle waits releaseWait
// after it (for the after readings: a fresh node's free heap is far below
// what soloist serve returns, so the before readings need no wait).
func readNode(ctx context.Context, c *cluster, n *node, settle bool) (nodeReading, error) {
	var r nodeReading
	r.gc = forceGC(ctx, n)
	if r.gc && settle {
		// At rest the runtime itself collects at least every 2 minutes,
		// and soloist serve returns a large free heap to the OS within 5 s
		// of a collection (cmd/soloist/memory.go): read once it could.
		if err := sleep(ctx, releaseWait); err != nil {
			return r, err
		}
	}
	m, err := n.metrics(ctx)
	if err != nil {
		return r, err
	}
	if r.rss, err = n.rss(); err != nil {
		return r, err
	}
	r.heapInuse = m.sum("go_memstats_heap_inuse_bytes", nil)
	r.stackInuse = m.sum("go_memstats_stack_inuse_bytes", nil)
	r.heapFree = m.sum("go_memstats_heap_idle_bytes", nil) - m.sum("go_memstats_heap_released_bytes", nil)
	r.goroutines = m.sum("go_goroutines", nil)
	r.etcd, err = c.etcdWatch(ctx)
	return r, err
}

// phaseIdle has one node hold M waiting Approval instances and reads what
// each costs at rest: memory, goroutines, etcd watchers, etcd requests.
// At rest means parked (the node's steady state for an orchestration that
// waits longer than --park-after); a second node that never parks
// (--park-after 0) gives the same figures for held runs kept in memory
// (unloaded: a run waiting for a second keeps its history, no goroutine),
// suffixed _live.
func phaseIdle(ctx context.Context, b *bench, r *results) error {
	if err := idleRun(ctx, b, r, "idle", b.cfg.idleParkAfter.String(), ""); err != nil {
		return err
	}
	return idleRun(ctx, b, r, "idle-live", "0", "_live")
}

// idleRun measures one node of --park-after parkAfter holding the idle
// instances; suffix tells the live run's keys from the parked one's.
func idleRun(ctx context.Context, b *bench, r *results, name, parkAfter, suffix string) error {
	cfg := b.cfg
	c, err := b.startCluster(ctx, name, 1, nodeOpts{ttl: cfg.leaseTTL, parkAfter: parkAfter})
	if err != nil {
		return err
	}
	defer c.close()
	n := c.nodes[0]
	ow, err := watchOwners(ctx, c.cli)
	if err != nil {
		return err
	}
	defer ow.stop()
	if err := sleep(ctx, cfg.idleSettle); err != nil {
		return err
	}
	before, err := readNode(ctx, c, n, false)
	if err != nil {
		return err
	}
	ids := make([]string, cfg.idleInstances)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", name, i)
	}
	b.logf("%s: %s (--park-after %s) takes %d Approval instances", name, n.id, parkAfter, len(ids))
	t0 := time.Now()
	if err := holdAll(ctx, b, ow, n, ids); err != nil {
		return err
	}
	took := time.Since(t0)
	t1 := time.Now()
	m := float64(len(ids))
	parks := suffix == ""
	if parks {
		b.logf("%s: %s holds %d after %s; waiting until all are parked", name, n.id, len(ids), took.Round(100*time.Millisecond))
		if err := waitParked(ctx, n, m, cfg.idleParkAfter+2*time.Minute); err != nil {
			return err
		}
	}
	b.logf("%s: waiting until %s's goroutines and etcd's watchers are steady", name, n.id)
	if err := waitSteady(ctx, c, n, 2*time.Minute+time.Duration(len(ids))*10*time.Millisecond); err != nil {
		return err
	}
	steady := time.Since(t1)
	if err := sleep(ctx, cfg.idleSettle); err != nil {
		return err
	}
	after, err := readNode(ctx, c, n, true)
	if err != nil {
		return err
	}
	b.heapProfile(ctx, name, n)
	b.logf("%s: counting etcd requests for %s", name, cfg.idleWindow)
	reqs0, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	msgs0, err := c.etcdStreamMsgs(ctx)
	if err != nil {
		return err
	}
	if err := sleep(ctx, cfg.idleWindow); err != nil {
		return err
	}
	reqs1, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	msgs1, err := c.etcdStreamMsgs(ctx)
	if err != nil {
		return err
	}
	if got := ow.heldBy(n.id); got != len(ids) {
		return fmt.Errorf("%s holds %d of %d at the end of the idle window", n.id, got, len(ids))
	}
	gcNote := "no GC forced (the node did not answer /debug/pprof/heap?gc=1): RSS may include garbage and freed memory not yet returned to the OS"
	if before.gc && after.gc {
		gcNote = fmt.Sprintf("GC forced before each reading (GET /debug/pprof/heap?gc=1), %s before the after one", releaseWait)
	}
	short := ""
	if cfg.idleInstances != 10000 {
		short = fmt.Sprintf(" (%d instances, not 10,000)", cfg.idleInstances)
	}
	state := fmt.Sprintf("all %d parked (--park-after %s)", len(ids), parkAfter)
	if !parks {
		state = "none parked (--park-after 0: every run kept in memory, unloaded after 1s of waiting: its goroutine ended, its history in memory)"
	}
	key := func(k string) string { return k + suffix }
	r.addNum("idle", key("bytes_per_held_instance"), float64(after.rss-before.rss)/m, f0,
		fmt.Sprintf("(VmRSS after - before) / %d%s, %s; %.0f -> %.0f MiB; read %s after goroutines and watchers were steady; %s",
			len(ids), short, state, mib(before.rss), mib(after.rss), cfg.idleSettle, gcNote))
	r.addNum("idle", key("heap_inuse_per_held_instance"), (after.heapInuse-before.heapInuse)/m, f0, "go_memstats_heap_inuse_bytes after - before, / count (live and not yet collected)")
	r.addNum("idle", key("heap_free_per_held_instance"), (after.heapFree-before.heapFree)/m, f0, "go_memstats_heap_idle_bytes - go_memstats_heap_released_bytes, after - before, / count (free heap the Go runtime keeps resident for reuse)")
	r.addNum("idle", key("stack_inuse_per_held_instance"), (after.stackInuse-before.stackInuse)/m, f0, "go_memstats_stack_inuse_bytes after - before, / count (goroutine stacks)")
	r.addNum("idle", key("goroutines_per_held_instance"), (after.goroutines-before.goroutines)/m, f2,
		fmt.Sprintf("go_goroutines of the node: %.0f -> %.0f", before.goroutines, after.goroutines))
	r.addNum("idle", key("watchers_per_held_instance"), (after.etcd.watchers-before.etcd.watchers)/m, f2,
		fmt.Sprintf("etcd_debugging_mvcc_watcher_total after - before, / count (watch streams %.0f -> %.0f)", before.etcd.streams, after.etcd.streams))
	r.addNum("idle", key("etcd_watchers"), after.etcd.watchers, f0, "etcd_debugging_mvcc_watcher_total with all held (the benchmark's own owners watch is 1 of them)")
	idle := reqs1.minus(reqs0)
	r.addNum("idle", key("idle_etcd_reqs_per_s"), idle.total()/cfg.idleWindow.Seconds(), f2,
		fmt.Sprintf("etcd unary requests / %s with all held and nothing else happening: %s per s", cfg.idleWindow, idle.per(cfg.idleWindow.Seconds())))
	msgs := msgs1.minus(msgs0)
	r.addNum("idle", key("idle_etcd_stream_msgs_per_s"), msgs.total()/cfg.idleWindow.Seconds(), f2,
		fmt.Sprintf("not requests, for comparison: messages etcd received on streams in the same window: %s per s", msgs.per(cfg.idleWindow.Seconds())))
	if !parks {
		return nil
	}
	r.addNum("idle", "idle_instances", m, f0, "")
	r.addNum("idle", "idle_hold_s", took.Seconds(), f1, fmt.Sprintf("from the first start to all %d owners keys held by the node (%.0f per s; starts %d at a time)", len(ids), m/took.Seconds(), cfg.c))
	r.addNum("idle", "idle_park_s", steady.Seconds(), f1, fmt.Sprintf("then until all were parked (soloist_instances_parked = %d) and the node's goroutines and etcd's watchers changed by under 0.5%% in a second", len(ids)))
	return nil
}

// waitParked waits until the node's soloist_instances_parked reaches want.
func waitParked(ctx context.Context, n *node, want float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	got := 0.0
	for time.Now().Before(deadline) {
		m, err := n.metrics(ctx)
		if err != nil {
			return err
		}
		if got = m.sum("soloist_instances_parked", nil); got >= want {
			return nil
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: %.0f of %.0f instances parked after %s", n.id, got, want, timeout)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// waitSteady waits until the node's goroutine count and etcd's watcher
// count each change by less than 0.5% over a second.
func waitSteady(ctx context.Context, c *cluster, n *node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastG, lastW := -1.0, -1.0
	steady := func(now, last float64) bool { return last >= 0 && math.Abs(now-last) <= 0.005*last }
	for time.Now().Before(deadline) {
		m, err := n.metrics(ctx)
		if err != nil {
			return err
		}
		w, err := c.etcdWatch(ctx)
		if err != nil {
			return err
		}
		g := m.sum("go_goroutines", nil)
		if steady(g, lastG) && steady(w.watchers, lastW) {
			return nil
		}
		lastG, lastW = g, w.watchers
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: goroutines (%.0f) or etcd watchers (%.0f) still changing after %s", n.id, lastG, lastW, timeout)
}
