package scheduler

import (
	"encoding/json"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// mirror keeps a local view of the instance records, owners keys and node
// keys. One list and one watch cover all three (they sit side by side in
// key order), so the view sees a transaction's changes together, in
// revision order: a final write that puts a terminal record and deletes the
// owners key never shows as "active and unowned". When the watch breaks
// (compaction, no leader, a lost connection) it lists again, so no change
// is missed.
func (n *Node) mirror() {
	defer n.wg.Done()
	from, end := n.keys.Instances(), clientv3.GetPrefixRangeEnd(n.keys.Owners())
	for backoff := 100 * time.Millisecond; n.ctx.Err() == nil; {
		resp, err := n.cfg.Etcd.Get(n.ctx, from, clientv3.WithRange(end))
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("list failed; retrying", "error", err, "backoff", backoff)
			}
			select {
			case <-n.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		n.mu.Lock()
		n.reset(resp.Kvs)
		n.mu.Unlock()
		n.poke()
		wch := n.cfg.Etcd.Watch(clientv3.WithRequireLeader(n.ctx), from, clientv3.WithRange(end),
			clientv3.WithRev(resp.Header.Revision+1), clientv3.WithPrevKV())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if n.ctx.Err() == nil {
					n.log.Warn("watch broke; listing again", "error", err)
				}
				break
			}
			n.mu.Lock()
			for _, ev := range wr.Events {
				n.apply(ev)
			}
			n.mu.Unlock()
			n.poke()
		}
	}
}

// reset replaces the view with a listing.
func (n *Node) reset(kvs []*mvccpb.KeyValue) {
	oldOwners := n.owners
	n.instances = map[string]instanceView{}
	n.owners = map[string]ownerView{}
	n.nodes = map[string]bool{}
	for _, kv := range kvs {
		n.apply(&clientv3.Event{Type: clientv3.EventTypePut, Kv: kv})
	}
	for id, o := range oldOwners {
		if _, still := n.owners[id]; !still {
			n.ownerGone[id] = ownerGone{at: time.Now(), executionID: o.executionID}
		}
	}
	for id, r := range n.runs {
		n.checkRun(id, r)
	}
}

// apply folds one change into the view.
func (n *Node) apply(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	del := ev.Type == clientv3.EventTypeDelete
	if id, ok := orchestrator.IDFrom(n.keys.Instances(), key); ok {
		if del {
			delete(n.instances, id)
		} else {
			n.putInstance(id, ev.Kv)
		}
		if r := n.runs[id]; r != nil {
			n.checkRun(id, r)
		}
		return
	}
	if id, ok := orchestrator.IDFrom(n.keys.Owners(), key); ok {
		if del {
			gone := ownerGone{at: time.Now(), executionID: n.owners[id].executionID}
			delete(n.owners, id)
			n.ownerGone[id] = gone
			return
		}
		var o orchestrator.Owner
		_ = json.Unmarshal(ev.Kv.Value, &o) // a foreign value still marks the key as held
		n.owners[id] = ownerView{node: o.Node, executionID: o.ExecutionID, token: ev.Kv.CreateRevision}
		delete(n.ownerGone, id)
		return
	}
	if id, ok := orchestrator.IDFrom(n.keys.Nodes(), key); ok {
		if del {
			delete(n.nodes, id)
		} else {
			n.nodes[id] = true
		}
	}
}

func (n *Node) putInstance(id string, kv *mvccpb.KeyValue) {
	var rec struct {
		Name          string                     `json:"name"`
		RuntimeStatus orchestrator.RuntimeStatus `json:"runtimeStatus"`
		ExecutionID   string                     `json:"executionId"`
	}
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		n.log.Warn("ignoring corrupt instance record", "instance_id", id, "error", err)
		delete(n.instances, id)
		return
	}
	if !rec.RuntimeStatus.Active() {
		delete(n.instances, id)
		return
	}
	n.instances[id] = instanceView{name: rec.Name, status: rec.RuntimeStatus, executionID: rec.ExecutionID, modRev: kv.ModRevision}
}

// checkRun stops a run whose instance is no longer its runnable execution.
func (n *Node) checkRun(id string, r *run) {
	v, ok := n.instances[id]
	if !ok || v.executionID != r.executionID || !v.status.Runnable() {
		r.cancel(errChanged)
	}
}
