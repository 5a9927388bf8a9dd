package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// This file is what the node tells observers (the dashboard): the changes
// its one watch sees, as they come, and what its view holds now. It reads
// nothing from etcd that the node does not read already, but for the node
// list of a node that does not watch (RoleAPI), lease times to live, and
// schedule state.

// ChangeKind says what a Change is about.
type ChangeKind string

// Change kinds.
const (
	// ChangeInstance: an instance record was written or deleted.
	ChangeInstance ChangeKind = "instance"
	// ChangeOwner: an owners key was created (a holder acquired the
	// instance) or deleted (released, finished, or its lease ended).
	ChangeOwner ChangeKind = "owner"
	// ChangeNode: a node key was written (a node came up, or drains) or
	// deleted (its session lease ended).
	ChangeNode ChangeKind = "node"
	// ChangeReset: the node listed every key again (its watch broke):
	// observers should read what they show again.
	ChangeReset ChangeKind = "reset"
)

// Change is one change the node's watch saw.
type Change struct {
	Kind ChangeKind `json:"kind"`
	// ID is the instance ID (instance, owner) or node ID (node).
	ID      string `json:"id,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	// Revision is the etcd revision of the change.
	Revision int64 `json:"revision"`
	// Status is the record's runtime status (instance puts).
	Status orchestrator.RuntimeStatus `json:"status,omitempty"`
	// Owner is the new holding (owner puts).
	Owner *Holder `json:"owner,omitempty"`
	// Node is the node key's value (node puts).
	Node *orchestrator.NodeInfo `json:"node,omitempty"`
	// Seen is when the node received the change.
	Seen time.Time `json:"seen"`
}

// Holder is who holds an instance, as its owners key says.
type Holder struct {
	Node        string `json:"node"`
	LeaseID     string `json:"leaseId"`
	ExecutionID string `json:"executionId"`
	// FencingToken is the owners key's CreateRevision.
	FencingToken int64 `json:"fencingToken"`
}

// subscribers are the observers of the node's watch.
type subscribers struct {
	mu   sync.Mutex
	next int
	subs map[int]chan Change
	fns  map[int]func(Change)
}

// OnChange has fn called with every change the node's watch sees from now
// on, in revision order, from the watch's goroutine: fn must be quick and
// must not block or call the node. The returned function ends it
// (idempotent). It starts no goroutine.
func (n *Node) OnChange(fn func(Change)) (cancel func()) {
	s := &n.subs
	s.mu.Lock()
	if s.fns == nil {
		s.fns = map[int]func(Change){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.fns, id)
		s.mu.Unlock()
	}
}

// Subscribe returns a channel that receives every change the node's watch
// sees from now on, in revision order, and a function that ends the
// subscription (idempotent). An observer that falls more than buf changes
// behind is dropped: its channel is closed, and it should read again and
// subscribe again. Only nodes that run instances watch (Role.Runs); on
// others the channel receives nothing until the subscription ends.
func (n *Node) Subscribe(buf int) (<-chan Change, func()) {
	if buf < 1 {
		buf = 1
	}
	s := &n.subs
	ch := make(chan Change, buf)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = map[int]chan Change{}
	}
	id := s.next
	s.next++
	s.subs[id] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if c, ok := s.subs[id]; ok {
			delete(s.subs, id)
			close(c)
		}
	}
}

// Watches reports whether the node keeps a live view of the cluster
// (Subscribe, Owners): nodes of a role that runs instances do.
func (n *Node) Watches() bool { return n.cfg.Role.Runs() }

// publish hands the changes of one watch response (apply's), or a reset,
// to the subscribers; it never blocks the watch.
func (n *Node) publish(changes []Change, reset bool) {
	s := &n.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subs) == 0 && len(s.fns) == 0 {
		return
	}
	now := time.Now()
	out := changes
	if reset {
		out = []Change{{Kind: ChangeReset}}
	}
	for i := range out {
		out[i].Seen = now
	}
	for _, fn := range s.fns {
		for _, c := range out {
			fn(c)
		}
	}
	for id, ch := range s.subs {
		for _, c := range out {
			select {
			case ch <- c:
				continue
			default:
			}
			delete(s.subs, id)
			close(ch)
			break
		}
	}
}

// Owners returns who holds each held instance, as the node's view has it
// now (empty on a node that does not watch).
func (n *Node) Owners() map[string]Holder {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]Holder, len(n.owners))
	for id, o := range n.owners {
		out[id] = Holder{Node: o.node, LeaseID: o.leaseID, ExecutionID: o.executionID, FencingToken: o.token}
	}
	return out
}

// Nodes returns the live nodes (those whose node key exists), sorted by
// ID: from the node's view, or, on a node that does not watch, from one
// read of the node keys.
func (n *Node) Nodes(ctx context.Context) ([]orchestrator.NodeInfo, error) {
	var out []orchestrator.NodeInfo
	if n.Watches() {
		n.mu.Lock()
		for _, info := range n.nodes {
			out = append(out, *info)
		}
		n.mu.Unlock()
	} else {
		resp, err := n.cfg.Etcd.Get(ctx, n.keys.Nodes(), clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("scheduler: read node keys: %w", err)
		}
		for _, kv := range resp.Kvs {
			var info orchestrator.NodeInfo
			if json.Unmarshal(kv.Value, &info) != nil {
				id, _ := orchestrator.IDFrom(n.keys.Nodes(), string(kv.Key))
				info = orchestrator.NodeInfo{Node: id}
			}
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// LeaseTimeToLive is lease.TimeToLive on the node's etcd connection: how
// long the lease id (hex, as node and owners keys print it) has left.
func (n *Node) LeaseTimeToLive(ctx context.Context, id string) (left, granted time.Duration, err error) {
	return lease.TimeToLive(ctx, n.cfg.Etcd, id)
}

// ScheduleInfo is one of the node's schedules and its state in etcd.
type ScheduleInfo struct {
	Name       string `json:"name"`
	Spec       string `json:"cron"`
	TimeZone   string `json:"timeZone"`
	Function   string `json:"function"`
	InstanceID string `json:"instanceId"`
	// Next is the next tick after now, by this node's clock; zero if none.
	Next time.Time `json:"next"`
	// State is the last claimed tick and what it did; nil if none was.
	State *orchestrator.ScheduleState `json:"state,omitempty"`
}

// Schedules returns the node's schedules with their state, sorted by name.
// A schedule whose state cannot be read has Err set in the joined error
// and is returned without it.
func (n *Node) Schedules(ctx context.Context) ([]ScheduleInfo, error) {
	now := time.Now()
	out := make([]ScheduleInfo, 0, len(n.scheds))
	var errs []error
	for _, s := range n.scheds { // the fields read here never change after New
		loc := s.Location
		if loc == nil {
			loc = time.UTC
		}
		si := ScheduleInfo{Name: s.Name, Spec: s.Spec, TimeZone: loc.String(), Function: s.Function,
			InstanceID: s.InstanceID, Next: s.cron.Next(now, loc)}
		st, err := n.client.ScheduleState(ctx, s.Name)
		if err != nil {
			errs = append(errs, err)
		}
		si.State = st
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// Drained is closed once Drain has finished: observers stop then.
func (n *Node) Drained() <-chan struct{} { return n.drained }
