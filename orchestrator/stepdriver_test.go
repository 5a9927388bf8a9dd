package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// A step driver's run that stops with tasks open (its node lost the
// instance) leaves them to the next run: the next run dispatches the
// remote task again and runs the local activity again (its result was
// only in memory), hands both results to its next step in memory (nothing
// goes to the inbox), and commits them with it; the execution completes
// with each result in its history once.
func TestDriveStepsResumesOpenTasks(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, h := v.running(t, "ds", `"in"`)
	exec := x.Status().ExecutionID
	reg := orchestrator.NewRegistry()
	var localCalls atomic.Int32
	if err := reg.AddActivity("Local", orchestrator.Activity(func(_ context.Context, s string) (string, error) {
		localCalls.Add(1)
		return s + "!", nil
	})); err != nil {
		t.Fatal(err)
	}
	waitEnd := func(ch chan orchestrator.Outcome) orchestrator.Outcome {
		t.Helper()
		select {
		case o := <-ch:
			return o
		case <-time.After(20 * time.Second):
			t.Fatal("the run did not end")
			return orchestrator.Outcome{}
		}
	}

	// Run 1: the first step schedules Local and Remote; the run is stopped
	// when the next step (Local's result) is sent; Remote never answers.
	ctx1, stop1 := context.WithCancelCause(ctxT(t))
	ended1 := make(chan orchestrator.Outcome, 1)
	steps := 0
	orchestrator.DriveSteps(ctx1, x, orchestrator.RunOptions{OnEnd: func(o orchestrator.Outcome) { ended1 <- o }}, orchestrator.StepDriverOptions{
		Activities: reg,
		Step: func(ctx context.Context, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error) error {
			steps++
			if steps == 1 {
				if !item.First || len(item.New) != 1 || item.New[0].EventType != orchestrator.EventExecutionStarted {
					t.Errorf("first step: first %v new %v", item.First, item.New)
				}
				return complete([]orchestrator.Action{
					orchestrator.ScheduleTask{ID: 0, Name: "Local", Input: json.RawMessage(`"a"`)},
					orchestrator.ScheduleTask{ID: 1, Name: "Remote", Input: json.RawMessage(`1`)},
				})
			}
			stop1(errors.New("the node lost the instance"))
			<-ctx.Done()
			return context.Cause(ctx)
		},
		Task: func(ctx context.Context, _ orchestrator.RemoteTask) (json.RawMessage, *orchestrator.FailureDetails, error) {
			<-ctx.Done()
			return nil, nil, ctx.Err()
		},
	})
	if o := waitEnd(ended1); o.Err == nil || o.Status != "" {
		t.Fatalf("run 1 ended with %+v, want stopped without a status", o)
	}
	if n := localCalls.Load(); n != 1 {
		t.Fatalf("Local ran %d times in run 1", n)
	}

	// Run 2, from the history.
	x2, err := v.c.Open(ctxT(t), "ds", exec, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	ended2 := make(chan orchestrator.Outcome, 1)
	var mu sync.Mutex
	var remote []orchestrator.RemoteTask
	d := orchestrator.DriveSteps(ctxT(t), x2, orchestrator.RunOptions{OnEnd: func(o orchestrator.Outcome) { ended2 <- o }}, orchestrator.StepDriverOptions{
		Activities: reg,
		Step: func(ctx context.Context, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error) error {
			results := 0
			for _, ev := range append(append([]orchestrator.HistoryEvent(nil), item.Past...), item.New...) {
				if ev.EventType == orchestrator.EventTaskCompleted {
					results++
				}
			}
			if results < 2 {
				return complete(nil)
			}
			return complete([]orchestrator.Action{orchestrator.Complete{Status: orchestrator.StatusCompleted, Output: json.RawMessage(`"done"`)}})
		},
		Task: func(_ context.Context, rt orchestrator.RemoteTask) (json.RawMessage, *orchestrator.FailureDetails, error) {
			mu.Lock()
			remote = append(remote, rt)
			mu.Unlock()
			return json.RawMessage(`2`), nil, nil
		},
	})
	// Deliver the inbox as a node does (repeats are ignored): it stays empty.
	var o orchestrator.Outcome
	inboxed := 0
	for done := false; !done; {
		select {
		case o = <-ended2:
			done = true
		case <-time.After(50 * time.Millisecond):
			in, err := v.raw.Get(ctxT(t), v.keys.InboxPrefix("ds"), clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			inboxed += len(in.Kvs)
			for _, kv := range in.Kvs {
				d.Deliver(orchestrator.ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value))
			}
		case <-time.After(20 * time.Second):
			t.Fatal("run 2 did not end")
		}
	}
	if o.Status != orchestrator.StatusCompleted {
		t.Fatalf("run 2 ended with %+v", o)
	}
	if inboxed != 0 {
		t.Fatalf("%d inbox entries seen during run 2, want none: results are handed to the step in memory", inboxed)
	}
	if n := localCalls.Load(); n != 2 {
		t.Fatalf("Local ran %d times in all, want 2 (again in run 2: its result was not stored)", n)
	}
	if len(remote) != 1 || remote[0].ID != 1 || remote[0].Name != "Remote" || string(remote[0].Input) != "1" ||
		remote[0].FencingToken != h.fence.Token || remote[0].ExecutionID != exec {
		t.Fatalf("remote tasks of run 2: %+v", remote)
	}
	hist, err := v.c.History(ctxT(t), "ds", exec)
	if err != nil {
		t.Fatal(err)
	}
	completed := map[int]string{}
	for _, ev := range hist {
		if ev.EventType == orchestrator.EventTaskCompleted {
			if _, dup := completed[ev.TaskID]; dup {
				t.Fatalf("task %d completed twice in %v", ev.TaskID, hist)
			}
			completed[ev.TaskID] = string(ev.Result)
		}
	}
	if completed[0] != `"a!"` || completed[1] != "2" {
		t.Fatalf("results in the history: %v", completed)
	}
	if st := v.decode(t, "ds"); st.RuntimeStatus != orchestrator.StatusCompleted || string(st.Output) != `"done"` {
		t.Fatalf("end: %s %s", st.RuntimeStatus, st.Output)
	}
}

// A step driver's run parks (RunOptions.ParkAfter) once it has waited
// with nothing out: its outcome says when its timer fires.
func TestDriveStepsParks(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "dp", "")
	fireAt := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	ended := make(chan orchestrator.Outcome, 1)
	steps := 0
	orchestrator.DriveSteps(ctxT(t), x, orchestrator.RunOptions{ParkAfter: 100 * time.Millisecond, OnEnd: func(o orchestrator.Outcome) { ended <- o }},
		orchestrator.StepDriverOptions{Step: func(ctx context.Context, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error) error {
			steps++
			return complete([]orchestrator.Action{orchestrator.CreateTimer{ID: 0, FireAt: fireAt}})
		}})
	select {
	case o := <-ended:
		if !o.Parked || !o.WakeAt.Equal(fireAt) || o.Err != nil || steps != 1 {
			t.Fatalf("outcome %+v after %d steps, want parked until %v", o, steps, fireAt)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the run did not park")
	}
}

// Driver.Checkpoint of a step driver's run stores the task results it
// holds (not committed yet) in the instance's inbox; when those entries
// come back to the same run as well, each completion is carried by one
// step and is in the history once.
func TestDriveStepsCheckpointStoresResult(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "dc", "")
	exec := x.Status().ExecutionID
	inStep2 := make(chan struct{})
	release := make(chan struct{})
	ended := make(chan orchestrator.Outcome, 1)
	var news [][]orchestrator.HistoryEvent
	d := orchestrator.DriveSteps(ctxT(t), x, orchestrator.RunOptions{OnEnd: func(o orchestrator.Outcome) { ended <- o }}, orchestrator.StepDriverOptions{
		Step: func(ctx context.Context, item *orchestrator.WorkItem, complete func([]orchestrator.Action) error) error {
			news = append(news, item.New)
			switch len(news) {
			case 1:
				return complete([]orchestrator.Action{
					orchestrator.ScheduleTask{ID: 0, Name: "Slow"},
					orchestrator.ScheduleTask{ID: 1, Name: "Fast"},
				})
			case 2: // Fast's result; Slow's arrives while this step is out
				close(inStep2)
				<-release
				return complete(nil)
			}
			return complete([]orchestrator.Action{orchestrator.Complete{Status: orchestrator.StatusCompleted, Output: json.RawMessage(`"done"`)}})
		},
		Task: func(ctx context.Context, rt orchestrator.RemoteTask) (json.RawMessage, *orchestrator.FailureDetails, error) {
			if rt.ID == 0 {
				<-inStep2
			}
			return json.RawMessage(fmt.Sprint(rt.ID + 10)), nil, nil
		},
	})
	select {
	case <-inStep2:
	case <-time.After(20 * time.Second):
		t.Fatal("no second step")
	}
	// Both results are held (Fast's in the step that is out, Slow's for the
	// next) or, Slow's if it comes after the first checkpoint, stored
	// straight away: in the inbox once this loop ends.
	var inbox *clientv3.GetResponse
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := d.Checkpoint(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		var err error
		if inbox, err = v.raw.Get(ctxT(t), v.keys.InboxPrefix("dc"), clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		if len(inbox.Kvs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbox %v after Checkpoint, want both tasks' results", inbox.Kvs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, kv := range inbox.Kvs {
		if !d.Deliver(orchestrator.ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value)) {
			t.Fatal("the run ended early")
		}
	}
	close(release)
	select {
	case o := <-ended:
		if o.Status != orchestrator.StatusCompleted {
			t.Fatalf("outcome %+v", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the run did not end")
	}
	carried := map[int]int{}
	for _, evs := range news {
		for _, ev := range evs {
			if ev.EventType == orchestrator.EventTaskCompleted {
				carried[ev.TaskID]++
			}
		}
	}
	if len(news) != 3 || carried[0] != 1 || carried[1] != 1 {
		t.Fatalf("%d steps carrying completions %v, want 3 steps, each task's once", len(news), carried)
	}
	hist, err := v.c.History(ctxT(t), "dc", exec)
	if err != nil {
		t.Fatal(err)
	}
	done := map[int]string{}
	for _, ev := range hist {
		if ev.EventType == orchestrator.EventTaskCompleted {
			if _, dup := done[ev.TaskID]; dup {
				t.Fatalf("task %d completed twice: %+v", ev.TaskID, hist)
			}
			done[ev.TaskID] = string(ev.Result)
		}
	}
	if done[0] != "10" || done[1] != "11" {
		t.Fatalf("completions in the history %v", done)
	}
}
