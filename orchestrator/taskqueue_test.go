package orchestrator_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// The task queue's operations: a task is queued once (a second QueueTask
// keeps the first entry), claimed once, its result stored once with the
// task and claim deleted; a released claim frees the task; the view
// follows all of it.
func TestTaskQueue(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	r := v.start(t, "q1", `1`)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	view := v.c.WatchTaskQueue(ctx, func() {})

	task := orchestrator.RemoteTask{InstanceID: "q1", ExecutionID: r.Status.ExecutionID, FencingToken: 7,
		ScheduleTask: orchestrator.ScheduleTask{ID: 3, Name: "Act", Version: "v2", Input: json.RawMessage(`"in"`)}}
	if err := v.c.QueueTask(ctxT(t), task); err != nil {
		t.Fatal(err)
	}
	key := v.keys.Task("q1", r.Status.ExecutionID, 3)
	first := v.get(t, key)
	if first == nil {
		t.Fatal("no task key after QueueTask")
	}
	if err := v.c.QueueTask(ctxT(t), task); err != nil {
		t.Fatal(err)
	}
	if again := v.get(t, key); again.ModRevision != first.ModRevision {
		t.Fatalf("a second QueueTask rewrote the task: %v -> %v", first, again)
	}
	var free []orchestrator.QueuedTask
	eventually(t, 5*time.Second, "the view lists the task", func() bool { free = view.Free(); return len(free) == 1 })
	q := free[0]
	if q.Name != "Act" || q.Version != "v2" || string(q.Input) != `"in"` || q.ID != 3 || q.FencingToken != 7 || q.Rev != first.CreateRevision {
		t.Fatalf("view: %+v", q)
	}

	g, err := v.raw.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := v.c.ClaimTask(ctxT(t), q, "node-a", g.ID); err != nil || !ok {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	if ok, err := v.c.ClaimTask(ctxT(t), q, "node-b", g.ID); err != nil || ok {
		t.Fatalf("second claim: %v %v, want refused", ok, err)
	}
	eventually(t, 5*time.Second, "the view shows the claim", func() bool { return len(view.Free()) == 0 })
	if err := v.c.ReleaseTask(ctxT(t), q); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the released task is free", func() bool { return len(view.Free()) == 1 })
	if ok, err := v.c.ClaimTask(ctxT(t), q, "node-b", g.ID); err != nil || !ok {
		t.Fatalf("claim after release: %v %v", ok, err)
	}

	if err := v.c.FinishTask(ctxT(t), q, json.RawMessage(`"out"`), nil); err != nil {
		t.Fatal(err)
	}
	inbox := v.keys.InboxPrefix("q1") + "task-" + r.Status.ExecutionID + "-3"
	res := v.get(t, inbox)
	if res == nil {
		t.Fatal("no result in the inbox")
	}
	var ev orchestrator.HistoryEvent
	if err := json.Unmarshal([]byte(res.Value), &ev); err != nil || ev.EventType != orchestrator.EventTaskCompleted || string(ev.Result) != `"out"` || ev.TaskID != 3 {
		t.Fatalf("inbox result %s (%v)", res.Value, err)
	}
	if v.get(t, key) != nil || v.get(t, key+"/claim") != nil {
		t.Fatal("the task or its claim is left after FinishTask")
	}
	// A second answer (another worker's, late) changes nothing.
	if err := v.c.FinishTask(ctxT(t), q, json.RawMessage(`"late"`), nil); err != nil {
		t.Fatal(err)
	}
	if again := v.get(t, inbox); again.ModRevision != res.ModRevision {
		t.Fatalf("a late answer rewrote the result: %s", again.Value)
	}
	eventually(t, 5*time.Second, "the view is empty", func() bool { return view.Len() == 0 })

	// A result there already (a drain stored it): FinishTask stores
	// nothing and still takes the task out of the queue.
	task.ID = 4
	if err := v.c.QueueTask(ctxT(t), task); err != nil {
		t.Fatal(err)
	}
	if err := v.c.CompleteTask(ctxT(t), "q1", r.Status.ExecutionID, 4, json.RawMessage(`"drained"`), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the view lists task 4", func() bool { free = view.Free(); return len(free) == 1 })
	if err := v.c.FinishTask(ctxT(t), free[0], json.RawMessage(`"again"`), nil); err != nil {
		t.Fatal(err)
	}
	if got := v.get(t, v.keys.InboxPrefix("q1")+"task-"+r.Status.ExecutionID+"-4"); got == nil || !strings.Contains(got.Value, `"drained"`) {
		t.Fatalf("the drained result was replaced: %v", got)
	}
	if v.get(t, v.keys.Task("q1", r.Status.ExecutionID, 4)) != nil {
		t.Fatal("task 4 is left in the queue")
	}

	// No task is queued for an instance that does not exist.
	task.InstanceID = "nope"
	if err := v.c.QueueTask(ctxT(t), task); err != nil {
		t.Fatal(err)
	}
	resp, err := v.raw.Get(ctxT(t), v.keys.Tasks(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("queue keys %v (%v), want 0", resp.Count, err)
	}
}
