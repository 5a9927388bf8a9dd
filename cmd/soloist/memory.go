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
// stays below its live heap, so it never pays for this (one full GC: 77 ms
// of one core with 10,000 parked instances). The library (package scheduler) never does it:
// a process that embeds it decides for itself.
type memRelease struct {
	checkEvery, releaseEvery time.Duration
	min                      uint64 // free heap bytes below which it is not worth a GC
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
	return h.free >= m.min && h.free > h.objects
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
