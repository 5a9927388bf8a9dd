package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/soloist-dev/soloist/integration/harness/proc"
)

// nodeOpts are the flags that differ between phases.
type nodeOpts struct {
	ttl time.Duration
	// role is --role; empty leaves the flag out (the product's default).
	role string
	// shutdownTimeout is --shutdown-timeout; 0 leaves the product's default.
	shutdownTimeout time.Duration
	// parkAfter is --park-after; empty leaves the product's default.
	parkAfter string
	// grpc serves the Durable Task sidecar protocol (--grpc-listen on a
	// port of its own) and leaves --demo out: the node runs no
	// orchestration natively, only what its connected workers serve.
	grpc bool
}

// node is one `soloist serve` process: with --demo, or with --grpc-listen
// (nodeOpts.grpc).
type node struct {
	id          string
	addr        string // host:port of its HTTP API
	metricsAddr string // host:port of its --metrics-listen (metrics and pprof)
	grpcAddr    string // host:port of its --grpc-listen, "" when off
	opts        nodeOpts
	p           *proc.Process
}

func (c *cluster) newNode(i int, opts nodeOpts) (*node, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	mport, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	n := &node{id: fmt.Sprintf("n%d", i), addr: fmt.Sprintf("127.0.0.1:%d", port),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", mport), opts: opts}
	args := []string{"serve",
		"--etcd-endpoints", c.etcdEndpoint(),
		"--etcd-prefix", prefix,
		"--lease-ttl", opts.ttl.String(),
		"--listen", n.addr,
		"--node-id", n.id,
		"--log-format", "json",
	}
	if opts.grpc {
		gport, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		n.grpcAddr = fmt.Sprintf("127.0.0.1:%d", gport)
		args = append(args, "--grpc-listen", n.grpcAddr)
	} else {
		args = append(args, "--demo")
	}
	if opts.role != "" {
		args = append(args, "--role", opts.role)
	}
	if opts.parkAfter != "" {
		args = append(args, "--park-after", opts.parkAfter)
	}
	if opts.shutdownTimeout > 0 {
		args = append(args, "--shutdown-timeout", opts.shutdownTimeout.String())
	}
	args = append(args, c.b.cfg.nodeArgs...)
	args = append(args, pprofArgs(n)...)
	n.p = &proc.Process{
		Name:    n.id,
		Bin:     c.b.soloist,
		Args:    args,
		Env:     proc.CleanEnv(c.b.cfg.nodeEnv...),
		LogPath: filepath.Join(c.dir, n.id+".log"),
		Clock:   c.b.clock,
	}
	c.b.track(n.p)
	return n, nil
}

func (n *node) url() string { return "http://" + n.addr }

func (n *node) start() error { return n.p.Start() }

// waitReady polls /readyz until 200: the node has its etcd session (a
// node of role api keeps one too: it takes starts only while it has).
func (n *node) waitReady(ctx context.Context, timeout time.Duration) error {
	path := "/readyz"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	last := "no answer"
	for {
		if !n.p.Running() {
			return fmt.Errorf("%s exited while starting: %v\n%s", n.id, n.p.ExitErr(), n.p.Tail(20))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.url()+path, nil)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %s\n%s", n.id, timeout, last, n.p.Tail(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL and waits for the exit.
func (n *node) kill() error { return n.p.Kill() }

// sigterm sends SIGTERM; the node drains and exits by itself.
func (n *node) sigterm() error { return n.p.Signal(syscall.SIGTERM) }

// metrics scrapes the node's /metrics.
func (n *node) metrics(ctx context.Context) (samples, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return scrape(ctx, n.url()+"/metrics")
}

// rss is the resident memory of the node process in bytes, from VmRSS in
// /proc/PID/status.
func (n *node) rss() (int64, error) {
	pid := n.p.Pid()
	if pid == 0 {
		return 0, fmt.Errorf("%s is not running", n.id)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fields := strings.Fields(line) // VmRSS: 12345 kB
		if len(fields) != 3 || fields[2] != "kB" {
			return 0, fmt.Errorf("unexpected %q in /proc/%d/status", line, pid)
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
