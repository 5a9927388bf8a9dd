package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// lifecycleRun is the outcome of HelloCities lifecycles driven by workers
// that each start one instance and wait until the watch sees it terminal.
type lifecycleRun struct {
	win         window
	started     int             // answered 202
	completed   int             // seen Completed (before the grace deadline)
	failed      int             // seen terminal but not Completed
	inWindow    int             // seen Completed inside the window
	lat         []time.Duration // start sent to Completed seen, for inWindow
	startErrors int
	example     string
}

// startFunc starts one HelloCities instance with the ID on node index
// node (taken modulo the number of nodes); an error is a start refused or
// failed.
type startFunc func(ctx context.Context, node int, id string) error

// httpStarts starts through the nodes' HTTP APIs (urls), answered 202.
func httpStarts(s *starter, urls []string) startFunc {
	return func(ctx context.Context, node int, id string) error {
		code, snippet, err := s.start(ctx, urls[node%len(urls)], "HelloCities", id, nil)
		if err != nil || code != http.StatusAccepted {
			return fmt.Errorf("%d %s %v", code, snippet, err)
		}
		return nil
	}
}

// runLifecycles runs workers lifecycles at once, each worker starting its
// next instance when the previous one is terminal, on the nodes in turn,
// until the window [begin+warmup, begin+warmup+d) ends; then it waits up
// to grace for the instances still running.
func runLifecycles(ctx context.Context, sw *statusWatch, start startFunc, workers int, warmup, d, grace time.Duration, idPrefix string) lifecycleRun {
	begin := time.Now()
	win := window{from: begin.Add(warmup), to: begin.Add(warmup + d)}
	gctx, cancel := context.WithDeadline(ctx, win.to.Add(grace))
	defer cancel()
	parts := make([]lifecycleRun, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			for i := 0; time.Now().Before(win.to) && ctx.Err() == nil; i++ {
				id := fmt.Sprintf("%s-%d-%d", idPrefix, w, i)
				done := sw.expect(id)
				t0 := time.Now()
				if err := start(ctx, w+i, id); err != nil {
					sw.forget(id)
					p.startErrors++
					p.example = err.Error()
					time.Sleep(10 * time.Millisecond)
					continue
				}
				p.started++
				select {
				case <-done:
				case <-gctx.Done():
					return
				}
				f, ok := sw.final(id)
				switch {
				case !ok: // the watch failed
					return
				case f.status != "Completed":
					p.failed++
				default:
					p.completed++
					if win.contains(f.at) {
						p.inWindow++
						p.lat = append(p.lat, f.at.Sub(t0))
					}
				}
			}
		}()
	}
	wg.Wait()
	out := lifecycleRun{win: win}
	for _, p := range parts {
		out.started += p.started
		out.completed += p.completed
		out.failed += p.failed
		out.inWindow += p.inWindow
		out.lat = append(out.lat, p.lat...)
		out.startErrors += p.startErrors
		if p.example != "" {
			out.example = p.example
		}
	}
	return out
}

// phaseLifecycle measures sustained HelloCities lifecycles, start to
// Completed as seen in etcd.
func phaseLifecycle(ctx context.Context, b *bench, r *results) error {
	cfg := b.cfg
	c, err := b.startCluster(ctx, "lifecycle", cfg.nodes, nodeOpts{ttl: cfg.leaseTTL})
	if err != nil {
		return err
	}
	defer c.close()
	sw, err := watchStatuses(ctx, c.cli)
	if err != nil {
		return err
	}
	b.logf("lifecycle: %d HelloCities lifecycles in flight over %d nodes, %s warm-up + %s, grace %s",
		cfg.lifecycleInflight, len(c.nodes), cfg.warmup, cfg.lifecycleDuration, cfg.lifecycleGrace)
	wait := b.profile(ctx, "lifecycle", c, c.nodes, cfg.warmup+cfg.lifecycleDuration)
	cpu := c.cpuWindow(cfg.warmup, cfg.lifecycleDuration)
	s := newStarter(cfg.lifecycleInflight)
	defer s.close()
	l := runLifecycles(ctx, sw, httpStarts(s, c.urls(c.nodes)), cfg.lifecycleInflight, cfg.warmup, cfg.lifecycleDuration, cfg.lifecycleGrace, "lc")
	wait()
	unparsed, werr := sw.stop()
	if err := ctx.Err(); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	r.addNum("lifecycle", "lifecycle_per_s", float64(l.inWindow)/l.win.seconds(), f0,
		fmt.Sprintf("Completed records seen by a watch on %s per second; %d lifecycles kept in flight (start, then wait for Completed) over %d nodes, %s window",
			instancesPrefix, cfg.lifecycleInflight, len(c.nodes), cfg.lifecycleDuration))
	r.addNum("lifecycle", "lifecycle_p50_ms", ms1(percentile(l.lat, 50)), f1, "start request sent to Completed seen")
	r.addNum("lifecycle", "lifecycle_p99_ms", ms1(percentile(l.lat, 99)), f1, "")
	r.addNum("lifecycle", "unfinished", float64(l.started-l.completed), f0,
		fmt.Sprintf("of %d started (202), not Completed %s after the window (%d of them Failed/Terminated)", l.started, cfg.lifecycleGrace, l.failed))
	cpu(r, "lifecycle")
	if landed, won, err := landedAndWon(ctx, c.nodes); err == nil && l.started > 0 {
		r.addNum("lifecycle", "lifecycle_landed_share", landed/float64(l.started), f2,
			fmt.Sprintf("soloist_starts_landed_total summed over the nodes / lifecycles started (warm-up and window): the starts taken in their own transaction by the node that received them; %.0f campaigns won besides (each one more transaction)", won))
	}
	if l.startErrors > 0 {
		r.addNum("lifecycle", "lifecycle_start_errors", float64(l.startErrors), f0, oneLine(l.example))
	}
	if unparsed > 0 {
		r.note("lifecycle", "unparsed records", fmt.Sprintf("%d watched values had no runtimeStatus", unparsed))
	}
	return nil
}

// landedAndWon sums, over nodes, the starts each took in their own
// transaction and the campaigns each won.
func landedAndWon(ctx context.Context, nodes []*node) (landed, won float64, err error) {
	for _, n := range nodes {
		m, err := n.metrics(ctx)
		if err != nil {
			return 0, 0, err
		}
		landed += m.sum("soloist_starts_landed_total", nil)
		won += m.sum("soloist_campaigns_total", map[string]string{"result": "won"})
	}
	return landed, won, nil
}
