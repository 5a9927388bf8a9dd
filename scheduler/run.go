package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// runHeld runs an instance under its holding until it finishes, the holding
// is lost, the instance changes, or the node drains.
func (n *Node) runHeld(ctx context.Context, r *run, gone ownerGone) {
	defer n.runsWG.Done()
	h := r.holding
	held := n.m.instancesHeld.WithLabelValues(r.name)
	held.Inc()
	defer func() {
		held.Dec()
		n.mu.Lock()
		delete(n.runs, r.id)
		n.mu.Unlock()
		r.cancel(errStopped)
		close(r.done)
		n.poke()
	}()
	// Losing the holding stops the run at once, with the reason as cause.
	go func() {
		select {
		case <-h.Done():
			r.cancel(h.Err())
		case <-ctx.Done():
		}
	}()
	log := n.log.With("instance_id", r.id, "execution_id", r.executionID, "function", r.name, "fencing_token", h.Token())
	fence := orchestrator.Fence{Cmp: h.Cmp(), Token: h.Token(), OnReject: func(err error) {
		n.m.fencingRejections.Inc()
		log.Warn("write fenced: this node no longer holds the instance", "error", err)
		h.Lose(err)
	}}
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	exec, err := n.client.Open(octx, r.id, r.executionID, fence)
	cancel()
	if err == nil {
		n.begin(exec, h, gone, log)
		err = n.cfg.Registry.Run(ctx, exec) // marks the record Running first
	}
	n.after(ctx, r, exec, err, log)
}

// begin records how the instance came to this node.
func (n *Node) begin(exec *orchestrator.Execution, h *lease.Holding, gone ownerGone, log *slog.Logger) {
	st := exec.Status()
	how := "start"
	if b := h.HandoffMarker(); b != nil {
		var m handoffMarker
		if json.Unmarshal(b, &m) == nil && m.Reason == "drain" {
			how = "handoff"
			n.m.handoffs.Inc()
			n.m.takeover.Observe(max(time.Since(m.ReleasedTime), 0).Seconds())
		} else {
			how = "resume"
		}
	} else if st.RuntimeStatus == orchestrator.StatusRunning && gone.executionID == st.ExecutionID {
		how = "failover"
		n.m.failovers.Inc()
		n.m.takeover.Observe(time.Since(gone.at).Seconds())
	}
	if st.RuntimeStatus == orchestrator.StatusPending {
		n.m.startToRunning.Observe(max(time.Since(st.CreatedTime), 0).Seconds())
	}
	log.Info("running instance", "how", how)
}

// after settles a run: count it, and release the owners key unless the
// final write already deleted it or the holding is gone.
func (n *Node) after(ctx context.Context, r *run, exec *orchestrator.Execution, err error, log *slog.Logger) {
	h := r.holding
	cause := context.Cause(ctx)
	n.mu.Lock()
	v, active := n.instances[r.id]
	n.mu.Unlock()
	changed := !active || v.executionID != r.executionID || !v.status.Runnable()
	switch {
	case err == nil:
		st := exec.Status().RuntimeStatus
		if st.Terminal() {
			n.m.completed.WithLabelValues(r.name, string(st)).Inc()
		}
		h.Lose(lease.ErrReleased) // the final write deleted the owners key
		log.Info("run ended", "runtime_status", st)
	case errors.Is(err, orchestrator.ErrFenced):
		n.m.leasesLost.WithLabelValues("fenced").Inc()
		log.Warn("run stopped: fenced", "error", err)
	case errors.Is(cause, errDrain):
		n.release(h, n.marker(h, "drain"))
		log.Info("released for handoff")
	case changed || errors.Is(cause, errChanged) || errors.Is(err, orchestrator.ErrExecutionChanged):
		var marker []byte
		if active && v.executionID == r.executionID && v.status == orchestrator.StatusSuspended {
			marker = n.marker(h, "suspend")
		}
		n.release(h, marker)
		log.Info("run stopped: instance changed", "cause", cause)
	case h.Err() != nil && !errors.Is(h.Err(), lease.ErrReleased):
		n.m.leasesLost.WithLabelValues(lostReason(h.Err())).Inc()
		log.Warn("run stopped: lease lost", "reason", h.Err())
	default:
		n.release(h, nil)
		log.Error("run stopped by an error; released for another attempt", "error", err)
	}
}

func lostReason(err error) string {
	switch {
	case errors.Is(err, lease.ErrKeyDeleted):
		return "key_deleted"
	case errors.Is(err, lease.ErrKeyReplaced):
		return "key_replaced"
	case errors.Is(err, lease.ErrLeaseExpired):
		return "lease_expired"
	case errors.Is(err, lease.ErrSafeDeadline):
		return "safe_deadline"
	case errors.Is(err, lease.ErrSessionClosed):
		return "session_closed"
	case errors.Is(err, orchestrator.ErrFenced):
		return "fenced"
	}
	return "other"
}

// marker is a handoff marker for Release.
func (n *Node) marker(h *lease.Holding, reason string) []byte {
	b, _ := json.Marshal(handoffMarker{Reason: reason, Node: n.cfg.NodeID, FencingToken: h.Token(), ReleasedTime: time.Now().UTC()})
	return b
}

// release deletes the owners key if still held, retrying while the session
// lives: a key left on a live session would block the instance.
func (n *Node) release(h *lease.Holding, marker []byte) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := h.Release(ctx, marker)
		cancel()
		if err == nil {
			return
		}
		s := h.Session()
		if s.Err() != nil {
			return // the key goes with the session lease
		}
		n.log.Warn("release failed; retrying", "key", h.Key(), "error", err)
		select {
		case <-s.Done():
			return
		case <-time.After(backoff):
		}
	}
}
