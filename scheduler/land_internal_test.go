package scheduler

import (
	"testing"
	"time"
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
