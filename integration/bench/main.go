package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// phases maps a phase name to what it runs.
var phases = map[string]func(context.Context, *bench, *results) error{
	"etcd":      phaseEtcd,
	"starts":    phaseStarts,
	"lifecycle": phaseLifecycle,
	"reqs":      phaseReqs,
	"grpc":      phaseGRPC,
	"takeover":  phaseTakeover,
	"mass":      phaseMass,
	"handoff":   phaseHandoff,
	"idle":      phaseIdle,
	"api":       phaseAPI,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit: 0 if every phase ran, 1 if one failed, 2
// for a bad command line, 130 if interrupted.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errReported) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The first signal stops the run (the phases end, every process is
	// killed, the directory removed); a second one kills at once. A
	// signal during the build is handled once the build is done.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	b, err := newBench(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer b.close()
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		b.logf("interrupted: stopping")
		cancel()
		if _, ok := <-sigs; ok {
			b.killAll()
			os.Exit(130)
		}
	}()

	mode := "full"
	if cfg.short {
		mode = "short"
	}
	b.logf("mode %s: %d nodes, C=%d, phases %v, %d CPUs, %s", mode, cfg.nodes, cfg.c, cfg.phases, numCPU(), runtime.Version())
	r := newResults()
	for _, name := range cfg.phases {
		t0 := time.Now()
		b.logf("phase %s", name)
		err := phases[name](ctx, b, r)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "bench: interrupted")
			return 130
		}
		switch {
		case errors.Is(err, errTooFewNodes):
			r.note(name, "skipped", err.Error())
		case err != nil:
			b.logf("phase %s failed: %v", name, err)
			r.fail(name, err)
		}
		b.logf("phase %s took %s", name, time.Since(t0).Round(100*time.Millisecond))
	}
	r.ratio("starts", "start_ratio", "starts_per_s")
	r.ratio("lifecycle", "lifecycle_ratio", "lifecycle_per_s")
	r.ratio("api", "start_api_ratio", "starts_api_per_s")
	r.ratioTo("grpc", "grpc_vs_native", "grpc_lifecycle_per_s", "lifecycle_per_s")
	r.add("run", "mode", mode, "")
	r.addNum("run", "nodes", float64(cfg.nodes), f0, "")
	r.addNum("run", "c", float64(cfg.c), f0, "")
	r.addNum("run", "run_s", time.Since(b.started).Seconds(), f0, "whole run, builds included")

	fmt.Fprintln(stdout)
	r.print(stdout)
	if len(r.failed) > 0 {
		fmt.Fprintf(stderr, "bench: phases failed: %v\n", r.failed)
		return 1
	}
	return 0
}
