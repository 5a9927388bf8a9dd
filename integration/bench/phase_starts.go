package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// phaseStarts measures HTTP singleton starts on a busy cluster: the nodes
// run what is started while the load goes on.
func phaseStarts(ctx context.Context, b *bench, r *results) error {
	c, err := b.startCluster(ctx, "starts", b.cfg.nodes, nodeOpts{ttl: b.cfg.leaseTTL})
	if err != nil {
		return err
	}
	defer c.close()
	cpu := c.cpuWindow(b.cfg.warmup, b.cfg.startsDuration)
	l := b.startLoad(ctx, c, "starts")
	if err := ctx.Err(); err != nil {
		return err
	}
	rps := float64(l.ok) / l.win.seconds()
	r.addNum("starts", "starts_per_s", rps, f0, fmt.Sprintf("202s per second; POST /api/orchestrators/HelloCities/{id}, empty body, C=%d over %d nodes (%s), %s window; the nodes run them meanwhile",
		b.cfg.c, len(c.nodes), perNode(c, l), b.cfg.startsDuration))
	r.addNum("starts", "start_p50_ms", ms1(percentile(l.lat, 50)), f1, "request sent to 202 received")
	r.addNum("starts", "start_p99_ms", ms1(percentile(l.lat, 99)), f1, "")
	r.addNum("starts", "start_errors", float64(l.failures()), f0, failNote(l))
	cpu(r, "starts")
	return nil
}

// phaseAPI measures the same starts against nodes of --role api (no
// runners), or records n/a if soloist has no --role yet.
func phaseAPI(ctx context.Context, b *bench, r *results) error {
	na := func(why string) {
		for _, k := range []string{"starts_api_per_s", "start_api_p99_ms", "start_api_ratio"} {
			r.add("api", k, "n/a", why)
		}
	}
	if !b.supportsRole(ctx) {
		na("soloist serve has no --role flag yet (checked its -h output)")
		return nil
	}
	c, err := b.newCluster("api", b.cfg.nodes, nodeOpts{ttl: b.cfg.leaseTTL, role: "api"})
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.start(ctx); err != nil {
		na("--role api nodes did not start: " + oneLine(err.Error()))
		return nil
	}
	s := newStarter(1)
	code, snippet, err := s.start(ctx, c.nodes[0].url(), "HelloCities", "api-trial", nil)
	s.close()
	if err != nil || code != http.StatusAccepted {
		na(fmt.Sprintf("trial start on a --role api node failed: %d %s %v", code, snippet, err))
		return nil
	}
	cpu := c.cpuWindow(b.cfg.warmup, b.cfg.startsDuration)
	l := b.startLoad(ctx, c, "api")
	if err := ctx.Err(); err != nil {
		return err
	}
	r.addNum("api", "starts_api_per_s", float64(l.ok)/l.win.seconds(), f0, fmt.Sprintf("as starts_per_s, against %d nodes of --role api (%s), no runner nodes", len(c.nodes), perNode(c, l)))
	r.addNum("api", "start_api_p50_ms", ms1(percentile(l.lat, 50)), f1, "")
	r.addNum("api", "start_api_p99_ms", ms1(percentile(l.lat, 99)), f1, "")
	r.addNum("api", "start_api_errors", float64(l.failures()), f0, failNote(l))
	cpu(r, "api")
	return nil
}

// startLoad runs the closed-loop start load of the starts and api phases.
func (b *bench) startLoad(ctx context.Context, c *cluster, phase string) startLoad {
	b.logf("%s: %d starts in flight over %d nodes, %s warm-up + %s", phase, b.cfg.c, len(c.nodes), b.cfg.warmup, b.cfg.startsDuration)
	s := newStarter(b.cfg.c)
	defer s.close()
	wait := b.profile(ctx, phase, c, c.nodes, b.cfg.warmup+b.cfg.startsDuration)
	defer wait()
	return runStartLoad(ctx, s, c.urls(c.nodes), b.cfg.c, b.cfg.warmup, b.cfg.startsDuration, phase)
}

// perNode is "n1 1234, n2 1200, ...": 202s by node.
func perNode(c *cluster, l startLoad) string {
	var parts []string
	for _, n := range c.nodes {
		parts = append(parts, fmt.Sprintf("%s %d", n.id, l.perNode[n.url()]))
	}
	return strings.Join(parts, ", ")
}

func failNote(l startLoad) string {
	if len(l.failed) == 0 {
		return "answers other than 202"
	}
	var parts []string
	for k, v := range l.failed {
		parts = append(parts, fmt.Sprintf("%s x%d", k, v))
	}
	slices.Sort(parts)
	return oneLine(strings.Join(parts, ", ") + "; e.g. " + l.example)
}
