package dashboard

import "time"

// Worker is one gRPC worker connected to this node: a Durable Task SDK
// worker's GetWorkItems stream on the node's sidecar (--grpc-listen).
type Worker struct {
	ID        uint64
	Peer      string // its address, as the node sees it
	Connected time.Time
	// Orchestrations and Activities are what it serves; ["*"] for any.
	Orchestrations []string
	Activities     []string
	// In flight: work items sent and not answered; Max: the concurrency it
	// asked for, 0 for no limit.
	InFlightOrchestrations, InFlightActivities int
	MaxOrchestrations, MaxActivities           int
}

// Workers lists the gRPC workers connected to this node now. The node's
// sidecar provides it (cmd/soloist adapts scheduler/sidecar's Server to
// it): the dashboard does not depend on the sidecar.
type Workers interface {
	ConnectedWorkers() []Worker
	// WorkersChanged returns a channel closed when the list next changes
	// (a worker connects or goes): open pages then read it again.
	WorkersChanged() <-chan struct{}
}
