package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/integration/harness/proc"
)

// prefix is the --etcd-prefix of every node. Every phase has an etcd of
// its own, so the phases share the prefix but no state.
const prefix = "/soloist/"

// cluster is one phase's deployment: a fresh single-member etcd (its own
// data directory, fsync on) and soloist nodes, created but not started.
type cluster struct {
	b     *bench
	name  string
	dir   string
	etcd  *proc.Cluster
	cli   *clientv3.Client // the benchmark's own client, straight to etcd
	nodes []*node
}

// startCluster is newCluster, then its nodes started; the caller closes it
// (it closes itself if the nodes do not start).
func (b *bench) startCluster(ctx context.Context, name string, n int, opts nodeOpts) (*cluster, error) {
	c, err := b.newCluster(name, n, opts)
	if err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// newCluster starts etcd for a phase and prepares n nodes with opts.
func (b *bench) newCluster(name string, n int, opts nodeOpts) (*cluster, error) {
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var etcdArgs []string
	if b.cfg.pprofDir != "" {
		etcdArgs = append(etcdArgs, "--enable-pprof")
	}
	etcd, err := proc.StartCluster(dir, b.etcdBin, b.clock, 1, etcdArgs...)
	if etcd != nil {
		for _, m := range etcd.Members {
			b.track(m.Proc)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: start etcd: %w", name, err)
	}
	c := &cluster{b: b, name: name, dir: dir, etcd: etcd, cli: etcd.Client()}
	for i := 1; i <= n; i++ {
		nd, err := c.newNode(i, opts)
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, nd)
	}
	return c, nil
}

// etcdMetricsURL is where etcd serves its Prometheus metrics (its client URL).
func (c *cluster) etcdMetricsURL() string { return c.etcd.Members[0].ClientURL + "/metrics" }

// etcdEndpoint is etcd's client URL.
func (c *cluster) etcdEndpoint() string { return c.etcd.Members[0].ClientURL }

// urls are the nodes' HTTP API base URLs.
func (c *cluster) urls(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.url()
	}
	return out
}

// node returns the node with the given ID.
func (c *cluster) node(id string) (*node, bool) {
	for _, n := range c.nodes {
		if n.id == id {
			return n, true
		}
	}
	return nil, false
}

// start starts the nodes (all of the cluster's if none are given) and
// waits until each is ready.
func (c *cluster) start(ctx context.Context, nodes ...*node) error {
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	for _, n := range nodes {
		if err := n.start(); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.waitReady(ctx, 30*time.Second)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// close stops every process of the cluster and removes its directory
// unless -keep.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.p.Close(); err != nil {
				c.b.logf("%s: %v", c.name, err)
			}
		}()
	}
	wg.Wait()
	c.etcd.Close()
	if !c.b.cfg.keep {
		if err := os.RemoveAll(c.dir); err != nil {
			c.b.logf("remove %s: %v", c.dir, err)
		}
	}
}
