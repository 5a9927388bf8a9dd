package scheduler

import (
	"context"
	"encoding/json"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// StartInstance starts an instance as orchestrator.Client.Start does and,
// when this node should run it, takes it in the same transaction ("start
// where you land"): the start's commit also creates the instance's owners
// key on this node's session lease (a lease.Landing, a nested transaction
// that never fails the start, reading in it only the inbox: the record
// and input are the start's own), and the node runs the instance at once,
// without a campaign. The holding is a won campaign's: its fencing token
// is the owners key's CreateRevision, under the same self-fencing and
// watch. The start's answer is the same either way.
//
// The node lands a start when it runs instances (not RoleAPI), is not
// draining, has a live session, registers the function at the start's
// version (natively, or with a connected worker that serves it: Remote), is below MaxConcurrent, the start is not scheduled for later
// (StartAt), and the rendezvous order allows it: this node is the
// instance's preferred node, or it holds no more than its fair share of
// the held instances (fairShare), so that a client that sends every start
// to one node does not pile the instances there.
// Otherwise, or if the owners key exists (a terminateExisting over a
// held execution), the start is as before and the preferred node
// campaigns for it.
func (n *Node) StartInstance(ctx context.Context, name string, opts orchestrator.StartOptions) (*orchestrator.StartResult, error) {
	var (
		land *lease.Landing
		c    *campaign
	)
	res, err := n.client.StartIf(ctx, name, opts, nil, func(rec *orchestrator.Record) []clientv3.Op {
		land, c = n.prepareLanding(rec, opts.StartAt)
		if land == nil {
			return nil
		}
		return []clientv3.Op{land.Op()}
	})
	if land == nil {
		return res, err
	}
	if err != nil || !res.Started {
		land.Abort()
		n.unland(c)
		return res, err
	}
	var op = res.Extra // nil when the start learned by reading that it applied
	var h *lease.Holding
	if len(op) == 1 {
		h, err = land.Adopt(ctx, res.Revision, op[0])
		c.landedInput = res.Status.Input
	} else {
		h, err = land.Adopt(ctx, 0, nil)
		c.landed, c.reopen = nil, true
	}
	if err != nil {
		// Not taken (the key was held) or not known: the instance is
		// started; the node that campaigns for it runs it.
		n.unland(c)
		return res, nil
	}
	c.view.modRev = res.Revision
	if c.view.modRev == 0 {
		c.view.modRev = h.Revision()
	}
	n.mu.Lock()
	// The view may not have the record yet (the watch brings it in a
	// moment): the run is checked against the view, so give it the record
	// the start wrote, unless it already has it or a later one.
	if v := n.instances[c.id]; v == nil || v.modRev < c.view.modRev {
		view := c.view
		n.instances[c.id] = &view
	}
	n.mu.Unlock()
	n.m.startsLanded.Inc()
	n.startRun(h, c)
	return res, nil
}

// prepareLanding decides whether this node takes the instance of rec in
// its start transaction, and if so registers it as a campaign in flight
// (so that the node neither campaigns for it nor exceeds MaxConcurrent,
// and the watch keeps its inbox entries for the run) and returns the
// landing whose Op the start carries.
func (n *Node) prepareLanding(rec *orchestrator.Record, startAt time.Time) (*lease.Landing, *campaign) {
	if !n.cfg.Role.Runs() || startAt.After(time.Now()) || rec.ScheduledStartTime != nil {
		return nil, nil
	}
	if !n.canRun(rec.Name, rec.Version) {
		return nil, nil
	}
	id := rec.InstanceID
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.session
	switch {
	case !n.started || n.draining || s == nil || s.Err() != nil:
		return nil, nil
	case n.runs[id] != nil || n.campaigning[id] != nil:
		return nil, nil
	case n.cfg.MaxConcurrent > 0 && len(n.runs)+len(n.campaigning) >= n.cfg.MaxConcurrent:
		return nil, nil
	case !n.fairLocked(id):
		return nil, nil
	}
	value, _ := json.Marshal(orchestrator.Owner{
		Node: n.cfg.NodeID, LeaseID: leaseHex(s.LeaseID()), ExecutionID: rec.ExecutionID,
		AcquiredTime: time.Now().UTC(),
	})
	l, err := s.Land(lease.Claim{Key: n.keys.Owner(id), Value: string(value), Reads: n.client.LandedOps(id)})
	if err != nil {
		return nil, nil
	}
	c := &campaign{id: id, gone: n.ownerGone[id], landed: rec, view: instanceView{
		name: rec.Name, version: rec.Version, status: rec.RuntimeStatus, executionID: rec.ExecutionID,
	}}
	n.campaigning[id] = c
	return l, c
}

// fairLocked reports whether the rendezvous order lets this node take id
// without a campaign: it is id's preferred node, or it holds no more than
// its fair share (fairShare) of the instances held across the live runner
// nodes. Called with n.mu held.
func (n *Node) fairLocked(id string) bool {
	if n.rankLocked(id) == 0 {
		return true
	}
	runners := 0
	for node, info := range n.nodes {
		if node == n.cfg.NodeID || !info.Draining && info.Role != string(RoleAPI) {
			runners++
		}
	}
	if _, self := n.nodes[n.cfg.NodeID]; !self {
		runners++
	}
	// Both counts from the view, which sees an owners key only once the
	// watch brings it, plus what it does not see yet: the campaigns and
	// landings in flight here and the runs they began whose owners keys
	// the watch has not brought (a burst of starts to one node counts them
	// at once, even when the watch lags behind), and the other nodes'
	// takes in flight (othersInFlight).
	inflight := len(n.campaigning) + len(n.unseen)
	others := othersInFlight(len(n.campaigning), n.othersTook.at(time.Now()), runners)
	return fairShare(n.ownedHere+inflight, len(n.owners)+inflight+others, runners)
}

// othersInFlight estimates the takes in flight on the other runner nodes,
// which no view shows: each of them has as many starts in flight as this
// node (mine) when the load is spread, so as many are counted for each,
// but never more than the other nodes were seen taking over the last
// second or so (took, takeRate): on a busy cluster whose instances are
// short, most held instances are starts in flight, and counting only this
// node's made every node believe it held most of them (a fifth of the
// starts of the benchmark's lifecycle phase went to a campaign, one
// transaction more each); a client that sends its starts to one node still
// spreads them, because the other nodes take only what it leaves them.
func othersInFlight(mine int, took float64, runners int) int {
	if runners < 2 {
		return 0
	}
	each := min(mine, int(took)/(runners-1))
	return each * (runners - 1)
}

// takeRate counts events with an exponential decay of takeDecay: its
// value is about the events of the last takeDecay.
type takeRate struct {
	v    float64
	last time.Time
}

const takeDecay = time.Second

func (r *takeRate) add(now time.Time) { r.v = r.at(now) + 1; r.last = now }

// at is the value at now.
func (r *takeRate) at(now time.Time) float64 {
	if r.v == 0 || !now.After(r.last) {
		return r.v
	}
	return r.v * math.Exp(-float64(now.Sub(r.last))/float64(takeDecay))
}

// fairShare reports whether a node that holds mine of the held instances
// (as its view counts them) across runners nodes may take one more
// without a campaign: mine is at most the even share plus a quarter of it
// plus landSlack. The slack is what a balanced load (every node receiving
// its part of the starts) swings by: the view counts an owners key only
// once the watch brings it, and short instances come and go faster than
// that, so a tight bound sends most starts of a busy balanced cluster to
// a campaign, one transaction more each. A client that sends every start
// to one node still spreads them: that node stops landing at 1.25 x its
// share + landSlack, and the preferred nodes campaign for the rest.
func fairShare(mine, held, runners int) bool {
	if runners < 1 {
		runners = 1
	}
	return 4*mine*runners <= 5*held+4*landSlack*runners
}

// landSlack is how many instances above 1.25 x its even share a node may
// hold and still take a start it receives without a campaign.
const landSlack = 8

// unland forgets a landing that did not take its instance: the node may
// campaign for it as for any other.
func (n *Node) unland(c *campaign) {
	n.mu.Lock()
	if n.campaigning[c.id] == c {
		delete(n.campaigning, c.id)
	}
	n.consider(c.id)
	n.mu.Unlock()
	n.poke()
}
