package dashboard

import (
	"sync"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// OwnershipEvent is one change of an instance's holder seen by the node.
type OwnershipEvent struct {
	Time     time.Time
	Instance string
	// Kind is "acquired", "failover" (the previous holder's node was gone),
	// "handoff" (it was draining), "released" (the owners key was deleted)
	// or "continued as new" (the record turned ContinuedAsNew: its
	// execution ended and the next generation begins).
	Kind  string
	Node  string
	From  string
	Token int64
	Lease string
	// Execution is the execution ID held or released ("" for "continued
	// as new", whose record change does not name it).
	Execution string
}

// Generation is one execution of an instance that this node's watch saw
// held: ContinueAsNew (or a restart) starts a new execution ID.
type Generation struct {
	Execution string
	// First is when this node first saw it held.
	First time.Time
	// Holders are the holdings of it seen, in order.
	Holders []OwnershipEvent
	// ContinuedAsNew: the record was seen turning ContinuedAsNew after
	// this execution was held and before the next one was.
	ContinuedAsNew bool
}

const (
	perInstance = 32
	maxInstance = 10000
	maxRecent   = 100
)

// ownership keeps the ownership history the node's watch saw since the
// dashboard started, bounded: 32 events per instance, 10,000 instances,
// the 100 latest takeovers.
type ownership struct {
	mu     sync.Mutex
	byID   map[string][]OwnershipEvent
	order  []string
	last   map[string]string // instance -> last holder node
	exec   map[string]string // instance -> last execution held
	nodes  map[string]bool   // live node -> draining
	recent []OwnershipEvent
	gone   map[string]time.Time // nodes seen leaving
}

func newOwnership() *ownership {
	return &ownership{byID: map[string][]OwnershipEvent{}, last: map[string]string{}, exec: map[string]string{}, nodes: map[string]bool{}, gone: map[string]time.Time{}}
}

func (o *ownership) record(c scheduler.Change) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch c.Kind {
	case scheduler.ChangeNode:
		if c.Deleted {
			delete(o.nodes, c.ID)
			o.gone[c.ID] = c.Seen
		} else if c.Node != nil {
			o.nodes[c.ID] = c.Node.Draining
			delete(o.gone, c.ID)
		}
	case scheduler.ChangeInstance:
		if !c.Deleted && c.Status == orchestrator.StatusContinuedAsNew {
			o.add(OwnershipEvent{Time: c.Seen, Instance: c.ID, Kind: "continued as new"})
		}
	case scheduler.ChangeOwner:
		ev := OwnershipEvent{Time: c.Seen, Instance: c.ID}
		if c.Deleted {
			ev.Kind, ev.Node, ev.Execution = "released", o.last[c.ID], o.exec[c.ID]
		} else {
			ev.Kind, ev.Node, ev.Token, ev.Lease, ev.Execution = "acquired", c.Owner.Node, c.Owner.FencingToken, c.Owner.LeaseID, c.Owner.ExecutionID
			if prev := o.last[c.ID]; prev != "" && prev != c.Owner.Node {
				ev.From = prev
				draining, live := o.nodes[prev]
				switch {
				case !live:
					ev.Kind = "failover"
				case draining:
					ev.Kind = "handoff"
				}
			}
			o.last[c.ID] = c.Owner.Node
			o.exec[c.ID] = c.Owner.ExecutionID
		}
		o.add(ev)
	}
}

// add appends ev to its instance's history (and to the takeovers); o.mu
// is held.
func (o *ownership) add(ev OwnershipEvent) {
	if _, ok := o.byID[ev.Instance]; !ok {
		o.order = append(o.order, ev.Instance)
		if len(o.order) > maxInstance {
			old := o.order[0]
			o.order = o.order[1:]
			delete(o.byID, old)
			delete(o.last, old)
			delete(o.exec, old)
		}
	}
	evs := append(o.byID[ev.Instance], ev)
	if len(evs) > perInstance {
		evs = evs[len(evs)-perInstance:]
	}
	o.byID[ev.Instance] = evs
	if ev.Kind == "failover" || ev.Kind == "handoff" {
		o.recent = append(o.recent, ev)
		if len(o.recent) > maxRecent {
			o.recent = o.recent[len(o.recent)-maxRecent:]
		}
	}
}

func (o *ownership) of(id string) []OwnershipEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]OwnershipEvent(nil), o.byID[id]...)
}

// takeovers returns the latest takeovers, newest first, and the nodes seen
// leaving with when.
func (o *ownership) takeovers() ([]OwnershipEvent, map[string]time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]OwnershipEvent, 0, len(o.recent))
	for i := len(o.recent) - 1; i >= 0; i-- {
		out = append(out, o.recent[i])
	}
	gone := make(map[string]time.Time, len(o.gone))
	for k, v := range o.gone {
		gone[k] = v
	}
	return out, gone
}

// generations groups an instance's ownership history by execution, oldest
// first: the executions this node saw held, and which of them were seen
// ending with ContinueAsNew.
func generations(evs []OwnershipEvent) []Generation {
	var out []Generation
	for _, ev := range evs {
		switch {
		case ev.Kind == "continued as new":
			if len(out) > 0 {
				out[len(out)-1].ContinuedAsNew = true
			}
		case ev.Kind == "released" || ev.Execution == "":
		case len(out) == 0 || out[len(out)-1].Execution != ev.Execution:
			out = append(out, Generation{Execution: ev.Execution, First: ev.Time, Holders: []OwnershipEvent{ev}})
		default:
			g := &out[len(out)-1]
			g.Holders = append(g.Holders, ev)
		}
	}
	return out
}
