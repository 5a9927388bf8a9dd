package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEngineSteps drives an execution through the step API as a remote
// worker would: a remote task, its result reported with CompleteTask, a
// stale and an invalid completion that write nothing, and the final step.
func TestEngineSteps(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "steps", `"in"`)
	exec := x.Status().ExecutionID
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Local", orchestrator.Activity(func(_ context.Context, s string) (string, error) { return s + "!", nil }))
	g := orchestrator.OpenEngine(ctxT(t), x, orchestrator.EngineOptions{Activities: reg})

	w := g.Next()
	if len(w.Past) != 0 || len(w.New) != 1 || w.New[0].EventType != orchestrator.EventExecutionStarted || string(w.New[0].Input) != `"in"` {
		t.Fatalf("first step: past %v new %v", w.Past, w.New)
	}
	// An ID out of sequence: refused, nothing written.
	if _, err := g.Complete(ctxT(t), w.Seq, []orchestrator.Action{orchestrator.ScheduleTask{ID: 1, Name: "Remote"}}); !errors.Is(err, orchestrator.ErrInvalidAction) {
		t.Fatalf("bad ID: %v, want ErrInvalidAction", err)
	}
	if got := historyTypes(t, v, "steps", exec); len(got) != 0 {
		t.Fatalf("an invalid step wrote %v", got)
	}
	res, err := g.Complete(ctxT(t), w.Seq, []orchestrator.Action{
		orchestrator.ScheduleTask{ID: 0, Name: "Remote", Input: json.RawMessage(`1`)},
		orchestrator.ScheduleTask{ID: 1, Name: "Local", Input: json.RawMessage(`"x"`)},
		orchestrator.SetCustomStatus{Status: json.RawMessage(`"busy"`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Remote) != 1 || res.Remote[0].Name != "Remote" || !res.More {
		t.Fatalf("step result %+v", res)
	}
	if _, err := g.Complete(ctxT(t), w.Seq, nil); !errors.Is(err, orchestrator.ErrStaleCompletion) {
		t.Fatalf("repeat of an answered dispatch: %v, want ErrStaleCompletion", err)
	}
	if st := v.decode(t, "steps"); st.RuntimeStatus != orchestrator.StatusRunning || string(st.CustomStatus) != `"busy"` {
		t.Fatalf("after the first step: %s custom %s", st.RuntimeStatus, st.CustomStatus)
	}
	if err := v.c.CompleteTask(ctxT(t), "steps", exec, 0, json.RawMessage(`2`), nil); err != nil {
		t.Fatal(err)
	}
	in, err := v.raw.Get(ctxT(t), v.keys.InboxPrefix("steps"), clientv3.WithPrefix())
	if err != nil || len(in.Kvs) != 1 {
		t.Fatalf("inbox after CompleteTask: %v %v", in, err)
	}
	g.Deliver(orchestrator.ParseInboxEntry(string(in.Kvs[0].Key), in.Kvs[0].CreateRevision, in.Kvs[0].Value))
	w2 := g.Next()
	if w2.Seq == w.Seq || len(w2.Past) != 3 || len(w2.New) != 2 {
		t.Fatalf("second step: past %d new %v", len(w2.Past), w2.New)
	}
	results := map[int]string{}
	for _, ev := range w2.New {
		if ev.EventType != orchestrator.EventTaskCompleted {
			t.Fatalf("new event %s, want TaskCompleted", ev.EventType)
		}
		results[ev.TaskID] = string(ev.Result)
	}
	if results[0] != "2" || results[1] != `"x!"` {
		t.Fatalf("results %v", results)
	}
	res, err = g.Complete(ctxT(t), w2.Seq, []orchestrator.Action{orchestrator.Complete{Status: orchestrator.StatusCompleted, Output: json.RawMessage(`"done"`)}})
	if err != nil || res.Status != orchestrator.StatusCompleted {
		t.Fatalf("final step: %+v %v", res, err)
	}
	if st := v.decode(t, "steps"); st.RuntimeStatus != orchestrator.StatusCompleted || string(st.Output) != `"done"` {
		t.Fatalf("after the final step: %s %s", st.RuntimeStatus, st.Output)
	}
	got := historyTypes(t, v, "steps", exec)
	if len(got) != 6 || got[3] != orchestrator.EventTaskCompleted || got[5] != orchestrator.EventExecutionCompleted {
		t.Fatalf("history %v", got)
	}
	if v.get(t, v.keys.Owner("steps")) != nil {
		t.Fatal("the owners key outlived the final step")
	}
}
