package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The task queue: activity tasks that the node holding an instance cannot
// run itself (no worker connected to it serves the activity), for a worker
// on any node. The holder puts a task once (QueueTask, create-if-absent, no
// lease: it outlives the holder, so a task out with a worker elsewhere is
// not sent twice because its instance changed hands). A node with a worker
// that serves it claims it (ClaimTask: a claim key on that node's session
// lease, so a claim ends with its node) and runs it; the result goes into
// the instance's inbox under the key a drain uses for a task
// (Client.CompleteTask), created only if absent, and the task and its claim
// are deleted in that same transaction (FinishTask). The holder's run takes
// the result from the inbox like any other entry and commits it with its
// next step. A claim given back (ReleaseTask), or ended with its node's
// session, frees the task for the next claim. An execution's final write,
// a rewind, a restart and a purge delete its queued tasks.

// ErrTaskQueued is what a TaskFunc returns for a task it put in the task
// queue: no result now; it comes through the instance's inbox.
var ErrTaskQueued = errors.New("orchestrator: the task waits in the task queue for a worker on any node; its result comes through the inbox")

// QueuedTask is one task of the task queue.
type QueuedTask struct {
	RemoteTask
	// Rev is the task key's CreateRevision.
	Rev int64
	// ClaimedBy is the node that claimed it ("" while free).
	ClaimedBy string
	key       string
}

// queuedValue is the JSON of a task key.
type queuedValue struct {
	Name         string          `json:"name"`
	Version      string          `json:"version,omitempty"`
	Input        json.RawMessage `json:"input,omitempty"`
	FencingToken int64           `json:"fencingToken,omitempty"`
	TraceParent  string          `json:"traceParent,omitempty"`
	TraceState   string          `json:"traceState,omitempty"`
	QueuedTime   time.Time       `json:"queuedTime"`
}

// Tasks is the prefix of the task queue.
func (k Keys) Tasks() string { return k.prefix + "v1/tasks/" }

// TaskPrefix holds the queued tasks of every execution of id.
func (k Keys) TaskPrefix(id string) string { return k.Tasks() + id + "/" }

// Task is the key of one queued task; its claim is Task + "/claim".
func (k Keys) Task(id, executionID string, taskID int) string {
	return k.TaskPrefix(id) + executionID + "/" + strconv.Itoa(taskID)
}

const claimSuffix = "/claim"

// taskResultKey is the inbox key of a task's result (CompleteTask's).
func (k Keys) taskResultKey(id, executionID string, taskID int) string {
	return fmt.Sprintf("%stask-%s-%d", k.InboxPrefix(id), executionID, taskID)
}

// taskResult is the inbox value of a task's result: its TaskCompleted (the
// result checked as JSON within the payload limit) or TaskFailed event.
func (c *Client) taskResult(executionID string, taskID int, result json.RawMessage, failure *FailureDetails) ([]byte, error) {
	ev := HistoryEvent{EventType: EventTaskCompleted, TaskID: taskID, ExecutionID: executionID, Timestamp: now()}
	if failure != nil {
		ev.EventType, ev.FailureDetails, ev.Failure = EventTaskFailed, failure, failure.ErrorMessage
	} else {
		r, err := c.checkJSON("task result", result)
		if err != nil {
			return nil, err
		}
		ev.Result = r
	}
	return json.Marshal(ev)
}

// parseTaskKey splits a task key (or its claim's) into its parts.
func (k Keys) parseTaskKey(key string) (id, executionID string, taskID int, claim, ok bool) {
	rest, ok := IDFrom(k.Tasks(), key)
	if !ok {
		return "", "", 0, false, false
	}
	rest, claim = strings.CutSuffix(rest, claimSuffix)
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return "", "", 0, false, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		return "", "", 0, false, false
	}
	return parts[0], parts[1], n, claim, true
}

// QueueTask puts t in the task queue unless it is there already (a later
// run of the execution queues its open tasks again: the first entry, and
// its claim, stay). Nothing is written for an instance that does not
// exist.
func (c *Client) QueueTask(ctx context.Context, t RemoteTask) error {
	if err := ValidateInstanceID(t.InstanceID); err != nil {
		return err
	}
	b, err := json.Marshal(queuedValue{Name: t.Name, Version: t.Version, Input: t.Input, FencingToken: t.FencingToken,
		TraceParent: t.Trace.Parent, TraceState: t.Trace.State, QueuedTime: time.Now().UTC()})
	if err != nil {
		return err
	}
	key := c.keys.Task(t.InstanceID, t.ExecutionID, t.ID)
	// Not applied: queued already, or the instance is gone (its run ends).
	_, err = c.etcd.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(c.keys.Instance(t.InstanceID)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
	).Then(clientv3.OpPut(key, string(b))).Commit()
	return storeErr(err)
}

// ClaimTask claims q for node, on lease: false if q is claimed already or
// no longer queued.
func (c *Client) ClaimTask(ctx context.Context, q QueuedTask, node string, lease clientv3.LeaseID) (bool, error) {
	resp, err := c.etcd.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(q.key), "=", q.Rev),
		clientv3.Compare(clientv3.CreateRevision(q.key+claimSuffix), "=", 0),
	).Then(clientv3.OpPut(q.key+claimSuffix, node, clientv3.WithLease(lease))).Commit()
	if err != nil {
		return false, storeErr(err)
	}
	return resp.Succeeded, nil
}

// FinishTask stores q's result (or failure) in its instance's inbox, unless
// a result of that task is there already, and deletes q and its claim, in
// one transaction. A task no longer queued (its execution ended) stores
// nothing.
func (c *Client) FinishTask(ctx context.Context, q QueuedTask, result json.RawMessage, failure *FailureDetails) error {
	b, err := c.taskResult(q.ExecutionID, q.ID, result, failure)
	if err != nil {
		return err
	}
	rk := c.keys.taskResultKey(q.InstanceID, q.ExecutionID, q.ID)
	del := []clientv3.Op{clientv3.OpDelete(q.key), clientv3.OpDelete(q.key + claimSuffix)}
	_, err = c.etcd.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(q.key), "=", q.Rev),
		clientv3.Compare(clientv3.CreateRevision(rk), "=", 0),
	).Then(append([]clientv3.Op{clientv3.OpPut(rk, string(b))}, del...)...).
		Else(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(q.key), "=", q.Rev)},
			del, // a result is there already: the task is done
			[]clientv3.Op{clientv3.OpDelete(q.key + claimSuffix)},
		)).Commit()
	return storeErr(err)
}

// ReleaseTask gives q back: its claim is deleted and another node (or this
// one, later) may claim it.
func (c *Client) ReleaseTask(ctx context.Context, q QueuedTask) error {
	_, err := c.etcd.Delete(ctx, q.key+claimSuffix)
	return storeErr(err)
}

// taskQueueOps delete the queued tasks of id (every execution's): an
// execution's final write carries them.
func (c *Client) taskQueueOps(id string) clientv3.Op {
	return clientv3.OpDelete(c.keys.TaskPrefix(id), clientv3.WithPrefix())
}

// TaskQueueView mirrors the task queue (WatchTaskQueue).
type TaskQueueView struct {
	keys  Keys
	done  chan struct{} // closed when the watch has ended
	mu    sync.Mutex
	tasks map[string]*QueuedTask // by task key
}

// Done is closed when the view's watch has ended (its ctx ended).
func (v *TaskQueueView) Done() <-chan struct{} { return v.done }

// Has reports whether t is in the queue (claimed or not), as far as the
// view has seen.
func (v *TaskQueueView) Has(t RemoteTask) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	q := v.tasks[v.keys.Task(t.InstanceID, t.ExecutionID, t.ID)]
	return q != nil && q.Rev != 0
}

// Free lists the queued tasks without a claim, oldest first.
func (v *TaskQueueView) Free() []QueuedTask {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []QueuedTask
	for _, q := range v.tasks {
		if q.ClaimedBy == "" && q.Rev != 0 {
			out = append(out, *q)
		}
	}
	slices.SortFunc(out, func(a, b QueuedTask) int { return int(a.Rev - b.Rev) })
	return out
}

// Queued reports whether q is still in the queue (same key, same entry).
func (v *TaskQueueView) Queued(q QueuedTask) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.tasks[q.key]
	return cur != nil && cur.Rev == q.Rev
}

// Len is how many tasks are queued.
func (v *TaskQueueView) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, q := range v.tasks {
		if q.Rev != 0 {
			n++
		}
	}
	return n
}

// apply takes one key's change: its value and CreateRevision, or its
// deletion.
func (v *TaskQueueView) apply(k Keys, key string, value []byte, createRev int64, deleted bool) {
	id, exec, taskID, claim, ok := k.parseTaskKey(key)
	if !ok {
		return
	}
	tk := strings.TrimSuffix(key, claimSuffix)
	q := v.tasks[tk]
	if q == nil {
		if deleted {
			return
		}
		q = &QueuedTask{key: tk, RemoteTask: RemoteTask{InstanceID: id, ExecutionID: exec, ScheduleTask: ScheduleTask{ID: taskID}}}
		v.tasks[tk] = q
	}
	switch {
	case claim && deleted:
		q.ClaimedBy = ""
	case claim:
		q.ClaimedBy = string(value)
	case deleted:
		q.Rev, q.Name, q.Version, q.Input, q.FencingToken, q.Trace = 0, "", "", nil, 0, TraceContext{}
	default:
		var qv queuedValue
		if json.Unmarshal(value, &qv) != nil {
			qv.Name = "" // an entry nobody wrote this way: never claimed
		}
		q.Rev, q.Name, q.Version, q.Input, q.FencingToken = createRev, qv.Name, qv.Version, qv.Input, qv.FencingToken
		q.Trace = TraceContext{Parent: qv.TraceParent, State: qv.TraceState}
	}
	if q.Rev == 0 && q.ClaimedBy == "" {
		delete(v.tasks, tk)
	}
}

// WatchTaskQueue mirrors the task queue until ctx ends: it reads it, then
// watches it, reading again after a broken or compacted watch, and calls
// changed (which must not block) after each change it applied.
func (c *Client) WatchTaskQueue(ctx context.Context, changed func()) *TaskQueueView {
	v := &TaskQueueView{keys: c.keys, done: make(chan struct{}), tasks: map[string]*QueuedTask{}}
	prefix := c.keys.Tasks()
	go func() {
		defer close(v.done)
		for ctx.Err() == nil {
			resp, err := c.etcd.Get(ctx, prefix, clientv3.WithPrefix())
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			v.mu.Lock()
			v.tasks = map[string]*QueuedTask{}
			for _, kv := range resp.Kvs {
				v.apply(c.keys, string(kv.Key), kv.Value, kv.CreateRevision, false)
			}
			v.mu.Unlock()
			changed()
			wch := c.etcd.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				v.mu.Lock()
				for _, ev := range wr.Events {
					v.apply(c.keys, string(ev.Kv.Key), ev.Kv.Value, ev.Kv.CreateRevision, ev.Type == clientv3.EventTypeDelete)
				}
				v.mu.Unlock()
				changed()
			}
		}
	}()
	return v
}
