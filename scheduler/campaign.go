package scheduler

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// candidates is the node's queue of instances it may campaign for, by the
// time it may: a heap kept up to date by the watch, so the work per event
// is proportional to what changed. An entry is checked again when it is
// due; one that stopped being a candidate meanwhile is dropped.
type candidates struct {
	items  []candidate
	queued map[string]bool
}

type candidate struct {
	id  string
	due time.Time
}

func (q *candidates) Len() int           { return len(q.items) }
func (q *candidates) Less(i, j int) bool { return q.items[i].due.Before(q.items[j].due) }
func (q *candidates) Swap(i, j int)      { q.items[i], q.items[j] = q.items[j], q.items[i] }
func (q *candidates) Push(x any)         { q.items = append(q.items, x.(candidate)) }
func (q *candidates) Pop() any {
	it := q.items[len(q.items)-1]
	q.items = q.items[:len(q.items)-1]
	return it
}

// canRunLocked reports whether this node would run the instance now: it is
// active and runnable, nobody holds it, this node has its function, and it
// does not run or campaign for it already.
func (n *Node) canRunLocked(id string) (*instanceView, bool) {
	v := n.instances[id]
	if v == nil || !v.status.Runnable() || n.runs[id] != nil || n.campaigning[id] != nil {
		return nil, false
	}
	if _, held := n.owners[id]; held {
		return nil, false
	}
	if !n.canRun(v.name, v.version) {
		return nil, false
	}
	return v, true
}

// consider queues id if this node may campaign for it: at once if it is
// the instance's preferred node, after a delay per rank otherwise, and not
// before a backoff after failed runs. Called with n.mu held.
func (n *Node) consider(id string) {
	if n.draining || n.queue.queued[id] {
		return
	}
	if _, ok := n.canRunLocked(id); !ok {
		return
	}
	v, _ := n.canRunLocked(id)
	due := time.Now().Add(n.rankLocked(id) * n.cfg.PreferenceDelay)
	if v.notBefore.After(due) {
		due = v.notBefore.Add(n.rankLocked(id) * n.cfg.PreferenceDelay)
	}
	if r := n.retries[id]; r != nil && r.until.After(due) {
		due = r.until
	}
	if n.queue.queued == nil {
		n.queue.queued = map[string]bool{}
	}
	n.queue.queued[id] = true
	heap.Push(&n.queue, candidate{id: id, due: due})
	if n.queue.items[0].id == id {
		n.poke()
	}
}

// requeueLocked considers every instance again (the ranks changed, or the
// session came back). Called with n.mu held.
func (n *Node) requeueLocked() {
	n.queue = candidates{queued: map[string]bool{}}
	for id := range n.instances {
		n.consider(id)
	}
	n.poke()
}

func (n *Node) requeueAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.requeueLocked()
}

// poke wakes the campaign loop.
func (n *Node) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// campaignLoop starts the campaigns that are due, within the node's limits
// (Campaigns in flight, MaxConcurrent held), and sleeps until the next is.
func (n *Node) campaignLoop() {
	defer n.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := n.startDue()
		timer.Reset(wait)
		select {
		case <-n.ctx.Done():
			return
		case <-n.kick:
		case <-timer.C:
		}
	}
}

// startDue starts every due campaign it may and returns how long to wait
// for the next.
func (n *Node) startDue() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.session
	if n.draining || s == nil || s.Err() != nil {
		return time.Hour // setSession and requeue wake the loop again
	}
	now := time.Now()
	var batch []*campaign
	defer func() {
		// The due campaigns go out together: many at once (a peer's
		// drain, a dead holder) cost one transaction per batch.
		for len(batch) > 0 {
			k := min(len(batch), lease.AcquireBatch)
			n.wg.Add(1)
			go n.campaign(s, batch[:k:k])
			batch = batch[k:]
		}
	}()
	for n.queue.Len() > 0 {
		if len(n.campaigning) >= n.cfg.Campaigns {
			return time.Hour // a campaign's end wakes the loop
		}
		if n.cfg.MaxConcurrent > 0 && len(n.runs)+len(n.campaigning) >= n.cfg.MaxConcurrent {
			return time.Hour
		}
		top := n.queue.items[0]
		if top.due.After(now) {
			return top.due.Sub(now)
		}
		heap.Pop(&n.queue)
		delete(n.queue.queued, top.id)
		v, ok := n.canRunLocked(top.id)
		if !ok {
			continue
		}
		if v.notBefore.After(now) { // its scheduled start is later than the entry said
			n.consider(top.id)
			continue
		}
		c := &campaign{id: top.id, view: *v, gone: n.ownerGone[top.id]}
		n.campaigning[top.id] = c
		batch = append(batch, c)
	}
	return time.Hour
}

// rankLocked is this node's place in the instance's rendezvous-hash order
// of live nodes: 0 for the preferred node. Spreading instances this way,
// with a delay per rank, lets the preferred node win without a contest
// while any node still takes the instance if the preferred one does not.
func (n *Node) rankLocked(id string) time.Duration {
	mine := Score(n.cfg.NodeID, id)
	rank := 0
	for node, info := range n.nodes {
		if node != n.cfg.NodeID && !info.Draining && info.Role != string(RoleAPI) && Score(node, id) > mine {
			rank++
		}
	}
	return time.Duration(rank)
}

// Score is the rendezvous hash that orders the nodes for an instance: the
// node with the highest score for id campaigns for it first, the others
// after a delay that grows with their rank. Exported so that tests and
// tools can tell which node will take an instance.
func Score(node, id string) uint64 {
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

// staleRefusals is how many campaigns refused on a record revision the
// view still has make the node warn.
const staleRefusals = 5

// campaign is an attempt in flight to take one instance.
type campaign struct {
	id    string
	view  instanceView
	gone  ownerGone
	inbox []orchestrator.InboxEntry // entries the watch saw meanwhile, for the run
	// landed is the record a landing's start wrote, and landedInput its
	// input: the run opens from them and the inbox the start read
	// (orchestrator.Client.OpenLanded). reopen marks a landing that
	// learned its outcome by reading later: its run reads everything anew.
	landed      *orchestrator.Record
	landedInput json.RawMessage
	reopen      bool
}

// campaign tries once to take the owners keys of cs (in one transaction
// per lease.AcquireBatch), reading in the same transaction all each run
// needs, and starts the runs.
func (n *Node) campaign(s *lease.Session, cs []*campaign) {
	defer n.wg.Done()
	claims := make([]lease.Claim, len(cs))
	for i, c := range cs {
		value, _ := json.Marshal(orchestrator.Owner{
			Node: n.cfg.NodeID, LeaseID: leaseHex(s.LeaseID()), ExecutionID: c.view.executionID,
			AcquiredTime: time.Now().UTC(),
		})
		claims[i] = lease.Claim{
			Key: n.keys.Owner(c.id), Value: string(value),
			// Only if the record is still the one we decided on.
			Conditions: []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(n.keys.Instance(c.id)), "=", c.view.modRev)},
			Reads:      n.client.OpenOps(c.id, c.view.executionID),
		}
		if c.gone.node != "" && c.gone.node != n.cfg.NodeID {
			claims[i].HandoffFrom = n.keys.Handoff(c.gone.node)
		}
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	results := s.AcquireMany(ctx, claims)
	cancel()
	for i, r := range results {
		c := cs[i]
		switch err := r.Err; {
		case err == nil:
			n.m.campaigns.WithLabelValues("won").Inc()
			n.startRun(r.Holding, c)
			continue
		case errors.Is(err, lease.ErrConditionFailed):
			// The record changed since the view was taken: the watch brings
			// the change in a moment. If the view still has the old record
			// when the refusal comes back, wait before trying again, and say
			// so if it lasts: a view that never catches up would otherwise
			// loop here unseen.
			n.m.campaigns.WithLabelValues("lost").Inc()
			n.mu.Lock()
			if v := n.instances[c.id]; v != nil && v.modRev == c.view.modRev {
				n.backoffLocked(c.id)
				if rs := n.retries[c.id]; rs != nil {
					rs.refused++
					if rs.refused == staleRefusals {
						n.log.Warn("etcd keeps refusing campaigns for an instance because its record changed, and this node's view has not caught up",
							"instance_id", c.id, "view_mod_revision", c.view.modRev, "refusals", rs.refused)
					}
				}
			}
			n.mu.Unlock()
		case errors.Is(err, lease.ErrHeld):
			n.m.campaigns.WithLabelValues("lost").Inc()
		default:
			n.m.campaigns.WithLabelValues("error").Inc()
			if n.ctx.Err() == nil {
				n.log.Warn("campaign failed", "instance_id", c.id, "error", err)
				n.health.observe(err)
			}
			n.mu.Lock()
			n.backoffLocked(c.id)
			n.mu.Unlock()
		}
		n.mu.Lock()
		delete(n.campaigning, c.id)
		n.consider(c.id) // after a backoff if the campaign failed
		n.mu.Unlock()
	}
	n.poke()
}
