package scheduler_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

var (
	heldCount   = flag.Int("held", 2000, "BenchmarkHeldInstance: instances the node holds")
	heldProfile = flag.String("held-profile", "", "BenchmarkHeldInstance: write the heap profile (every allocation sampled) of each case to this `prefix`-CASE.pprof")
)

// BenchmarkHeldInstance measures what one node keeps in memory per
// instance it holds while the orchestration waits for an external event
// (the demo's Approval: a custom status, then an event or a one-hour
// durable timer): "waiting" once the run is unloaded and never parks
// (ParkAfter -1: the state of a run waiting for more than a second and
// less than ParkAfter), "parked" once the run parked. It reports, per instance, the node's live heap
// (allocations whose stack has no frame of the embedded etcd server, after
// a GC; every allocation is sampled), its goroutine stacks
// (StackInuse) and their sum, B/held, the figure the target "<= 8 KiB" of
// issue 14 is about; heap+etcd-B/held is the process's whole HeapAlloc
// delta, the embedded etcd's share included. Run it once:
//
//	go test -run '^$' -bench HeldInstance -benchtime 1x ./scheduler/
//
// -held N sets the count; -held-profile P writes P-CASE.pprof.
func BenchmarkHeldInstance(b *testing.B) {
	for _, bc := range []struct {
		name      string
		parkAfter time.Duration
	}{{"waiting", -1}, {"parked", 100 * time.Millisecond}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				measureHeld(b, bc.name, bc.parkAfter, *heldCount)
			}
		})
	}
}

// approvalRegistry has the demo's Approval.
func approvalRegistry() *orchestrator.Registry {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Approval", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		_ = ctx.SetCustomStatus("waiting for event 'approve'")
		var by any
		err := ctx.WaitForExternalEvent("approve", time.Hour).Await(&by)
		if errors.Is(err, orchestrator.ErrEventTimeout) {
			return map[string]any{"approved": false}, nil
		}
		if err != nil {
			return nil, err
		}
		return map[string]any{"approved": true, "by": by}, nil
	})
	return reg
}

// heldReading is the process's memory at one moment, after a GC.
type heldReading struct {
	heap       int64 // HeapAlloc
	nodeHeap   int64 // live bytes allocated outside the embedded etcd server
	stack      int64 // StackInuse
	goroutines int
}

func readHeld() heldReading {
	runtime.GC()
	runtime.GC() // the profile's in-use figures are as of the last completed cycle
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := heldReading{heap: int64(ms.HeapAlloc), stack: int64(ms.StackInuse), goroutines: runtime.NumGoroutine()}
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	for i := range recs {
		if !etcdServerStack(recs[i].Stack()) {
			r.nodeHeap += recs[i].InUseBytes()
		}
	}
	return r
}

// etcdServerStack reports whether an allocation was made by the embedded
// etcd server (its own packages, raft, bbolt, or gRPC's server side).
func etcdServerStack(pcs []uintptr) bool {
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		for _, p := range []string{"go.etcd.io/etcd/server/", "go.etcd.io/raft/", "go.etcd.io/bbolt", "go.etcd.io/etcd/pkg/",
			"google.golang.org/grpc.(*Server)", "google.golang.org/grpc/internal/transport.(*http2Server)", "google.golang.org/grpc/internal/transport.NewServerTransport"} {
			if strings.HasPrefix(f.Function, p) {
				return true
			}
		}
		if !more {
			return false
		}
	}
}

func measureHeld(b *testing.B, name string, parkAfter time.Duration, count int) {
	b.StopTimer()
	defer b.StartTimer()
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()

	e := leasetest.Start(b)
	preg := prometheus.NewRegistry()
	node, err := scheduler.New(scheduler.Config{
		Etcd: e.Client(), Prefix: "/held/", NodeID: "n1", LeaseTTL: 10 * time.Second,
		Registry: approvalRegistry(), Registerer: preg, ParkAfter: parkAfter,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := node.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_ = node.Drain(dctx)
	}()
	gauge := func(metric string) float64 {
		tn := &testNode{reg: preg}
		return tn.counter(metric)
	}
	time.Sleep(500 * time.Millisecond) // the node's start-up work settles
	before := readHeld()

	var wg sync.WaitGroup
	ids := make(chan string)
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for id := range ids {
				if _, err := node.StartInstance(ctx, "Approval", orchestrator.StartOptions{InstanceID: id, Input: []byte(`{"timeoutSeconds":3600}`)}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range count {
		ids <- fmt.Sprintf("held-%d", i)
	}
	close(ids)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	// Every instance held, past its first step (custom status), and
	// unloaded (waiting) or parked; then goroutines steady.
	deadline := time.Now().Add(2*time.Minute + parkAfter)
	last := -1
	for {
		held := len(node.Held())
		running := gauge("soloist_instances_held")
		parked := gauge("soloist_instances_parked")
		unloaded := gauge("soloist_instances_unloaded")
		g := runtime.NumGoroutine()
		want := parked
		if parkAfter < 0 {
			want = unloaded
		}
		ok := held == count && running == float64(count) && want == float64(count) && g == last
		if ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("held %d, gauge %v, parked %v, unloaded %v, goroutines %d of %d after %s", held, running, parked, unloaded, g, count, 2*time.Minute)
		}
		last = g
		time.Sleep(500 * time.Millisecond)
	}
	after := readHeld()
	if *heldProfile != "" {
		f, err := os.Create(*heldProfile + "-" + name + ".pprof")
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
	n := float64(count)
	heap := float64(after.nodeHeap-before.nodeHeap) / n
	stack := float64(after.stack-before.stack) / n
	b.ReportMetric(heap, "heap-B/held")
	b.ReportMetric(stack, "stack-B/held")
	b.ReportMetric(heap+stack, "B/held")
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap+etcd-B/held")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/held")
}
