package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// approvalInput makes Approval wait for its event far longer than any run.
var approvalInput = []byte(`{"timeoutSeconds": 86400}`)

var errTooFewNodes = errors.New("needs -nodes 2 or more: someone must take over")

// phaseTakeover kills the holder of a waiting instance with SIGKILL, M
// times, and times until another node holds it.
func phaseTakeover(ctx context.Context, b *bench, r *results) error {
	cfg := b.cfg
	if cfg.nodes < 2 {
		return errTooFewNodes
	}
	c, err := b.startCluster(ctx, "takeover", cfg.nodes, nodeOpts{ttl: cfg.takeoverTTL})
	if err != nil {
		return err
	}
	defer c.close()
	ow, err := watchOwners(ctx, c.cli)
	if err != nil {
		return err
	}
	defer ow.stop()
	s := newStarter(2)
	defer s.close()
	b.logf("takeover: %d rounds of kill -9 of an Approval instance's holder, --lease-ttl %s", cfg.takeovers, cfg.takeoverTTL)
	var times []time.Duration
	for i := range cfg.takeovers {
		d, err := takeoverOnce(ctx, c, ow, s, fmt.Sprintf("tk-%d", i), c.nodes[i%len(c.nodes)])
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		times = append(times, d)
	}
	note := fmt.Sprintf("SIGKILL of the holder to the owners key recreated by another node (watched), n=%d, --lease-ttl %s", len(times), cfg.takeoverTTL)
	r.addNum("takeover", "takeover_p50_s", percentile(times, 50).Seconds(), f2, note)
	r.addNum("takeover", "takeover_p99_s", percentile(times, 99).Seconds(), f2, "")
	r.addNum("takeover", "takeover_max_s", percentile(times, 100).Seconds(), f2, "")
	r.addNum("takeover", "takeover_min_s", percentile(times, 0).Seconds(), f2, "")
	return nil
}

// takeoverOnce starts Approval id through via, waits until it is held,
// kills its holder, waits until another node holds it and restarts the
// killed node.
func takeoverOnce(ctx context.Context, c *cluster, ow *ownersWatch, s *starter, id string, via *node) (time.Duration, error) {
	if err := startOne(ctx, s, via.url(), "Approval", approvalInput, id); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := ow.wait(wctx, func(v ownersView) bool { _, ok := v.held[id]; return ok }); err != nil {
		return 0, fmt.Errorf("%s not held within 30s: %w", id, err)
	}
	h, _ := ow.holding(id)
	victim, ok := c.node(h.node)
	if !ok {
		return 0, fmt.Errorf("%s is held by %q, not a node of this run", id, h.node)
	}
	t0 := time.Now()
	if err := victim.kill(); err != nil {
		return 0, err
	}
	tctx, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	err := ow.wait(tctx, func(v ownersView) bool {
		now, ok := v.held[id]
		return ok && now.createRev > h.createRev
	})
	if err != nil {
		return 0, fmt.Errorf("%s not taken over within a minute of killing %s: %w", id, victim.id, err)
	}
	now, _ := ow.holding(id)
	if err := c.start(ctx, victim); err != nil {
		return 0, fmt.Errorf("restart %s: %w", victim.id, err)
	}
	return now.at.Sub(t0), nil
}
