package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// Activities for the workers of other nodes: the node that holds an
// instance sends an activity to a worker of its own when one serves it;
// otherwise it puts the task in etcd's task queue (orchestrator.QueueTask)
// and the run waits for the result in the instance's inbox. Every node with
// a work-item side watches the queue and claims (on its session lease) the
// free tasks that one of its workers serves, sends each to such a worker,
// and stores the answer in the instance's inbox with the task's deletion
// (orchestrator.FinishTask). A claim is given back when no worker of the
// node serves the task any more (they went), when the node drains, or when
// the answer could not be stored; it ends by itself with the node's
// session. A task whose execution ended leaves the queue with the final
// write, and a node running it stops waiting for it.

// taskQueue is a node's side of the task queue.
type taskQueue struct {
	h          *hub
	c          *orchestrator.Client
	node       *scheduler.Node
	log        *slog.Logger
	maxPayload int

	wake chan struct{}                              // cap 1: the queue changed
	view atomic.Pointer[orchestrator.TaskQueueView] // set by start

	mu      sync.Mutex
	running map[taskRef]bool // tasks this node claimed and runs

	wg sync.WaitGroup // the loop and the runs of claimed tasks
}

type taskRef struct {
	instanceID, executionID string
	taskID                  int
}

func refOf(t orchestrator.RemoteTask) taskRef { return taskRef{t.InstanceID, t.ExecutionID, t.ID} }

func newTaskQueue(h *hub, c *orchestrator.Client, node *scheduler.Node, log *slog.Logger, maxPayload int) *taskQueue {
	return &taskQueue{h: h, c: c, node: node, log: log, maxPayload: maxPayload,
		wake: make(chan struct{}, 1), running: map[taskRef]bool{}}
}

// start watches the queue and claims what the node's workers serve until
// ctx ends.
func (q *taskQueue) start(ctx context.Context) {
	view := q.c.WatchTaskQueue(ctx, func() {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	})
	q.view.Store(view)
	q.wg.Go(func() { q.loop(ctx, view) })
}

// wait waits until the goroutines of start have ended (after its ctx
// ended: a run gives its task back first, within 10 s), or ctx ends.
func (q *taskQueue) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.wg.Wait()
		if v := q.view.Load(); v != nil {
			<-v.Done()
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// queued reports whether t waits in the queue already, as far as this
// node has seen.
func (q *taskQueue) queued(t orchestrator.RemoteTask) bool {
	v := q.view.Load()
	return v != nil && v.Has(t)
}

// put queues t for a worker on any node, retrying a store that does not
// answer until ctx ends; ErrTaskQueued once it is queued.
func (q *taskQueue) put(ctx context.Context, t orchestrator.RemoteTask) error {
	if err := orchestrator.RetryUnavailable(ctx, func() error { return q.c.QueueTask(ctx, t) }); err != nil {
		return err
	}
	q.h.m.items.WithLabelValues(kindActivity, "queued").Inc()
	q.log.Info("activity queued for a worker on any node (none connected here serves it)",
		"instance_id", t.InstanceID, "execution_id", t.ExecutionID, "task_id", t.ID, "activity", t.Name)
	return orchestrator.ErrTaskQueued
}

// loop claims free tasks whenever the queue or the node's workers change,
// and every second (a claim that failed, a session not yet open).
func (q *taskQueue) loop(ctx context.Context, view *orchestrator.TaskQueueView) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		q.claimFree(ctx, view)
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-q.h.workersChanged():
		case <-tick.C:
		}
	}
}

// claimFree claims the free tasks a worker of this node serves and runs
// each.
func (q *taskQueue) claimFree(ctx context.Context, view *orchestrator.TaskQueueView) {
	free := view.Free()
	if len(free) == 0 {
		return
	}
	lease, sctx, err := q.node.SessionLease()
	if err != nil {
		return
	}
	for _, t := range free {
		ref := refOf(t.RemoteTask)
		q.mu.Lock()
		mine := q.running[ref]
		q.mu.Unlock()
		if mine || t.Name == "" || !q.h.servesActivity(t.Name) {
			continue
		}
		ok, err := q.c.ClaimTask(ctx, t, q.node.ID(), lease)
		if err != nil || !ok {
			continue
		}
		q.mu.Lock()
		q.running[ref] = true
		q.mu.Unlock()
		q.h.m.items.WithLabelValues(kindActivity, "claimed").Inc()
		q.log.Info("claimed a queued activity for a worker of this node",
			"instance_id", t.InstanceID, "execution_id", t.ExecutionID, "task_id", t.ID, "activity", t.Name)
		q.wg.Go(func() { q.run(ctx, sctx, view, t) })
	}
}

// run sends a claimed task to a worker of this node and stores its answer;
// without an answer it gives the task back.
func (q *taskQueue) run(ctx, session context.Context, view *orchestrator.TaskQueueView, t orchestrator.QueuedTask) {
	defer func() {
		q.mu.Lock()
		delete(q.running, refOf(t.RemoteTask))
		q.mu.Unlock()
	}()
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(session, func() { cancel(errors.New("the node's etcd session ended, and the claim with it")) })
	defer stop()
	q.wg.Go(func() {
		// Stop waiting when no worker here serves the task any more or
		// the task left the queue (its execution ended).
		for {
			changed := q.h.workersChanged()
			switch {
			case !q.h.servesActivity(t.Name):
				cancel(errors.New("no worker connected to this node serves the activity any more"))
				return
			case !view.Queued(t):
				cancel(errors.New("the task left the queue (its execution ended)"))
				return
			}
			select {
			case <-rctx.Done():
				return
			case <-changed:
			case <-time.After(time.Second):
			}
		}
	})
	result, failure, err := q.h.dispatchActivity(rctx, t.RemoteTask, q.maxPayload)
	bg, cancelBG := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancelBG()
	if err == nil {
		err = q.finish(bg, t, result, failure)
		if err == nil {
			return
		}
	}
	if session.Err() == nil {
		if rerr := q.c.ReleaseTask(bg, t); rerr != nil {
			q.log.Warn("could not give a queued activity back; it is free again when this node's session ends",
				"instance_id", t.InstanceID, "task_id", t.ID, "activity", t.Name, "error", rerr)
			return
		}
	}
	q.log.Info("gave a queued activity back", "instance_id", t.InstanceID, "execution_id", t.ExecutionID,
		"task_id", t.ID, "activity", t.Name, "why", context.Cause(rctx), "error", err)
}

// finish stores the answer, retrying a store that does not answer.
func (q *taskQueue) finish(ctx context.Context, t orchestrator.QueuedTask, result []byte, failure *orchestrator.FailureDetails) error {
	return orchestrator.RetryUnavailable(ctx, func() error { return q.c.FinishTask(ctx, t, result, failure) })
}
