package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// reconcileLoop looks at every instance on each watch event and every
// ResyncInterval, and campaigns for those this node should take.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.kick:
		case <-t.C:
		}
		n.reconcile()
	}
}

// reconcile starts a campaign for every runnable, unheld instance whose
// function this node has, within MaxConcurrent.
func (n *Node) reconcile() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.ownerGone {
		if _, active := n.instances[id]; !active {
			delete(n.ownerGone, id)
		}
	}
	s := n.session
	if n.draining || s == nil || s.Err() != nil {
		return
	}
	for id, v := range n.instances {
		if n.cfg.MaxConcurrent > 0 && len(n.runs)+len(n.campaigning) >= n.cfg.MaxConcurrent {
			return
		}
		if !v.status.Runnable() || n.campaigning[id] || n.runs[id] != nil {
			continue
		}
		if _, held := n.owners[id]; held {
			continue
		}
		if _, ok := n.cfg.Registry.Orchestrator(v.name); !ok {
			continue
		}
		n.campaigning[id] = true
		n.wg.Add(1)
		go n.campaign(s, id, v, n.rankLocked(id)*n.cfg.PreferenceDelay)
	}
}

// rankLocked is this node's place in the instance's rendezvous-hash order
// of live nodes: 0 for the preferred node. Spreading instances this way,
// with a delay per rank, lets the preferred node win without a contest
// while any node still takes the instance if the preferred one does not.
func (n *Node) rankLocked(id string) time.Duration {
	mine := score(n.cfg.NodeID, id)
	rank := 0
	for node := range n.nodes {
		if node != n.cfg.NodeID && score(node, id) > mine {
			rank++
		}
	}
	return time.Duration(rank)
}

func score(node, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(id))
	// FNV alone orders similar node names the same way for most IDs; the
	// murmur3 finaliser spreads them.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// campaign waits its rank's delay, then tries once to take the owners key.
func (n *Node) campaign(s *lease.Session, id string, v instanceView, delay time.Duration) {
	defer n.wg.Done()
	defer func() {
		n.mu.Lock()
		delete(n.campaigning, id)
		n.mu.Unlock()
	}()
	if delay > 0 {
		select {
		case <-n.ctx.Done():
			return
		case <-s.Done():
			return
		case <-time.After(delay):
		}
	}
	n.mu.Lock()
	cur, active := n.instances[id]
	_, held := n.owners[id]
	gone := n.ownerGone[id]
	ok := !n.draining && active && !held && cur.executionID == v.executionID && cur.status.Runnable()
	n.mu.Unlock()
	if !ok {
		return
	}
	value, _ := json.Marshal(orchestrator.Owner{
		Node: n.cfg.NodeID, LeaseID: leaseHex(s.LeaseID()), ExecutionID: v.executionID,
		AcquiredTime: time.Now().UTC(),
	})
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	h, err := s.Acquire(ctx, lease.Claim{
		Key: n.keys.Owner(id), Value: string(value), HandoffKey: n.keys.Handoff(id),
		// Only if the record is still the one we decided on.
		Conditions: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(n.keys.Instance(id)), "=", cur.modRev)},
	})
	cancel()
	switch {
	case errors.Is(err, lease.ErrHeld), errors.Is(err, lease.ErrConditionFailed):
		n.m.campaigns.WithLabelValues("lost").Inc()
		return
	case err != nil:
		n.m.campaigns.WithLabelValues("error").Inc()
		if n.ctx.Err() == nil {
			n.log.Warn("campaign failed", "instance_id", id, "error", err)
		}
		return
	}
	n.m.campaigns.WithLabelValues("won").Inc()
	rctx, rcancel := context.WithCancelCause(n.ctx)
	r := &run{id: id, name: v.name, executionID: v.executionID, holding: h, cancel: rcancel, done: make(chan struct{})}
	n.mu.Lock()
	if n.draining {
		n.mu.Unlock()
		rcancel(errDrain)
		n.release(h, n.marker(h, "drain"))
		return
	}
	n.runs[id] = r
	n.runsWG.Add(1)
	n.mu.Unlock()
	go n.runHeld(rctx, r, gone)
}
