package dashboard

import (
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// A new execution is marked as following a ContinueAsNew only when the
// record was seen turning ContinuedAsNew: a restart (a new execution after
// a terminal status) and a failover within one execution are not.
func TestGenerationsFromWatch(t *testing.T) {
	o := newOwnership()
	at := time.Unix(0, 0)
	seq := []scheduler.Change{
		{Kind: scheduler.ChangeNode, ID: "n1", Node: &orchestrator.NodeInfo{Node: "n1"}},
		{Kind: scheduler.ChangeNode, ID: "n2", Node: &orchestrator.NodeInfo{Node: "n2"}},
		{Kind: scheduler.ChangeOwner, ID: "i", Owner: &scheduler.Holder{Node: "n1", ExecutionID: "e1", FencingToken: 10}},
		{Kind: scheduler.ChangeInstance, ID: "i", Status: orchestrator.StatusContinuedAsNew},
		{Kind: scheduler.ChangeOwner, ID: "i", Deleted: true},
		{Kind: scheduler.ChangeOwner, ID: "i", Owner: &scheduler.Holder{Node: "n1", ExecutionID: "e2", FencingToken: 12}},
		{Kind: scheduler.ChangeNode, ID: "n1", Deleted: true},
		{Kind: scheduler.ChangeOwner, ID: "i", Owner: &scheduler.Holder{Node: "n2", ExecutionID: "e2", FencingToken: 15}},
		{Kind: scheduler.ChangeInstance, ID: "i", Status: orchestrator.StatusTerminated},
		{Kind: scheduler.ChangeOwner, ID: "i", Deleted: true},
		{Kind: scheduler.ChangeInstance, ID: "other", Status: orchestrator.StatusContinuedAsNew},
		{Kind: scheduler.ChangeOwner, ID: "i", Owner: &scheduler.Holder{Node: "n2", ExecutionID: "e3", FencingToken: 20}},
	}
	for i, c := range seq {
		c.Seen = at.Add(time.Duration(i) * time.Second)
		o.record(c)
	}
	g := generations(o.of("i"))
	if len(g) != 3 {
		t.Fatalf("generations: %+v", g)
	}
	want := []struct {
		exec    string
		can     bool
		holders []string
	}{{"e1", true, []string{"n1"}}, {"e2", false, []string{"n1", "n2"}}, {"e3", false, []string{"n2"}}}
	for i, w := range want {
		if g[i].Execution != w.exec || g[i].ContinuedAsNew != w.can || len(g[i].Holders) != len(w.holders) {
			t.Fatalf("generation %d: %+v, want %+v", i, g[i], w)
		}
		for j, n := range w.holders {
			if g[i].Holders[j].Node != n {
				t.Errorf("generation %d holder %d: %s, want %s", i, j, g[i].Holders[j].Node, n)
			}
		}
	}
	if g[1].Holders[1].Kind != "failover" || g[1].Holders[1].Token != 15 {
		t.Errorf("the failover within e2: %+v", g[1].Holders[1])
	}
	if g[0].First != at.Add(2*time.Second) {
		t.Errorf("e1 first held at %v", g[0].First)
	}
	if evs := o.of("other"); len(evs) != 1 || evs[0].Kind != "continued as new" {
		t.Errorf("other: %+v", evs)
	}
}
