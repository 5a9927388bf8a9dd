package dashboard

import (
	"sync"
	"time"

	"github.com/soloist-dev/soloist/scheduler"
)

// OwnershipEvent is one change of an instance's holder seen by the node.
type OwnershipEvent struct {
	Time     time.Time
	Instance string
	// Kind is "acquired", "failover" (the previous holder's node was gone),
	// "handoff" (it was draining), "released" (the owners key was deleted).
	Kind  string
	Node  string
	From  string
	Token int64
	Lease string
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
	nodes  map[string]bool   // live node -> draining
	recent []OwnershipEvent
	gone   map[string]time.Time // nodes seen leaving
}

func newOwnership() *ownership {
	return &ownership{byID: map[string][]OwnershipEvent{}, last: map[string]string{}, nodes: map[string]bool{}, gone: map[string]time.Time{}}
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
	case scheduler.ChangeOwner:
		ev := OwnershipEvent{Time: c.Seen, Instance: c.ID}
		if c.Deleted {
			ev.Kind, ev.Node = "released", o.last[c.ID]
		} else {
			ev.Kind, ev.Node, ev.Token, ev.Lease = "acquired", c.Owner.Node, c.Owner.FencingToken, c.Owner.LeaseID
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
		}
		if _, ok := o.byID[c.ID]; !ok {
			o.order = append(o.order, c.ID)
			if len(o.order) > maxInstance {
				old := o.order[0]
				o.order = o.order[1:]
				delete(o.byID, old)
				delete(o.last, old)
			}
		}
		evs := append(o.byID[c.ID], ev)
		if len(evs) > perInstance {
			evs = evs[len(evs)-perInstance:]
		}
		o.byID[c.ID] = evs
		if ev.Kind == "failover" || ev.Kind == "handoff" {
			o.recent = append(o.recent, ev)
			if len(o.recent) > maxRecent {
				o.recent = o.recent[len(o.recent)-maxRecent:]
			}
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
