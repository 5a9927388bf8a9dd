package main

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestWorthReleasing(t *testing.T) {
	for _, c := range []struct {
		h    heapSample
		want bool
	}{
		{heapSample{free: 200 << 20, objects: 80 << 20}, true},  // after a burst parked
		{heapSample{free: 70 << 20, objects: 100 << 20}, false}, // busy: free below live
		{heapSample{free: 10 << 20, objects: 1 << 20}, false},   // small: not worth a GC
	} {
		if got := defaultMemRelease.worthReleasing(c.h); got != c.want {
			t.Errorf("worthReleasing(free %d MiB, objects %d MiB) = %v, want %v", c.h.free>>20, c.h.objects>>20, got, c.want)
		}
	}
}

// Under the GC floor a busy node's free heap is about the floor: not worth
// a release; a burst parked above it still is.
func TestWorthReleasingAboveTheFloor(t *testing.T) {
	m := defaultMemRelease
	m.headroom = defaultGCFloor.floor
	for _, c := range []struct {
		h    heapSample
		want bool
	}{
		{heapSample{free: 70 << 20, objects: 5 << 20}, false},   // busy, small live heap under the floor's goal
		{heapSample{free: 200 << 20, objects: 80 << 20}, true},  // after a burst parked
		{heapSample{free: 120 << 20, objects: 10 << 20}, false}, // within the floor and min
	} {
		if got := m.worthReleasing(c.h); got != c.want {
			t.Errorf("worthReleasing(free %d MiB, objects %d MiB) with the floor's headroom = %v, want %v", c.h.free>>20, c.h.objects>>20, got, c.want)
		}
	}
}

// sink keeps the burst reachable until the test drops it.
var sink [][]byte

// TestReleaseMemoryAfterBurst frees a burst of 256 MiB and checks that the
// loop hands the free heap back to the OS.
func TestReleaseMemoryAfterBurst(t *testing.T) {
	m := memRelease{checkEvery: 20 * time.Millisecond, releaseEvery: time.Hour, min: 64 << 20}
	for range 256 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC() // the burst is free heap now, and stays resident
	if h := readHeap(); !m.worthReleasing(h) {
		t.Skipf("the runtime returned the burst by itself (free %d MiB, objects %d MiB)", h.free>>20, h.objects>>20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.run(ctx, slog.New(slog.DiscardHandler))
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := readHeap()
		if h.free < m.min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("free heap still %d MiB (objects %d MiB) 10s after the burst", h.free>>20, h.objects>>20)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGCFloorPercent(t *testing.T) {
	g := gcFloor{floor: 64 << 20}
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 10, maxGCPercent}, // nearly empty: bounded
		{4 << 20, 1500},         // 4 MiB live: goal 64 MiB
		{16 << 20, 300},         // goal 64 MiB
		{32 << 20, 100},         // half the floor: as without it
		{500 << 20, 100},        // many instances held: as without it
	} {
		if got := g.percent(c.live); got != c.want {
			t.Errorf("percent(%d MiB live) = %d, want %d", c.live>>20, got, c.want)
		}
		if p := g.percent(c.live); c.live > 0 && p < maxGCPercent && c.live*uint64(100+p)/100 < g.floor && p != 100 {
			t.Errorf("percent(%d) = %d: goal %d below the floor", c.live, p, c.live*uint64(100+p)/100)
		}
	}
}

// TestGCFloorRun sets GOGC from the live heap at once, and restores 100
// when it stops.
func TestGCFloorRun(t *testing.T) {
	var mu sync.Mutex
	var got []int
	first := make(chan struct{})
	g := gcFloor{floor: 1 << 40, every: 10 * time.Millisecond, set: func(p int) int {
		mu.Lock()
		defer mu.Unlock()
		if got = append(got, p); len(got) == 1 {
			close(first)
		}
		return 100
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.run(ctx, slog.New(slog.DiscardHandler)) }()
	select {
	case <-first:
	case <-time.After(5 * time.Second):
		t.Fatal("GOGC not set within 5s")
	}
	time.Sleep(30 * time.Millisecond) // three more looks at an unchanged heap: no more sets
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// A floor of 1 TiB is far above any test's live heap: the bound.
	if len(got) != 2 || got[0] != maxGCPercent || got[1] != 100 {
		t.Fatalf("GOGC set to %v, want [%d 100] (the bound once, then restored)", got, maxGCPercent)
	}
}
