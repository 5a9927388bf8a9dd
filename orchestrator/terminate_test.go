package orchestrator_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator"
)

// TestEngineTerminateInstance: a step's TerminateInstance terminates the
// other instance before the step commits, is recorded as TerminateSent
// (whose ID a later run of the execution counts, and whose repeat by an
// SDK replaying its code is taken once), finds a terminal target no
// error, and cannot name the execution's own instance.
func TestEngineTerminateInstance(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.start(t, "victim", `1`)
	x, h := v.running(t, "killer", `"in"`)
	exec := x.Status().ExecutionID
	g := orchestrator.OpenEngine(ctxT(t), x, orchestrator.EngineOptions{})
	w := g.Next()

	_, err := g.Complete(ctxT(t), w.Seq, []orchestrator.Action{orchestrator.TerminateInstance{ID: 0, InstanceID: "killer", Reason: "me"}})
	if !errors.Is(err, orchestrator.ErrInvalidAction) {
		t.Fatalf("terminate of its own instance: %v, want ErrInvalidAction", err)
	}
	if got := historyTypes(t, v, "killer", exec); len(got) != 0 {
		t.Fatalf("an invalid step wrote %v", got)
	}
	if _, err := g.Complete(ctxT(t), w.Seq, []orchestrator.Action{orchestrator.TerminateInstance{ID: 0, InstanceID: "victim", Reason: "stop"}}); err != nil {
		t.Fatal(err)
	}
	if st := v.decode(t, "victim"); st.RuntimeStatus != orchestrator.StatusTerminated || string(st.Output) != `"stop"` {
		t.Fatalf("victim: %s %s", st.RuntimeStatus, st.Output)
	}
	want := []orchestrator.EventType{orchestrator.EventExecutionStarted, orchestrator.EventTerminateSent}
	if got := historyTypes(t, v, "killer", exec); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}

	// A later run of the execution (a takeover, a parked run woken) counts
	// the terminate's ID; a terminate of the now terminal victim is no
	// error.
	x2, err := v.c.Open(ctxT(t), "killer", exec, h.fence)
	if err != nil {
		t.Fatal(err)
	}
	g2 := orchestrator.OpenEngine(ctxT(t), x2, orchestrator.EngineOptions{})
	w2 := g2.Next()
	if _, err := g2.Complete(ctxT(t), w2.Seq, []orchestrator.Action{orchestrator.ScheduleTask{ID: 0, Name: "Again"}}); !errors.Is(err, orchestrator.ErrInvalidAction) {
		t.Fatalf("task ID 0 after the terminate took it: %v, want ErrInvalidAction", err)
	}
	res, err := g2.Complete(ctxT(t), w2.Seq, []orchestrator.Action{
		orchestrator.TerminateInstance{ID: 0, InstanceID: "victim", Reason: "stop"}, // an SDK's repeat: taken once
		orchestrator.TerminateInstance{ID: 1, InstanceID: "victim", Reason: "again", Recursive: true},
		orchestrator.Complete{Status: orchestrator.StatusCompleted, Output: json.RawMessage(`"done"`)},
	})
	if err != nil || res.Status != orchestrator.StatusCompleted {
		t.Fatalf("final step: %+v %v", res, err)
	}
	if st := v.decode(t, "victim"); string(st.Output) != `"stop"` {
		t.Fatalf("a second terminate changed the victim: %s", st.Output)
	}
	want = []orchestrator.EventType{orchestrator.EventExecutionStarted, orchestrator.EventTerminateSent, orchestrator.EventTerminateSent, orchestrator.EventExecutionCompleted}
	if got := historyTypes(t, v, "killer", exec); !slices.Equal(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
}
