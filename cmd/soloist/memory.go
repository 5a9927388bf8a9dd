package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Returning memory after a burst. A node that ran thousands of
// orchestrations at once and then parked them (--park-after) needs a
// fraction of the memory it had: the freed goroutine stacks and histories
// become free heap, which the Go runtime keeps resident for reuse as long
// as its heap goal (GOGC) allows, for ever if the node stays at rest.
// Measured with 10,000 parked instances: 7 KB in use and 15 KB free per
// instance, two thirds of the node's resident memory. So every
// checkEvery the binary looks at the free heap, and when it is both
// above min and larger than what is in use, it returns it to
// the OS (debug.FreeOSMemory: one full GC), at most once per
// releaseEvery. A release leaves next to no free heap, so another one
// needs another burst of at least min freed; a busy node's free heap
// stays below its live heap or within the GC floor's headroom, so it
// never pays for this (one full GC: 77 ms of one core with 10,000 parked
// instances). The library (package scheduler) never does it: a process
// that embeds it decides for itself.
type memRelease struct {
	checkEvery, releaseEvery time.Duration
	min                      uint64 // free heap bytes below which it is not worth a GC
	// headroom is free heap kept on purpose, not counted towards min:
	// gcFloor's floor when it runs. A busy node's live heap is a few MiB
	// under a goal of the floor, so its free heap between collections is
	// nearly the floor; counting it, the node released (one full GC, and
	// the pages faulted back in at once) every releaseEvery under load,
	// 5 % of its CPU in the benchmark's lifecycle phase.
	headroom uint64
}

var defaultMemRelease = memRelease{checkEvery: 5 * time.Second, releaseEvery: 10 * time.Second, min: 64 << 20}

// heapSample is what the release decision reads (runtime/metrics).
type heapSample struct{ free, objects uint64 }

var heapMetrics = []string{"/memory/classes/heap/free:bytes", "/memory/classes/heap/objects:bytes"}

func readHeap() heapSample {
	s := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	var h heapSample
	if s[0].Value.Kind() == metrics.KindUint64 {
		h.free = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		h.objects = s[1].Value.Uint64()
	}
	return h
}

// worthReleasing reports whether the free heap is large in itself and
// next to what is in use.
func (m memRelease) worthReleasing(h heapSample) bool {
	return h.free >= m.min+m.headroom && h.free > h.objects
}

// run checks until ctx ends.
func (m memRelease) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(m.checkEvery)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !last.IsZero() && time.Since(last) < m.releaseEvery {
			continue
		}
		h := readHeap()
		if !m.worthReleasing(h) {
			continue
		}
		last = time.Now()
		debug.FreeOSMemory()
		after := readHeap()
		log.Debug("returned free memory to the OS", "free_bytes_before", h.free, "free_bytes_after", after.free,
			"heap_objects_bytes", after.objects, "took", time.Since(last).Round(time.Millisecond))
	}
}

// A floor under the GC's heap goal. With the default GOGC=100 the runtime
// collects each time the heap doubles; a node's live heap is small (a few
// MiB with nothing held), so under load it collected several times a
// second, and with each collection it shrank the stacks of the goroutines
// that then grew them again: together about a sixth of a busy node's CPU
// (CPU profile of the benchmark's lifecycle phase). gcFloor raises GOGC
// while the live heap is small, so that the goal is at least floor, and
// leaves it at 100 once the live heap is floor/2 or more: a node pays at
// most floor of heap for it, and one that holds many instances collects
// as before. Measured in the benchmark's lifecycle phase on the 2-core
// machine: node CPU per lifecycle -13 %, lifecycles/s +6 %
// (docs/performance.md). The environment's GOGC, if set, wins: the floor is
// then off. As memRelease, only the binary does it.
type gcFloor struct {
	floor uint64 // heap goal the GC does not collect below
	every time.Duration
	// set is debug.SetGCPercent (a test's fake otherwise).
	set func(int) int
}

var defaultGCFloor = gcFloor{floor: 64 << 20, every: time.Second, set: debug.SetGCPercent}

// maxGCPercent bounds the floor's GOGC (a nearly empty heap).
const maxGCPercent = 3200

// percent is the GOGC that makes the goal, live x (1 + GOGC/100), at
// least floor: 100 or more.
func (g gcFloor) percent(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	if live*2 >= g.floor {
		return 100
	}
	p := (g.floor - live) * 100 / live
	return int(min(p, maxGCPercent))
}

// run adjusts GOGC every g.every until ctx ends, and restores 100 then.
// It changes GOGC only when the new value differs by more than a tenth.
func (g gcFloor) run(ctx context.Context, log *slog.Logger) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(g.every)
	defer t.Stop()
	cur := 100
	defer func() {
		if cur != 100 {
			g.set(100)
		}
	}()
	for {
		metrics.Read(s)
		if s[0].Value.Kind() == metrics.KindUint64 {
			if p := g.percent(s[0].Value.Uint64()); p*10 > cur*11 || p*11 < cur*10 {
				g.set(p)
				log.Debug("GC goal floor: GOGC set", "gogc", p, "live_heap_bytes", s[0].Value.Uint64(), "floor_bytes", g.floor)
				cur = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
