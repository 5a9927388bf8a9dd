package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// pprofArgs are the soloist serve arguments that turn on a node's pprof
// endpoint: --pprof serves /debug/pprof/ on the --metrics-listen
// listener only (docs/contract.md section 8), never on the API port.
func pprofArgs(n *node) []string {
	return []string{"--metrics-listen", n.metricsAddr, "--pprof"}
}

// pprofBase is the base URL of a node's /debug/pprof/.
func pprofBase(n *node) string { return "http://" + n.metricsAddr }

// servesPprof reports whether the node answers GET /debug/pprof/ with 200.
func servesPprof(ctx context.Context, n *node) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pprofBase(n)+"/debug/pprof/", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// forceGC makes the node collect garbage (GET /debug/pprof/heap?gc=1) and
// reports whether it could.
func forceGC(ctx context.Context, n *node) bool {
	if !servesPprof(ctx, n) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pprofBase(n)+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// profile captures a CPU profile of d from each of nodes that serves
// pprof, into -pprof DIR as PHASE-NODE.pprof, and one of c's etcd (started
// with --enable-pprof under -pprof) as PHASE-etcd.pprof, and returns a
// function that waits for the captures. Without -pprof it does nothing.
func (b *bench) profile(ctx context.Context, phase string, c *cluster, nodes []*node, d time.Duration) (wait func()) {
	if b.cfg.pprofDir == "" {
		return func() {}
	}
	if err := os.MkdirAll(b.cfg.pprofDir, 0o755); err != nil {
		b.logf("pprof: %v", err)
		return func() {}
	}
	secs := int(math.Ceil(d.Seconds()))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		path := filepath.Join(b.cfg.pprofDir, phase+"-etcd.pprof")
		if err := fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", c.etcdEndpoint(), secs), path); err != nil {
			b.logf("pprof etcd: %v", err)
		}
	}()
	for _, n := range nodes {
		if !servesPprof(ctx, n) {
			b.logf("pprof: %s serves no /debug/pprof/; no profile of it", n.id)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(b.cfg.pprofDir, fmt.Sprintf("%s-%s.pprof", phase, n.id))
			if err := fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofBase(n), secs), path); err != nil {
				b.logf("pprof %s: %v", n.id, err)
			}
		}()
	}
	return wg.Wait
}

// heapProfile saves the node's heap profile (in use and allocated since
// start) into -pprof DIR as PHASE-NODE.heap.pprof. Without -pprof it does
// nothing.
func (b *bench) heapProfile(ctx context.Context, phase string, n *node) {
	if b.cfg.pprofDir == "" || !servesPprof(ctx, n) {
		return
	}
	if err := os.MkdirAll(b.cfg.pprofDir, 0o755); err != nil {
		b.logf("pprof: %v", err)
		return
	}
	path := filepath.Join(b.cfg.pprofDir, fmt.Sprintf("%s-%s.heap.pprof", phase, n.id))
	if err := fetchTo(ctx, pprofBase(n)+"/debug/pprof/heap", path); err != nil {
		b.logf("pprof %s: %v", n.id, err)
	}
}

func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
