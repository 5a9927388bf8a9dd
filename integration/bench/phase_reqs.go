package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// phaseReqs counts etcd's unary requests over K lifecycles on an
// otherwise idle cluster.
func phaseReqs(ctx context.Context, b *bench, r *results) error {
	cfg := b.cfg
	c, err := b.startCluster(ctx, "reqs", cfg.nodes, nodeOpts{ttl: cfg.leaseTTL})
	if err != nil {
		return err
	}
	defer c.close()
	sw, err := watchStatuses(ctx, c.cli)
	if err != nil {
		return err
	}
	defer sw.stop()
	// Let the nodes finish starting up, then count what they do at idle.
	const idle = 3 * time.Second
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	idle0, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	if err := sleep(ctx, idle); err != nil {
		return err
	}
	before, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	msgs0, err := c.etcdStreamMsgs(ctx)
	if err != nil {
		return err
	}
	b.logf("reqs: %d HelloCities lifecycles, %d at a time, on an idle cluster of %d nodes", cfg.reqsLifecycles, cfg.reqsConcurrency, len(c.nodes))
	t0 := time.Now()
	s := newStarter(cfg.reqsConcurrency)
	defer s.close()
	lat, err := sequentialLifecycles(ctx, sw, httpRetryStarts(s, c.urls(c.nodes)), "rq", cfg.reqsLifecycles, cfg.reqsConcurrency)
	if err != nil {
		return err
	}
	// Requests that follow a Completed (a peer's re-read) still belong to
	// the lifecycle.
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	took := time.Since(t0)
	after, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	msgs1, err := c.etcdStreamMsgs(ctx)
	if err != nil {
		return err
	}
	k := float64(cfg.reqsLifecycles)
	delta := after.minus(before)
	idleRate := before.minus(idle0).total() / idle.Seconds()
	r.addNum("reqs", "etcd_reqs_per_lifecycle", delta.total()/k, f2,
		fmt.Sprintf("etcd unary requests (grpc_server_handled_total, grpc_type=unary, every method and code) over %d lifecycles / %d; watch and keepalive streams not counted; idle cluster: %.2f req/s before, i.e. ~%.2f of this figure",
			cfg.reqsLifecycles, cfg.reqsLifecycles, idleRate, idleRate*took.Seconds()/k))
	for _, m := range delta.methods() {
		r.addNum("reqs", "etcd_reqs_per_lifecycle_"+strings.ToLower(m), delta[m]/k, f2, "  "+m)
	}
	msgs := msgs1.minus(msgs0)
	r.addNum("reqs", "etcd_stream_msgs_per_lifecycle", msgs.total()/k, f2,
		fmt.Sprintf("not counted above: messages etcd received on streams per lifecycle (watch creates and cancels, keepalives): %s", msgs.per(k)))
	r.addNum("reqs", "lifecycle_idle_p50_ms", ms1(percentile(lat, 50)), f1, fmt.Sprintf("one lifecycle on an idle cluster (%d at a time), start sent to Completed seen", cfg.reqsConcurrency))
	return nil
}

// httpRetryStarts starts through the nodes' HTTP APIs with startOne's
// retries.
func httpRetryStarts(s *starter, urls []string) startFunc {
	return func(ctx context.Context, node int, id string) error {
		return startOne(ctx, s, urls[node%len(urls)], "HelloCities", nil, id)
	}
}

// sequentialLifecycles runs n HelloCities lifecycles (IDs idPrefix-i), c
// at a time, each on the next node, and returns their latencies.
func sequentialLifecycles(ctx context.Context, sw *statusWatch, start startFunc, idPrefix string, n, c int) ([]time.Duration, error) {
	ids := make(chan int)
	errs := make(chan error, c)
	lats := make(chan time.Duration, n)
	for range c {
		go func() {
			for i := range ids {
				id := fmt.Sprintf("%s-%d", idPrefix, i)
				done := sw.expect(id)
				t0 := time.Now()
				if err := start(ctx, i, id); err != nil {
					errs <- err
					return
				}
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				select {
				case <-done:
				case <-wctx.Done():
				}
				cancel()
				f, ok := sw.final(id)
				if !ok || f.status != "Completed" {
					errs <- fmt.Errorf("lifecycle %s: not Completed within a minute (%s)", id, f.status)
					return
				}
				lats <- f.at.Sub(t0)
			}
			errs <- nil
		}()
	}
	var firstErr error
	sent := 0
	for sent < n && firstErr == nil {
		select {
		case ids <- sent:
			sent++
		case err := <-errs:
			firstErr = err
			c--
		case <-ctx.Done():
			firstErr = ctx.Err()
		}
	}
	close(ids)
	for ; c > 0; c-- {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	close(lats)
	var out []time.Duration
	for d := range lats {
		out = append(out, d)
	}
	return out, firstErr
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
