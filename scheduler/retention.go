package scheduler

import (
	"context"
	"time"
)

// retentionBatch bounds the instances one sweep purges before it claims
// the next slot.
const retentionBatch = 500

// retentionLoop purges finished instances older than Retention. Every
// interval (min(Retention/2, 1 minute)) is a slot that one node claims in
// etcd, as a schedule tick is claimed, and sweeps; the others skip it.
func (n *Node) retentionLoop() {
	defer n.wg.Done()
	interval := min(n.cfg.Retention/2, time.Minute)
	if interval < time.Second {
		interval = time.Second
	}
	for {
		next := time.Now().Truncate(interval).Add(interval)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		if !n.canClaim() {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, interval)
		n.sweep(ctx, next)
		cancel()
	}
}

func (n *Node) sweep(ctx context.Context, slot time.Time) {
	ok, err := n.client.ClaimSweep(ctx, "retention", slot, n.cfg.NodeID)
	if err != nil {
		if n.ctx.Err() == nil {
			n.log.Warn("cannot claim the retention sweep; the next slot tries again", "error", err)
			n.health.observe(err)
		}
		return
	}
	if !ok {
		return
	}
	cutoff := time.Now().Add(-n.cfg.Retention)
	total := 0
	for ctx.Err() == nil {
		deleted, err := n.client.PurgeFinished(ctx, cutoff, retentionBatch)
		total += deleted
		n.m.retentionPurged.Add(float64(deleted))
		if err != nil {
			n.log.Warn("retention sweep stopped", "error", err, "purged", total)
			n.health.observe(err)
			return
		}
		if deleted < retentionBatch {
			break
		}
	}
	if total > 0 {
		n.log.Info("retention sweep purged finished instances", "purged", total, "finished_before", cutoff.UTC().Format(time.RFC3339))
	}
}
