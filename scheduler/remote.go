package scheduler

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Remote runs orchestrations that the node's Registry does not have, for
// workers connected to the node from outside (package scheduler/sidecar:
// Durable Task SDK workers over gRPC). What it serves changes as workers
// connect and go; it calls Node.RemoteChanged when it does.
type Remote interface {
	// Serves reports whether the node's workers run that orchestration now.
	Serves(name, version string) bool
	// Functions lists what the workers serve, for the node key (FunctionKey
	// names; "*" for a worker that serves any orchestration the node does
	// not run natively).
	Functions() []string
	// Workers is how many workers are connected, for the node key.
	Workers() int
	// Drive starts a run of an execution of an orchestration it serves, as
	// Registry.Drive does for the Registry's.
	Drive(ctx context.Context, exec *orchestrator.Execution, opts orchestrator.RunOptions) (*orchestrator.Driver, error)
}

// SetRemote gives the node a Remote before Start: the node then also
// campaigns for the instances whose orchestration the Remote serves and
// runs them with it.
func (n *Node) SetRemote(r Remote) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return errors.New("scheduler: SetRemote after Start")
	}
	n.remote = r
	return nil
}

// errUnserved stops the run of an instance that no worker of the node's
// Remote serves any more: the node releases it, for a node that has one.
var errUnserved = errors.New("scheduler: no worker connected to this node serves the orchestration any more")

// RemoteChanged tells the node that what its Remote serves changed: it
// considers every instance again and rewrites its node key's function list.
// An instance it holds that it no longer runs (neither natively nor with
// the Remote) is released after a grace of one lease TTL, if by then no
// worker serving it has come back, so that a node whose worker serves it
// takes it.
func (n *Node) RemoteChanged() {
	n.mu.Lock()
	s := n.session
	if !n.started || n.draining || n.remote == nil {
		n.mu.Unlock()
		return
	}
	n.requeueLocked()
	n.mu.Unlock()
	time.AfterFunc(n.cfg.LeaseTTL, n.releaseUnserved)
	if s == nil || s.Err() != nil || !n.cfg.Role.Runs() {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if s.Err() != nil || n.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*n.cfg.LeaseTTL)
		defer cancel()
		if err := n.putNodeKey(ctx, s, false); err != nil && n.ctx.Err() == nil {
			n.log.Warn("could not update the node key's functions", "error", err)
		}
	}()
}

// releaseUnserved stops the runs of the instances the node no longer runs
// (their worker went): their end releases them.
func (n *Node) releaseUnserved() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.draining || n.remote == nil || n.ctx.Err() != nil {
		return
	}
	for _, r := range n.runs {
		if r.remote && !n.remote.Serves(r.name, r.version) {
			n.stop(r, errUnserved)
		}
	}
}

// functions is what the node key lists: the Registry's orchestrations and
// the Remote's.
func (n *Node) functions() []string {
	fns := n.cfg.Registry.Functions()
	if n.remote != nil {
		for _, f := range n.remote.Functions() {
			if !slices.Contains(fns, f) {
				fns = append(fns, f)
			}
		}
		slices.Sort(fns)
	}
	return fns
}

// runsNatively reports whether the node's Registry has the orchestration.
func (n *Node) runsNatively(name, version string) bool {
	_, ok := n.cfg.Registry.OrchestratorVersion(name, version)
	return ok
}

// canRun reports whether the node runs the orchestration: natively or with
// its Remote.
func (n *Node) canRun(name, version string) bool {
	return n.runsNatively(name, version) || n.remote != nil && n.remote.Serves(name, version)
}
