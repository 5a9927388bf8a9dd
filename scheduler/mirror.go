package scheduler

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// listPage is how many keys one page of the mirror's listing reads.
const listPage = 2000

// mirror keeps the node's view of the small keys (Keys.WatchRange: inbox
// entries, instance records, node keys, owners keys) with one listing and
// ONE watch for the node, whatever it holds. The view sees a transaction's
// changes together, in revision order: a final write that puts a terminal
// record and deletes the owners key never shows as "active and unowned".
// Inbox entries are handed to the run that holds their instance. When the
// watch breaks (compaction, no leader, a lost connection) it lists again
// at one revision and watches on from that revision + 1, so no change is
// missed, and no run ends for it: runs do not depend on the watch.
func (n *Node) mirror() {
	defer n.wg.Done()
	from, end := n.keys.WatchRange()
	b := newBackoff(100*time.Millisecond, 2*time.Second)
	for n.ctx.Err() == nil {
		kvs, rev, err := n.list(from, end)
		if err != nil {
			if n.ctx.Err() == nil {
				wait := b.NextBackOff()
				n.log.Warn("listing the instances failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
				select {
				case <-n.ctx.Done():
				case <-time.After(wait):
				}
			}
			continue
		}
		b.Reset()
		n.mu.Lock()
		n.reset(kvs, rev)
		n.mu.Unlock()
		n.publish(nil, true)
		n.poke()
		wch := n.cfg.Etcd.Watch(clientv3.WithRequireLeader(n.ctx), from, clientv3.WithRange(end),
			clientv3.WithRev(rev+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if n.ctx.Err() == nil {
					n.log.Warn("watch broke; listing again", "error", err)
				}
				break
			}
			changes := make([]Change, 0, len(wr.Events))
			n.mu.Lock()
			for _, ev := range wr.Events {
				if c, ok := n.apply(ev, true); ok {
					changes = append(changes, c)
				}
			}
			n.mu.Unlock()
			n.publish(changes, false)
		}
	}
}

// list reads [from, end) in pages at one revision, the first page's, and
// returns that revision. (A response's header carries etcd's current
// revision even when the read asked for an older one: taking it from a
// later page would watch on past changes that page 1 did not see.)
func (n *Node) list(from, end string) ([]*mvccpb.KeyValue, int64, error) {
	var out []*mvccpb.KeyValue
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := n.cfg.Etcd.Get(n.ctx, from, opts...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		out = append(out, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// reset replaces the view with a listing at rev, then brings every run,
// campaign and the session's holdings up to date with it.
func (n *Node) reset(kvs []*mvccpb.KeyValue, rev int64) {
	oldOwners := n.owners
	n.instances = map[string]*instanceView{}
	n.owners = map[string]ownerView{}
	n.ownedHere = 0
	n.nodes = map[string]*orchestrator.NodeInfo{}
	var inbox []orchestrator.InboxEntry
	for _, kv := range kvs {
		if id, _, ok := n.keys.InboxID(string(kv.Key)); ok {
			if n.runs[id] != nil || n.campaigning[id] != nil {
				inbox = append(inbox, orchestrator.ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value))
			}
			continue
		}
		n.apply(&clientv3.Event{Type: clientv3.EventTypePut, Kv: kv}, false) // the session gets the listing whole (Resync)
	}
	if n.session != nil {
		n.session.Resync(kvs, rev) // holdings whose keys went while the watch was down end
	}
	for id, o := range oldOwners {
		if _, still := n.owners[id]; !still {
			n.ownerGone[id] = ownerGone{at: time.Now(), executionID: o.executionID, node: o.node, leaseID: o.leaseID}
		}
	}
	for id, r := range n.runs {
		n.checkRun(id, r)
	}
	sort.Slice(inbox, func(i, j int) bool { return inbox[i].CreateRevision < inbox[j].CreateRevision })
	for _, in := range inbox {
		n.dispatch(in)
	}
	n.requeueLocked()
	n.recountUnrunnable()
}

// apply folds one change into the view, and describes it for the
// subscribers (Subscribe) from what it decoded: inbox entries are not
// changes. An owners key's change goes to the session too, if feed. It is
// called with n.mu held.
func (n *Node) apply(ev *clientv3.Event, feed bool) (Change, bool) {
	key := string(ev.Kv.Key)
	del := ev.Type == clientv3.EventTypeDelete
	if _, _, ok := n.keys.InboxID(key); ok {
		if !del && ev.Kv.Version == 1 {
			n.dispatch(orchestrator.ParseInboxEntry(key, ev.Kv.CreateRevision, ev.Kv.Value))
		}
		return Change{}, false
	}
	c := Change{Deleted: del, Revision: ev.Kv.ModRevision}
	if id, ok := orchestrator.IDFrom(n.keys.Instances(), key); ok {
		c.Kind, c.ID = ChangeInstance, id
		if del {
			delete(n.instances, id)
		} else {
			var changed bool
			if c.Status, changed = n.putInstance(id, ev.Kv); !changed {
				return c, true // only its revision changed (a holder's step): nothing to decide
			}
		}
		if r := n.runs[id]; r != nil {
			n.checkRun(id, r)
		}
		n.consider(id)
		n.checkRunnable(id)
		return c, true
	}
	if id, ok := orchestrator.IDFrom(n.keys.Owners(), key); ok {
		c.Kind, c.ID = ChangeOwner, id
		if feed && n.session != nil {
			n.session.Observe(ev) // a delete or replacement of a held key ends its holding
		}
		if del {
			o, had := n.owners[id]
			if had && o.node == n.cfg.NodeID {
				n.ownedHere--
			}
			delete(n.owners, id)
			if _, active := n.instances[id]; active {
				n.ownerGone[id] = ownerGone{at: time.Now(), executionID: o.executionID, node: o.node, leaseID: o.leaseID}
			}
			n.consider(id)
			n.checkRunnable(id)
			return c, true
		}
		var o orchestrator.Owner
		_ = json.Unmarshal(ev.Kv.Value, &o) // a foreign value still marks the key as held
		if old, had := n.owners[id]; had && old.node == n.cfg.NodeID {
			n.ownedHere--
		}
		if o.Node == n.cfg.NodeID {
			n.ownedHere++
			delete(n.unseen, id)
		} else if feed && ev.Kv.Version == 1 {
			n.othersTook.add(time.Now()) // a take seen as it happened, not in a listing
		}
		n.owners[id] = ownerView{node: o.Node, executionID: o.ExecutionID, leaseID: o.LeaseID, token: ev.Kv.CreateRevision}
		delete(n.ownerGone, id)
		n.checkRunnable(id)
		c.Owner = &Holder{Node: o.Node, LeaseID: o.LeaseID, ExecutionID: o.ExecutionID, FencingToken: ev.Kv.CreateRevision}
		return c, true
	}
	if id, ok := orchestrator.IDFrom(n.keys.Nodes(), key); ok {
		c.Kind, c.ID = ChangeNode, id
		old, had := n.nodes[id]
		if del {
			delete(n.nodes, id)
		} else {
			info := &orchestrator.NodeInfo{}
			if json.Unmarshal(ev.Kv.Value, info) != nil {
				info = &orchestrator.NodeInfo{Node: id} // a node that does not say what it runs: assume it runs all
			}
			n.nodes[id] = info
			copied := *info // the view's own is the node's, not the subscribers'
			c.Node = &copied
		}
		if had == del || (had && !del && old.Draining != n.nodes[id].Draining) {
			n.requeueLocked() // ranks changed
		}
		n.recountUnrunnable()
		return c, true
	}
	return Change{}, false
}

// runnableSomewhere reports whether some live node registers v's function
// and version (a node key that does not list functions counts as able).
func (n *Node) runnableSomewhere(v *instanceView) bool {
	for _, info := range n.nodes {
		if info.Functions == nil && info.Role != string(RoleAPI) || info.Runs(v.name, v.version) {
			return true
		}
	}
	return false
}

// checkRunnable updates whether the instance id is one that no live node
// can run (active, runnable, unheld): the gauge counts them per function,
// and each is logged once when it becomes so. Called with n.mu held.
func (n *Node) checkRunnable(id string) {
	v := n.instances[id]
	_, held := n.owners[id]
	stuck := v != nil && v.status.Runnable() && !held && len(n.nodes) > 0 && !n.runnableSomewhere(v)
	fn, was := n.unrunnable[id]
	switch {
	case stuck && !was:
		fn = orchestrator.FunctionKey(v.name, v.version)
		n.unrunnable[id] = fn
		n.m.unrunnable.WithLabelValues(v.name).Inc()
		n.log.Warn("no live node registers this instance's orchestration; it waits until one does",
			"instance_id", id, "function", v.name, "version", v.version, "nodes", len(n.nodes))
	case !stuck && was:
		delete(n.unrunnable, id)
		name, _, _ := strings.Cut(fn, "@")
		n.m.unrunnable.WithLabelValues(name).Dec()
	}
}

// recountUnrunnable checks every instance again (the live nodes changed).
func (n *Node) recountUnrunnable() {
	for id := range n.unrunnable {
		if _, ok := n.instances[id]; !ok {
			n.checkRunnable(id)
		}
	}
	for id := range n.instances {
		n.checkRunnable(id)
	}
}

// putInstance folds a record put into the view, decoding only what a
// campaign decision needs (orchestrator.RecordSummary), and returns its
// status ("" if corrupt). It reports whether anything but the record's
// revision changed: a holder's step rewrites the record of the same
// runnable execution, which no node can act on, so apply stops there.
// Called with n.mu held.
func (n *Node) putInstance(id string, kv *mvccpb.KeyValue) (orchestrator.RuntimeStatus, bool) {
	rec, err := orchestrator.ParseRecordSummary(kv.Value)
	if err != nil {
		n.log.Warn("ignoring corrupt instance record", "instance_id", id, "error", err)
		delete(n.instances, id)
		return "", true
	}
	if !rec.RuntimeStatus.Active() {
		delete(n.instances, id)
		n.checkRunnable(id)
		delete(n.ownerGone, id)
		delete(n.retries, id)
		return rec.RuntimeStatus, true
	}
	var notBefore time.Time
	if rec.ScheduledStartTime != nil && rec.RuntimeStatus == orchestrator.StatusPending {
		notBefore = *rec.ScheduledStartTime
	}
	if v := n.instances[id]; v != nil && v.executionID == rec.ExecutionID && v.status == rec.RuntimeStatus &&
		v.name == rec.Name && v.version == rec.Version && v.notBefore.Equal(notBefore) {
		v.modRev = kv.ModRevision
		return rec.RuntimeStatus, false
	}
	n.instances[id] = &instanceView{name: rec.Name, version: rec.Version, status: rec.RuntimeStatus, executionID: rec.ExecutionID,
		modRev: kv.ModRevision, notBefore: notBefore}
	return rec.RuntimeStatus, true
}

// dispatch hands an inbox entry to the run of its instance, or keeps it
// for the run a campaign in flight may start.
func (n *Node) dispatch(in orchestrator.InboxEntry) {
	id, _, _ := n.keys.InboxID(in.Key)
	if r := n.runs[id]; r != nil {
		n.deliver(r, in)
		return
	}
	if c := n.campaigning[id]; c != nil {
		c.inbox = append(c.inbox, in)
	}
}

// checkRun stops a run whose instance is no longer its runnable execution.
func (n *Node) checkRun(id string, r *run) {
	v, ok := n.instances[id]
	if !ok || v.executionID != r.executionID || !v.status.Runnable() {
		n.stop(r, errChanged)
	}
}
