package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// run is an instance this node holds: its holding and, while it runs, the
// driver of its execution. A run whose orchestration has waited for
// unloadAfter with nothing in flight (only events and durable timers
// awaited, everything committed) is unloaded: its driver and the
// orchestration's goroutine end, and the node keeps the execution with its
// committed history (kept), to replay from memory when an inbox entry
// comes or its first durable timer fires. After Config.ParkAfter it is
// parked: kept is dropped too, and the run is driven again from etcd (one
// read). Either way it keeps its holding (with a hook on its end) and a
// timer for its first durable timer, and no context: a parked or unloaded
// run costs no goroutine and no context, whatever the node holds.
type run struct {
	id, name, executionID string
	holding               *lease.Holding
	nodeLog               *slog.Logger

	// Guarded by mu (the holding's end tells the run from any goroutine):
	mu     sync.Mutex
	ctx    context.Context // while active (driven, opened, retried): cancelled when the run must stop; nil while parked
	cancel context.CancelCauseFunc
	cause  error       // why the run must stop, once told (stop)
	unhook func() bool // stops the holding's AfterEnd hook

	// Guarded by the node's mu:
	driver    *orchestrator.Driver      // nil while parked, reopened, or between a failed run and its retry
	inbox     []orchestrator.InboxEntry // entries that came while there was no driver to take them
	parked    bool
	remote    bool        // driven by the node's Remote (a worker), not the Registry
	version   string      // the orchestration's version
	wakeTimer *time.Timer // a parked run's first durable timer
	// An unloaded run's execution, to drive again from memory (nil once
	// parked, or if the history was too large to keep), and when the
	// unload loop parks it (zero: never).
	kept      *orchestrator.Kept
	keptUntil time.Time
}

// unloadAfter is how long a native run waits idle before it is unloaded
// (see run). A quick event after that costs a replay from memory, and no
// etcd read.
const unloadAfter = time.Second

// runParkAfter is the RunOptions.ParkAfter of a native run: it ends at
// unloadAfter, or at Config.ParkAfter if that comes first (then for good).
func (n *Node) runParkAfter() time.Duration {
	if n.cfg.ParkAfter > 0 && n.cfg.ParkAfter <= unloadAfter {
		return n.cfg.ParkAfter
	}
	return unloadAfter
}

// log is the run's logger, made when a line is written (runs rarely log;
// an idle run keeps no logger of its own).
func (r *run) log() *slog.Logger {
	return r.nodeLog.With("instance_id", r.id, "execution_id", r.executionID, "function", r.name, "fencing_token", r.holding.Token())
}

// stop tells r to stop, for cause (the first cause told wins): an active
// run's context is cancelled; a parked or unloaded one, which nothing
// runs, is settled on a goroutine of its own. It may be called with n.mu
// held, and from the holding's end.
func (n *Node) stop(r *run, cause error) {
	r.mu.Lock()
	if r.cause == nil {
		r.cause = cause
	}
	cancel := r.cancel
	cause = r.cause
	r.mu.Unlock()
	if cancel != nil {
		cancel(cause)
		return
	}
	go func() {
		n.mu.Lock()
		was := n.unpark(r)
		n.mu.Unlock()
		if was {
			n.settle(r, orchestrator.Outcome{Err: cause})
		}
	}()
}

// activate gives r a context for a driver, an open or a retry (a new one
// after parking), or says why r must stop instead.
func (r *run) activate() (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cause != nil {
		return nil, r.cause
	}
	if r.ctx == nil {
		// Not a child of anything: stop cancels it. Nothing else holds it,
		// so dropping it (rest) leaves nothing behind.
		r.ctx, r.cancel = context.WithCancelCause(context.Background())
	}
	return r.ctx, nil
}

// rest drops the context of a run that parks or unloads (its driver has
// ended; nothing uses it). It reports false, and keeps it, if the run was
// told to stop meanwhile.
func (r *run) rest() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cause != nil {
		return false
	}
	r.ctx, r.cancel = nil, nil
	return true
}

// stopped is why r must stop, or nil.
func (r *run) stopped() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cause
}

// finish ends r for good: its context is cancelled (errStopped unless it
// was told why) and its hook on the holding removed.
func (r *run) finish() {
	r.mu.Lock()
	if r.cause == nil {
		r.cause = errStopped
	}
	cancel, unhook, cause := r.cancel, r.unhook, r.cause
	r.unhook = nil
	r.mu.Unlock()
	if cancel != nil {
		cancel(cause)
	}
	if unhook != nil {
		unhook()
	}
}

// deliver hands an inbox entry to the run's driver, or keeps it for the
// next driver (a parked run is woken for it). Called with n.mu held.
func (n *Node) deliver(r *run, in orchestrator.InboxEntry) {
	if r.driver != nil && r.driver.Deliver(in) {
		return
	}
	r.inbox = append(r.inbox, in)
	n.wake(r)
}

// startRun opens the execution from what the campaign read and starts its
// driver. The run is registered, and the inbox entries the watch saw
// meanwhile handed over, under the node's lock, so none is missed.
func (n *Node) startRun(h *lease.Holding, c *campaign) {
	id := c.id
	r := &run{id: id, name: c.view.name, executionID: c.view.executionID, holding: h, nodeLog: n.log}
	rctx, _ := r.activate() // a new run is told nothing yet
	unhook := h.AfterEnd(func(err error) { n.stop(r, err) })
	r.mu.Lock()
	r.unhook = unhook
	r.mu.Unlock()
	var (
		exec *orchestrator.Execution
		err  error
	)
	switch {
	case c.landed != nil:
		exec, err = n.client.OpenLanded(rctx, c.landed, c.landedInput, n.fence(r), h.TakeReads(), h.Revision())
	case c.reopen:
		h.TakeReads()
		exec, err = n.client.Open(rctx, id, r.executionID, n.fence(r))
	default:
		exec, err = n.client.OpenFrom(rctx, id, r.executionID, n.fence(r), h.TakeReads(), h.Revision())
	}
	n.mu.Lock()
	delete(n.campaigning, id)
	if n.draining {
		n.mu.Unlock()
		n.stop(r, errDrain)
		r.finish()
		n.handOff(h)
		n.poke()
		return
	}
	if errors.Is(err, orchestrator.ErrExecutionChanged) {
		n.mu.Unlock()
		n.stop(r, err)
		r.finish()
		r.log().Debug("took an instance that changed meanwhile; releasing it", "error", err)
		n.release(h)
		n.poke()
		return
	}
	n.runs[id] = r
	if o, ok := n.owners[id]; !ok || o.node != n.cfg.NodeID {
		n.unseen[id] = struct{}{} // the watch brings its owners key in a moment
	}
	n.runsWG.Add(1)
	n.m.instancesHeld.WithLabelValues(r.name).Inc()
	if err != nil {
		// Not a change: something of the instance cannot be read (a
		// corrupt key, a store error). Keep it and back off, rather than
		// release it to be taken and fail again at once.
		n.mu.Unlock()
		n.retryLater(r, err)
		return
	}
	n.drive(rctx, r, exec, n.begin(exec, h, c.gone, r))
	for _, in := range c.inbox {
		n.deliver(r, in)
	}
	n.checkRun(id, r)
	n.mu.Unlock()
	n.poke()
}

// fence is what every write of r's execution carries.
func (n *Node) fence(r *run) orchestrator.Fence {
	h := r.holding
	return orchestrator.Fence{Cmp: h.Cmp(), Token: h.Token(), Release: h.ReleaseOp(), OnReject: func(err error) {
		n.m.fencingRejections.Inc()
		r.log().Warn("write fenced: this node no longer holds the instance", "error", err)
		h.Lose(err)
	}}
}

// drive starts the driver of exec for r, on ctx (r's active context), and
// hands it the inbox entries that came while r had none; its end settles
// the run. reason says how the run came to be (begin's words, "retry" or
// "wake"), for its span. Called with n.mu held.
func (n *Node) drive(ctx context.Context, r *run, exec *orchestrator.Execution, reason string) {
	drive := n.cfg.Registry.Drive
	st := exec.Status()
	r.remote, r.version = false, st.Version
	parkAfter := n.runParkAfter()
	if n.remote != nil && !n.runsNatively(st.Name, st.Version) {
		drive, r.remote = n.remote.Drive, true
		parkAfter = max(n.cfg.ParkAfter, 0)
	}
	d, err := drive(ctx, exec, orchestrator.RunOptions{
		Logger:    n.log,
		OnEnd:     func(o orchestrator.Outcome) { n.settle(r, o) },
		Reason:    reason,
		ParkAfter: parkAfter,
		// Local activities commit together (0: off).
		BatchBudget: n.cfg.BatchBudget,
		// A step refused with NOSPACE makes the node unready at once.
		OnStoreError: n.health.observe,
	})
	if err != nil { // the function went from the registry: cannot happen, Registry only grows
		r.log().Error("cannot run the instance", "error", err)
		go n.settle(r, orchestrator.Outcome{Err: err})
		return
	}
	r.driver = d
	kept := r.inbox
	r.inbox = nil
	for _, in := range kept {
		d.Deliver(in)
	}
}

// park keeps a run whose driver parked (Outcome.Parked) without one, until
// an inbox entry for it, its first durable timer or its stop: unloaded with
// its execution in memory (Outcome.Kept) until Config.ParkAfter, or parked.
func (n *Node) park(r *run, o orchestrator.Outcome) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r.driver = nil
	r.kept, r.keptUntil = nil, time.Time{}
	if o.Kept != nil && (n.cfg.ParkAfter < 0 || n.cfg.ParkAfter > unloadAfter) {
		r.kept = o.Kept
		if n.cfg.ParkAfter > 0 {
			r.keptUntil = time.Now().Add(n.cfg.ParkAfter - unloadAfter)
		}
	}
	if o.Missed || len(r.inbox) > 0 {
		n.m.wakes.WithLabelValues("event").Inc()
		go n.rerun(r, "wake") // something came as it parked
		return
	}
	if !r.rest() { // told to stop as it parked
		go n.settle(r, orchestrator.Outcome{Err: r.stopped()})
		return
	}
	r.parked = true
	if r.kept == nil {
		n.m.parked.Inc()
	} else {
		n.m.unloaded.Inc()
	}
	if !o.WakeAt.IsZero() {
		r.wakeTimer = time.AfterFunc(time.Until(o.WakeAt), func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			if n.unpark(r) {
				n.m.wakes.WithLabelValues("timer").Inc()
				go n.rerun(r, "wake")
			}
		})
	}
}

// wake drives a parked run again, for an inbox entry it was kept (r.inbox).
// Called with n.mu held.
func (n *Node) wake(r *run) {
	if n.unpark(r) {
		n.m.wakes.WithLabelValues("event").Inc()
		go n.rerun(r, "wake")
	}
}

// unpark ends r's parking and reports whether it was parked. Called with
// n.mu held.
func (n *Node) unpark(r *run) bool {
	if !r.parked {
		return false
	}
	r.parked = false
	if r.kept == nil {
		n.m.parked.Dec()
	} else {
		n.m.unloaded.Dec()
	}
	if r.wakeTimer != nil {
		r.wakeTimer.Stop()
		r.wakeTimer = nil
	}
	return true
}

// begin records how the instance came to this node, and returns it:
// "start", "resume", "failover" or "handoff".
func (n *Node) begin(exec *orchestrator.Execution, h *lease.Holding, gone ownerGone, r *run) string {
	st := exec.Status()
	how := "start"
	switch {
	case h.Handoff() != nil && h.Handoff().Reason == "drain":
		how = "handoff"
		n.m.handoffs.Inc()
		d := max(time.Since(h.Handoff().ReleasedTime), 0).Seconds()
		n.m.takeover.Observe(d)
		n.m.unheld.WithLabelValues("handoff").Observe(d)
	case gone.executionID == st.ExecutionID && !gone.at.IsZero() && gone.leaseID != leaseHex(h.Session().LeaseID()):
		// A previous holder of this execution lost it without a release
		// (not a key of this session's own, such as an orphan it deleted).
		how = "failover"
		n.m.failovers.Inc()
		d := time.Since(gone.at)
		n.m.takeover.Observe(d.Seconds())
		n.m.unheld.WithLabelValues("failover").Observe((d + n.cfg.LeaseTTL).Seconds())
	case st.RuntimeStatus == orchestrator.StatusRunning:
		how = "resume"
	}
	if st.RuntimeStatus == orchestrator.StatusPending {
		n.m.startToRunning.Observe(max(time.Since(st.CreatedTime), 0).Seconds())
	}
	if how == "failover" || how == "handoff" {
		r.log().Info("took over instance", "how", how, "from", gone.node)
	}
	return how
}

// settle ends a run: count it, and release the owners key unless the final
// write already deleted it or the holding is gone. A run that failed for a
// reason of its own (not a loss, not a change) keeps the instance and is
// tried again after a backoff, so a failing instance never loops hot and
// never bounces between nodes.
func (n *Node) settle(r *run, o orchestrator.Outcome) {
	h := r.holding
	cause := r.stopped()
	err := o.Err
	switch {
	case o.Parked:
		n.park(r, o)
		return
	case o.Status != "":
		if o.Status.Terminal() {
			n.m.completed.WithLabelValues(r.name, string(o.Status)).Inc()
		}
		h.Forget() // the final write deleted the owners key
		n.mu.Lock()
		delete(n.retries, r.id)
		n.mu.Unlock()
		if o.Status == orchestrator.StatusContinuedAsNew {
			r.log().Debug("continued as new")
		} else {
			r.log().Info("run ended", "runtime_status", string(o.Status))
		}
	case errors.Is(err, orchestrator.ErrFenced):
		n.m.leasesLost.WithLabelValues("fenced").Inc()
		r.log().Warn("run stopped: fenced", "error", err)
	case errors.Is(cause, errDrain):
		n.handOff(h)
	case errors.Is(cause, errUnserved):
		r.log().Info("released the instance: no worker connected to this node serves it any more")
		n.release(h)
	case errors.Is(cause, errChanged) || errors.Is(err, orchestrator.ErrExecutionChanged):
		r.log().Info("run stopped: the instance was terminated, suspended or restarted")
		n.release(h)
	case h.Err() != nil && !errors.Is(h.Err(), lease.ErrReleased):
		n.m.leasesLost.WithLabelValues(lostReason(h.Err())).Inc()
		r.log().Warn("run stopped: lease lost", "reason", h.Err().Error())
	case errors.Is(cause, errStopped):
		n.release(h)
	default:
		n.retryLater(r, err)
		return
	}
	n.endRun(r)
}

func (n *Node) endRun(r *run) {
	n.mu.Lock()
	if n.runs[r.id] == r {
		delete(n.runs, r.id)
		delete(n.unseen, r.id)
		if n.draining && len(n.runs) == 0 {
			close(n.runsGone)
		}
	}
	n.consider(r.id)
	n.mu.Unlock()
	n.m.instancesHeld.WithLabelValues(r.name).Dec()
	r.finish()
	n.runsWG.Done()
	n.poke()
}

// retryLater keeps the instance and runs it again after a backoff that
// grows with each failure of this instance.
func (n *Node) retryLater(r *run, err error) {
	n.m.runRetries.Inc()
	n.health.observe(err)
	n.mu.Lock()
	wait := n.backoffLocked(r.id)
	r.driver = nil
	n.mu.Unlock()
	r.log().Warn("run failed; holding the instance and trying again", "error", err, "retry_in", wait.Round(time.Millisecond))
	// Whichever comes first: the retry, or the run's stop.
	ctx, serr := r.activate()
	if serr != nil { // told to stop, for a cause settle did not know
		n.release(r.holding)
		n.endRun(r)
		return
	}
	var once sync.Once
	t := time.AfterFunc(wait, func() { once.Do(func() { n.rerun(r, "retry") }) })
	context.AfterFunc(ctx, func() {
		once.Do(func() {
			t.Stop()
			n.settle(r, orchestrator.Outcome{Err: r.stopped()})
		})
	})
}

// rerun reads the execution again and drives it, for a run that failed
// (reason "retry") or was parked ("wake").
func (n *Node) rerun(r *run, reason string) {
	rctx, err := r.activate()
	if err != nil {
		n.settle(r, orchestrator.Outcome{Err: err})
		return
	}
	n.mu.Lock()
	kept := r.kept // an unloaded run's, in memory
	r.kept = nil
	n.mu.Unlock()
	var exec *orchestrator.Execution
	if kept != nil {
		if exec, err = kept.Reopen(n.fence(r)); err != nil {
			r.log().Warn("reading the instance from etcd instead", "error", err)
		}
	}
	if exec == nil {
		ctx, cancel := context.WithTimeout(rctx, 10*time.Second)
		exec, err = n.client.Open(ctx, r.id, r.executionID, n.fence(r))
		cancel()
		if err != nil {
			n.settle(r, orchestrator.Outcome{Err: err})
			return
		}
	}
	n.mu.Lock()
	n.drive(rctx, r, exec, reason)
	n.mu.Unlock()
}

// unloadLoop parks the unloaded runs whose Config.ParkAfter has passed: it
// drops the execution they kept in memory. It looks every quarter of
// ParkAfter, so a run parks between ParkAfter and 1.25 x ParkAfter after
// its orchestration began to wait.
func (n *Node) unloadLoop() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.ParkAfter/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			n.mu.Lock()
			for _, r := range n.runs {
				if r.parked && r.kept != nil && !r.keptUntil.IsZero() && now.After(r.keptUntil) {
					r.kept, r.keptUntil = nil, time.Time{}
					n.m.unloaded.Dec()
					n.m.parked.Inc()
				}
			}
			n.mu.Unlock()
		}
	}
}

// backoffLocked is how long id's next run waits after a failure: it
// doubles with each failure, with jitter, up to 30s.
func (n *Node) backoffLocked(id string) time.Duration {
	rs := n.retries[id]
	if rs == nil {
		rs = &retryState{b: newBackoff(200*time.Millisecond, 30*time.Second)}
		n.retries[id] = rs
	}
	wait := rs.b.NextBackOff()
	rs.until = time.Now().Add(wait)
	return wait
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

// handOff keeps a holding for the drain's ReleaseAll.
func (n *Node) handOff(h *lease.Holding) {
	n.mu.Lock()
	n.handedOff = append(n.handedOff, h)
	n.mu.Unlock()
}

// release deletes the owners key if still held, retrying while the session
// lives: a key left on a live session would block the instance.
func (n *Node) release(h *lease.Holding) {
	s := h.Session()
	b := newBackoff(100*time.Millisecond, 2*time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := h.Release(ctx)
		cancel()
		if err == nil || s.Err() != nil {
			return // done, or the key goes with the session lease
		}
		n.log.Warn("release failed; retrying", "key", h.Key(), "error", err)
		select {
		case <-s.Done():
			return
		case <-time.After(b.NextBackOff()):
		}
	}
}
