package sidecar

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// Workers describes each connected stream: its address, what it serves
// (its filters, or "*"), its limits and what it has in flight; a worker
// that goes is no longer listed, and none is once the node drains; each
// of these changes closes the channel WorkersChanged handed out.
func TestWorkersSnapshot(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	began := time.Now()
	changed := f.h.workersChanged()
	filtered := f.connect(&protos.GetWorkItemsRequest{MaxConcurrentOrchestrationWorkItems: 3, WorkItemFilters: &protos.WorkItemFilters{
		Orchestrations: []*protos.OrchestrationFilter{{Name: "Other"}, {Name: "Flow"}},
		Activities:     []*protos.ActivityFilter{{Name: "Say"}},
	}})
	waitWorkers(t, f.h, 1)
	closedWithin(t, changed, "a worker connected")
	done := f.runAsync(orchDispatch("i1"), acceptAll) // a Flow: goes to the one worker
	it := filtered.next(t)
	anyW := f.connect(&protos.GetWorkItemsRequest{MaxConcurrentActivityWorkItems: 2})
	waitWorkers(t, f.h, 2)
	ws := f.h.snapshot()
	if len(ws) != 2 || ws[0].ID >= ws[1].ID {
		t.Fatalf("snapshot %+v", ws)
	}
	a, b := ws[0], ws[1]
	if !slices.Equal(a.Orchestrations, []string{"Flow", "Other"}) || !slices.Equal(a.Activities, []string{"Say"}) || a.MaxOrchestrations != 3 || a.MaxActivities != 0 {
		t.Errorf("filtered worker %+v", a)
	}
	if !slices.Equal(b.Orchestrations, []string{"*"}) || !slices.Equal(b.Activities, []string{"*"}) || b.MaxActivities != 2 {
		t.Errorf("unfiltered worker %+v", b)
	}
	if a.InFlightOrchestrations != 1 || b.InFlightOrchestrations != 0 || a.InFlightActivities+b.InFlightActivities != 0 {
		t.Errorf("in flight: %+v %+v, want the one orchestration item on the filtered worker", a, b)
	}
	for _, w := range ws {
		if !strings.HasPrefix(w.Peer, "127.0.0.1:") || w.Connected.Before(began) || time.Since(w.Connected) > time.Minute {
			t.Errorf("worker %d: peer %q connected %v", w.ID, w.Peer, w.Connected)
		}
	}
	if _, err := f.cli.CompleteOrchestratorTask(context.Background(), &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken()}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	changed = f.h.workersChanged()
	select {
	case <-changed:
		t.Fatal("the change channel is closed while nothing changed")
	default:
	}
	anyW.cancel()
	closedWithin(t, changed, "a worker went")
	waitWorkers(t, f.h, 1)
	if ws := f.h.snapshot(); len(ws) != 1 || ws[0].ID != a.ID || ws[0].InFlightOrchestrations != 0 {
		t.Errorf("after one left and the item was answered: %+v", ws)
	}
	changed = f.h.workersChanged()
	f.h.close()
	closedWithin(t, changed, "the drain")
	if ws := f.h.snapshot(); len(ws) != 0 {
		t.Errorf("after the drain: %+v", ws)
	}
}

func closedWithin(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("WorkersChanged's channel not closed within 5 s after %s", what)
	}
}
