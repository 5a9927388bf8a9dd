package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestOthersInFlight(t *testing.T) {
	for _, c := range []struct {
		mine    int
		took    float64
		runners int
		want    int
	}{
		{mine: 16, took: 1200, runners: 3, want: 32}, // busy, spread: as many on each other node
		{mine: 16, took: 10, runners: 3, want: 10},   // the others took few lately: no more than that
		{mine: 16, took: 0, runners: 3, want: 0},     // every start comes here
		{mine: 0, took: 1200, runners: 3, want: 0},   // nothing in flight here: nothing assumed
		{mine: 16, took: 1200, runners: 1, want: 0},  // alone
	} {
		if got := othersInFlight(c.mine, c.took, c.runners); got != c.want {
			t.Errorf("othersInFlight(%d, %v, %d) = %d, want %d", c.mine, c.took, c.runners, got, c.want)
		}
	}
}

func TestTakeRateDecays(t *testing.T) {
	var r takeRate
	t0 := time.Unix(1000, 0)
	for i := range 100 {
		r.add(t0.Add(time.Duration(i) * time.Millisecond))
	}
	now := t0.Add(99 * time.Millisecond)
	if v := r.at(now); v < 95 || v > 100 {
		t.Fatalf("100 takes within 0.1 s count %.1f, want about 100", v)
	}
	if v := r.at(now.Add(takeDecay)); v < 33 || v > 39 {
		t.Fatalf("one decay later they count %.1f, want about 100/e", v)
	}
	if v := r.at(now.Add(10 * takeDecay)); v >= 1 {
		t.Fatalf("ten decays later they count %.2f, want under 1", v)
	}
	if v := r.at(now.Add(-time.Second)); v != r.at(now) {
		t.Fatalf("a clock before the last take changes the count to %.1f", v)
	}
}

// A snapshot of a busy balanced cluster of short instances, as a node's
// view had it when it refused to land (the benchmark's lifecycle phase):
// 15 of the 18 owners keys it saw were its own and 16 of its starts were
// in flight. With the other nodes seen taking instances, their starts in
// flight count too and it lands; seeing them take nothing (every start
// comes here), it still refuses.
func TestFairCountsOthersInFlight(t *testing.T) {
	view := func(othersTook int) *Node {
		n := &Node{
			cfg:         Config{NodeID: "a"},
			nodes:       map[string]*orchestrator.NodeInfo{"a": {Node: "a"}, "b": {Node: "b"}, "c": {Node: "c"}},
			owners:      map[string]ownerView{},
			campaigning: map[string]*campaign{},
			unseen:      map[string]struct{}{},
		}
		for i := range 18 {
			node := "b"
			if i < 15 {
				node = "a"
				n.ownedHere++
			}
			n.owners[fmt.Sprintf("held-%d", i)] = ownerView{node: node}
		}
		for i := range 16 {
			n.campaigning[fmt.Sprintf("flight-%d", i)] = &campaign{}
		}
		now := time.Now()
		for range othersTook {
			n.othersTook.add(now)
		}
		return n
	}
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("start-%d", i); view(0).rankLocked(c) > 0 {
			id = c
		}
	}
	if !view(600).fairLocked(id) {
		t.Errorf("with the other nodes taking 600 a second, 15 of 18 seen and 16 in flight is not within the share; want it landed")
	}
	if view(0).fairLocked(id) {
		t.Errorf("with the other nodes taking nothing, 15 of 18 seen and 16 in flight is within the share; want a campaign")
	}
}
