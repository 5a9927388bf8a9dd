package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/soloist-dev/soloist/scheduler/sidecar/sidecartest"
)

// phaseGRPC measures HelloCities lifecycles run by Durable Task workers
// over gRPC: nodes with --grpc-listen and no --demo (they run nothing
// natively), one worker of the project's own (sidecartest) connected to
// each node, starts sent with StartInstance to the nodes in turn, and
// Completed seen by the same etcd watch as the lifecycle phase. Then the
// etcd requests of K lifecycles on the idle cluster, as the reqs phase
// counts them. Any start that fails, lifecycle that does not complete or
// answer the node refuses fails the phase.
func phaseGRPC(ctx context.Context, b *bench, r *results) error {
	cfg := b.cfg
	c, err := b.startCluster(ctx, "grpc", cfg.nodes, nodeOpts{ttl: cfg.leaseTTL, grpc: true})
	if err != nil {
		return err
	}
	defer c.close()
	conns := make([]*grpc.ClientConn, len(c.nodes))
	for i, n := range c.nodes {
		if conns[i], err = grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	workers := make([]*sidecartest.Worker, len(c.nodes))
	for i := range c.nodes {
		if workers[i], err = sidecartest.Connect(ctx, conns[i], sidecartest.Options{}); err != nil {
			return fmt.Errorf("%s: %w", c.nodes[i].id, err)
		}
		defer workers[i].Close()
	}
	if err := waitWorkers(ctx, c, 15*time.Second); err != nil {
		return err
	}
	workerErr := func() error {
		var errs []error
		for i, w := range workers {
			if err := w.Err(); err != nil {
				errs = append(errs, fmt.Errorf("%s's worker: %w", c.nodes[i].id, err))
			}
		}
		return errors.Join(errs...)
	}
	sw, err := watchStatuses(ctx, c.cli)
	if err != nil {
		return err
	}
	defer sw.stop()
	start := func(ctx context.Context, node int, id string) error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return sidecartest.Start(sctx, conns[node%len(conns)], sidecartest.Orchestration, id, "")
	}

	b.logf("grpc: %d HelloCities lifecycles in flight over %d nodes, each with a gRPC worker, %s warm-up + %s, grace %s",
		cfg.lifecycleInflight, len(c.nodes), cfg.warmup, cfg.grpcDuration, cfg.lifecycleGrace)
	wait := b.profile(ctx, "grpc", c, c.nodes, cfg.warmup+cfg.grpcDuration)
	cpu := c.cpuWindow(cfg.warmup, cfg.grpcDuration)
	l := runLifecycles(ctx, sw, start, cfg.lifecycleInflight, cfg.warmup, cfg.grpcDuration, cfg.lifecycleGrace, "gl")
	wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	r.addNum("grpc", "grpc_lifecycle_per_s", float64(l.inWindow)/l.win.seconds(), f0,
		fmt.Sprintf("as lifecycle_per_s, run by gRPC workers (one per node, sidecartest) and started with StartInstance; %d in flight over %d nodes, %s window",
			cfg.lifecycleInflight, len(c.nodes), cfg.grpcDuration))
	r.addNum("grpc", "grpc_lifecycle_p50_ms", ms1(percentile(l.lat, 50)), f1, "StartInstance sent to Completed seen")
	r.addNum("grpc", "grpc_lifecycle_p99_ms", ms1(percentile(l.lat, 99)), f1, "")
	cpu(r, "grpc")
	switch {
	case l.startErrors > 0:
		return fmt.Errorf("%d starts failed, for example: %s", l.startErrors, oneLine(l.example))
	case l.started != l.completed:
		return fmt.Errorf("of %d started, %d not Completed %s after the window (%d Failed/Terminated)", l.started, l.started-l.completed, cfg.lifecycleGrace, l.failed)
	case l.inWindow == 0:
		return errors.New("no lifecycle completed in the window")
	}
	if err := workerErr(); err != nil {
		return err
	}

	// etcd requests per lifecycle, on the now idle cluster.
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	before, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	b.logf("grpc: %d lifecycles, %d at a time, counting etcd requests", cfg.reqsLifecycles, cfg.reqsConcurrency)
	lat, err := sequentialLifecycles(ctx, sw, start, "gq", cfg.reqsLifecycles, cfg.reqsConcurrency)
	if err != nil {
		return err
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	after, err := c.etcdReqs(ctx)
	if err != nil {
		return err
	}
	if err := workerErr(); err != nil {
		return err
	}
	k := float64(cfg.reqsLifecycles)
	delta := after.minus(before)
	native := "n/a (reqs phase not run)"
	if v, ok := r.nums["etcd_reqs_per_lifecycle"]; ok {
		native = f2(v)
	}
	r.addNum("grpc", "grpc_etcd_reqs_per_lifecycle", delta.total()/k, f2,
		fmt.Sprintf("as etcd_reqs_per_lifecycle (native: %s), over %d gRPC lifecycles; by method: %s", native, cfg.reqsLifecycles, delta.per(k)))
	r.addNum("grpc", "grpc_lifecycle_idle_p50_ms", ms1(percentile(lat, 50)), f1, fmt.Sprintf("one gRPC lifecycle on an idle cluster (%d at a time)", cfg.reqsConcurrency))
	return nil
}

// waitWorkers waits until every node counts its worker
// (soloist_sidecar_workers 1).
func waitWorkers(ctx context.Context, c *cluster, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range c.nodes {
		for {
			m, err := n.metrics(ctx)
			if err == nil && m.sum("soloist_sidecar_workers", nil) >= 1 {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s: its worker is not registered after %s (soloist_sidecar_workers; scrape error %v)", n.id, timeout, err)
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
	return nil
}
