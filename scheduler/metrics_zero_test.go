package scheduler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// A fresh node has soloist_orchestrations_completed_total at 0 for every
// registered function and every terminal status, before anything ran, so
// that increase() and alerts see a function's first failure; a run then
// moves only its own series.
func TestCompletedSeriesAtZeroFromStart(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	if err := reg.AddOrchestrator("Works", func(*orchestrator.OrchestrationContext) (any, error) { return "ok", nil }); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddOrchestrator("Breaks", func(*orchestrator.OrchestrationContext) (any, error) { return nil, errors.New("broken") }); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 1, 2*time.Second, reg)
	n := c.nodes[0]

	const name = "soloist_orchestrations_completed_total"
	series := func() map[[2]string]float64 {
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[[2]string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				var k [2]string
				for _, lp := range m.GetLabel() {
					switch lp.GetName() {
					case "function":
						k[0] = lp.GetValue()
					case "status":
						k[1] = lp.GetValue()
					}
				}
				got[k] = m.GetCounter().GetValue()
			}
		}
		return got
	}
	want := map[[2]string]float64{}
	for _, f := range []string{"Works", "Breaks"} {
		for _, s := range []string{"Completed", "Failed", "Terminated"} {
			want[[2]string{f, s}] = 0
		}
	}
	check := func(when string) {
		t.Helper()
		got := series()
		if len(got) != len(want) {
			t.Errorf("%s: %d series of %s, want %d: %v", when, len(got), name, len(want), got)
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s{function=%q,status=%q} = %v (present %v), want %v", when, name, k[0], k[1], g, ok, v)
			}
		}
	}
	check("fresh node")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := c.client()
	for _, f := range []string{"Works", "Breaks"} {
		if _, err := cl.Start(ctx, f, orchestrator.StartOptions{InstanceID: f + "-1"}); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, cl, "Works-1", orchestrator.StatusCompleted, 10*time.Second)
	waitStatus(t, cl, "Breaks-1", orchestrator.StatusFailed, 10*time.Second)
	want[[2]string{"Works", "Completed"}] = 1
	want[[2]string{"Breaks", "Failed"}] = 1
	eventually(t, 5*time.Second, "the two runs counted", func() bool {
		got := series()
		return got[[2]string{"Works", "Completed"}] == 1 && got[[2]string{"Breaks", "Failed"}] == 1
	})
	check("after one Completed and one Failed run")
}
