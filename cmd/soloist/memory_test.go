package main

import (
	"context"
	"log/slog"
	"runtime"
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
