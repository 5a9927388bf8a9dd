package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// massSetup deploys a cluster whose first node alone holds M waiting
// Approval instances: it starts that node, starts the instances through
// it, waits until it holds them all, and only then starts the others.
func massSetup(ctx context.Context, b *bench, name string) (*cluster, *ownersWatch, []string, error) {
	cfg := b.cfg
	if cfg.nodes < 2 {
		return nil, nil, nil, errTooFewNodes
	}
	c, err := b.newCluster(name, cfg.nodes, nodeOpts{ttl: cfg.massTTL})
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*cluster, *ownersWatch, []string, error) {
		c.close()
		return nil, nil, nil, err
	}
	holder := c.nodes[0]
	if err := c.start(ctx, holder); err != nil {
		return fail(err)
	}
	ow, err := watchOwners(ctx, c.cli)
	if err != nil {
		return fail(err)
	}
	ids := make([]string, cfg.massInstances)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", name, i)
	}
	b.logf("%s: starting %d Approval instances on %s alone", name, len(ids), holder.id)
	if err := holdAll(ctx, b, ow, holder, ids); err != nil {
		_ = ow.stop()
		return fail(err)
	}
	if err := c.start(ctx, c.nodes[1:]...); err != nil {
		_ = ow.stop()
		return fail(err)
	}
	// The peers list the cluster once they are up; give them a moment.
	if err := sleep(ctx, 2*time.Second); err != nil {
		_ = ow.stop()
		return fail(err)
	}
	if got := ow.heldBy(holder.id); got != len(ids) {
		_ = ow.stop()
		return fail(fmt.Errorf("%s holds %d of %d after the peers started", holder.id, got, len(ids)))
	}
	return c, ow, ids, nil
}

// holdAll starts Approval under every ID through n and waits until n holds
// them all.
func holdAll(ctx context.Context, b *bench, ow *ownersWatch, n *node, ids []string) error {
	want := ow.heldBy(n.id) + len(ids)
	s := newStarter(b.cfg.c)
	defer s.close()
	if err := startMany(ctx, s, n.url(), b.cfg.c, "Approval", approvalInput, ids); err != nil {
		return err
	}
	timeout := time.Minute + time.Duration(len(ids))*10*time.Millisecond
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := ow.wait(wctx, func(v ownersView) bool { return v.byNode[n.id] >= want }); err != nil {
		return fmt.Errorf("%s holds %d of %d after %s: %w", n.id, ow.heldBy(n.id), want, timeout, err)
	}
	return nil
}

// heldElsewhere waits until every ID is held by a node other than gone
// and returns when the first and the last of them were seen taken.
func heldElsewhere(ctx context.Context, b *bench, c *cluster, ow *ownersWatch, ids []string, gone string, timeout time.Duration) (first, last time.Time, err error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = ow.wait(wctx, func(v ownersView) bool {
		for _, id := range ids {
			if h, ok := v.held[id]; !ok || h.node == gone {
				return false
			}
		}
		return true
	})
	if err != nil {
		var missing []string
		for _, id := range ids {
			if h, ok := ow.holding(id); !ok || h.node == gone {
				missing = append(missing, id)
			}
		}
		describeMissing(ctx, b, c, ow, missing, gone)
		return first, last, fmt.Errorf("%d of %d not held by another node after %s: %w", len(missing), len(ids), timeout, err)
	}
	for i, id := range ids {
		h, _ := ow.holding(id)
		if i == 0 || h.at.Before(first) {
			first = h.at
		}
		if h.at.After(last) {
			last = h.at
		}
	}
	return first, last, nil
}

// spread is "n2 498, n3 502": who holds the IDs now.
func spread(ow *ownersWatch, ids []string) string {
	count := map[string]int{}
	for _, id := range ids {
		h, _ := ow.holding(id)
		count[h.node]++
	}
	var parts []string
	for n, k := range count {
		parts = append(parts, fmt.Sprintf("%s %d", n, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// phaseMass kills the node holding M instances with SIGKILL.
func phaseMass(ctx context.Context, b *bench, r *results) error {
	c, ow, ids, err := massSetup(ctx, b, "mass")
	if err != nil {
		return err
	}
	defer c.close()
	defer ow.stop()
	victim := c.nodes[0]
	b.logf("mass: kill -9 %s holding %d", victim.id, len(ids))
	t0 := time.Now()
	if err := victim.kill(); err != nil {
		return err
	}
	first, last, err := heldElsewhere(ctx, b, c, ow, ids, victim.id, 4*b.cfg.massTTL+2*time.Minute)
	if err != nil {
		return err
	}
	running, _, runErr := waitCounter(ctx, c.nodes[1:], "soloist_failovers_total", float64(len(ids)), 2*time.Minute)
	peers := b.peerCounters(ctx, c.nodes[1:])
	r.addNum("mass", "mass_takeover_s", last.Sub(t0).Seconds(), f2,
		fmt.Sprintf("SIGKILL of the node holding %d waiting Approval instances to the last owners key recreated elsewhere (now: %s), --lease-ttl %s; %s",
			len(ids), spread(ow, ids), b.cfg.massTTL, peers))
	r.addNum("mass", "mass_takeover_first_s", first.Sub(t0).Seconds(), f2, "to the first of them")
	if runErr == nil {
		r.addNum("mass", "mass_running_s", running.Sub(t0).Seconds(), f2, "SIGKILL until the peers' soloist_failovers_total sums to the count: every instance running again (polled every "+counterPoll.String()+")")
	} else {
		r.note("mass", "mass_running_s", oneLine(runErr.Error()))
	}
	r.addNum("mass", "mass_instances", float64(len(ids)), f0, "")
	r.addNum("mass", "mass_ttl_s", b.cfg.massTTL.Seconds(), f0, "")
	return nil
}

// phaseHandoff stops the node holding M instances with SIGTERM.
func phaseHandoff(ctx context.Context, b *bench, r *results) error {
	c, ow, ids, err := massSetup(ctx, b, "handoff")
	if err != nil {
		return err
	}
	defer c.close()
	defer ow.stop()
	victim := c.nodes[0]
	b.logf("handoff: SIGTERM %s holding %d", victim.id, len(ids))
	// Under -pprof: the peers and etcd over the handoff (the victim's
	// profile ends with it).
	waitProfile := b.profile(ctx, "handoff", c, c.nodes[1:], 3*time.Second)
	defer waitProfile()
	t0 := time.Now()
	if err := victim.sigterm(); err != nil {
		return err
	}
	// Running elsewhere is measured from the signal on: the peers' handoff
	// counters are polled while the keys move, not after.
	type counted struct {
		at  time.Time
		err error
	}
	runningCh := make(chan counted, 1)
	go func() {
		at, _, err := waitCounter(ctx, c.nodes[1:], "soloist_handoffs_total", float64(len(ids)), 2*time.Minute)
		runningCh <- counted{at, err}
	}()
	exited := make(chan time.Time, 1)
	go func() {
		if victim.p.Wait(time.Minute) {
			exited <- time.Now()
		}
		close(exited)
	}()
	first, last, err := heldElsewhere(ctx, b, c, ow, ids, victim.id, 4*b.cfg.massTTL+2*time.Minute)
	if err != nil {
		return err
	}
	rc := <-runningCh
	running, runErr := rc.at, rc.err
	peers := b.peerCounters(ctx, c.nodes[1:])
	r.addNum("handoff", "handoff_1000_s", last.Sub(t0).Seconds(), f2,
		fmt.Sprintf("SIGTERM of the node holding %d waiting Approval instances to the last owners key recreated elsewhere (now: %s); %s",
			len(ids), spread(ow, ids), peers))
	r.addNum("handoff", "handoff_first_s", first.Sub(t0).Seconds(), f2, "to the first of them")
	if runErr == nil {
		r.addNum("handoff", "handoff_running_s", running.Sub(t0).Seconds(), f2,
			fmt.Sprintf("SIGTERM until the peers' soloist_handoffs_total sums to %d: every instance running on another node (polled every %s from the signal on; target <= 1.5 s for 5,000)", len(ids), counterPoll))
	} else {
		r.note("handoff", "handoff_running_s", oneLine(runErr.Error()))
	}
	if at, ok := <-exited; ok {
		r.addNum("handoff", "handoff_exit_s", at.Sub(t0).Seconds(), f2, fmt.Sprintf("SIGTERM to the drained node's exit (%s)", descExit(victim)))
	} else {
		r.note("handoff", "handoff_exit_s", "the node had not exited a minute after SIGTERM")
	}
	r.addNum("handoff", "handoff_instances", float64(len(ids)), f0, "")
	return nil
}

func descExit(n *node) string {
	if err := n.p.ExitErr(); err != nil {
		return err.Error()
	}
	return "status 0"
}

// counterPoll is how often waitCounter reads the nodes' metrics.
const counterPoll = 50 * time.Millisecond

// waitCounter polls the nodes' metrics until the sum of counter reaches
// want and returns when that was seen, or the sum reached by the timeout.
func waitCounter(ctx context.Context, nodes []*node, counter string, want float64, timeout time.Duration) (time.Time, float64, error) {
	deadline := time.Now().Add(timeout)
	var sum float64
	for {
		sum = 0
		for _, n := range nodes {
			m, err := n.metrics(ctx)
			if err != nil {
				return time.Time{}, sum, err
			}
			sum += m.sum(counter, nil)
		}
		if sum >= want {
			return time.Now(), sum, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, sum, fmt.Errorf("%s reached %.0f of %.0f in %s", counter, sum, want, timeout)
		}
		if err := sleep(ctx, counterPoll); err != nil {
			return time.Time{}, sum, err
		}
	}
}

// peerCounters sums the failover and handoff counters of the peers.
func (b *bench) peerCounters(ctx context.Context, nodes []*node) string {
	var failovers, handoffs float64
	for _, n := range nodes {
		m, err := n.metrics(ctx)
		if err != nil {
			return "peer metrics: " + err.Error()
		}
		failovers += m.sum("soloist_failovers_total", nil)
		handoffs += m.sum("soloist_handoffs_total", nil)
	}
	return fmt.Sprintf("peers counted %.0f failovers, %.0f handoffs", failovers, handoffs)
}
