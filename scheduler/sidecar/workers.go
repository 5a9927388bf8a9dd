package sidecar

import (
	"sort"
	"time"
)

// WorkerInfo is one Durable Task worker connected to this node: one open
// GetWorkItems stream.
type WorkerInfo struct {
	// ID numbers the node's streams from 1 since it started.
	ID uint64
	// Peer is the worker's address as the server sees it.
	Peer string
	// Connected is when its stream opened.
	Connected time.Time
	// Orchestrations and Activities are what it serves, sorted; ["*"] for
	// a worker that sent no work item filters (it is offered any).
	Orchestrations []string
	Activities     []string
	// InFlightOrchestrations and InFlightActivities are the work items
	// sent to it and not answered yet.
	InFlightOrchestrations int
	InFlightActivities     int
	// MaxOrchestrations and MaxActivities are the concurrency it asked
	// for; 0 is no limit.
	MaxOrchestrations int
	MaxActivities     int
}

// Workers lists the workers connected to this node now, by ID. It is
// empty once Shutdown has begun.
func (s *Server) Workers() []WorkerInfo { return s.work.snapshot() }

// WorkersChanged returns a channel that is closed when a worker next
// connects or goes (or the node drains), for a view of Workers that
// updates by itself.
func (s *Server) WorkersChanged() <-chan struct{} { return s.work.workersChanged() }

func (h *hub) workersChanged() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.workersCh
}

// workersChangedLocked wakes whoever waits on workersCh; h.mu is held.
func (h *hub) workersChangedLocked() {
	close(h.workersCh)
	h.workersCh = make(chan struct{})
}

// snapshot describes the connected workers, by ID.
func (h *hub) snapshot() []WorkerInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	out := make([]WorkerInfo, 0, len(h.workers))
	for _, w := range h.workers {
		no, _ := w.load(kindOrchestration)
		na, _ := w.load(kindActivity)
		out = append(out, WorkerInfo{
			ID: w.id, Peer: w.peer, Connected: w.since,
			Orchestrations: w.names(kindOrchestration), Activities: w.names(kindActivity),
			InFlightOrchestrations: no, InFlightActivities: na,
			MaxOrchestrations: w.maxOrch, MaxActivities: w.maxAct,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
