package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/soloist-dev/soloist/integration/harness/proc"
)

// bench is one run: its directory, the binaries, the clock of the process
// logs and every process it started.
type bench struct {
	cfg     *config
	dir     string
	etcdBin string
	soloist string
	clock   *proc.Clock
	out     io.Writer // progress lines
	started time.Time

	mu    sync.Mutex
	procs []*proc.Process
}

// newBench makes the run's directory and builds etcd and soloist into it.
func newBench(cfg *config, out io.Writer) (*bench, error) {
	dir, err := os.MkdirTemp("", "soloist-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{
		cfg: cfg, dir: dir, clock: proc.NewClock(), out: out, started: time.Now(),
		etcdBin: filepath.Join(dir, "bin", "etcd"),
		soloist: filepath.Join(dir, "bin", "soloist"),
	}
	t0 := time.Now()
	if err := proc.Build(
		proc.Target{Pkg: proc.Etcd, Out: b.etcdBin},
		proc.Target{Pkg: proc.Soloist, Out: b.soloist},
	); err != nil {
		b.close()
		return nil, err
	}
	b.logf("built etcd and soloist in %s (run directory %s)", time.Since(t0).Round(100*time.Millisecond), dir)
	return b, nil
}

// logf prints a progress line, stamped with the time since the run began.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "[%6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

// track registers a process so that close kills it whatever happens.
func (b *bench) track(p *proc.Process) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.procs = append(b.procs, p)
}

// killAll kills every process the run started that still runs.
func (b *bench) killAll() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Close(); err != nil {
				b.logf("%v", err)
			}
		}()
	}
	wg.Wait()
}

// close kills every process and removes the run's directory unless -keep.
func (b *bench) close() {
	b.killAll()
	if b.cfg.keep {
		b.logf("kept %s (logs: */*.log)", b.dir)
		return
	}
	if err := os.RemoveAll(b.dir); err != nil {
		b.logf("remove %s: %v", b.dir, err)
	}
}

// rolePattern finds a --role flag in the help of soloist serve.
var rolePattern = regexp.MustCompile(`(?m)(^|\s)--?role[\s=]`)

// supportsRole reports whether this soloist has `serve --role`, from the
// help it prints (on stdout or stderr; the exit code of -h varies).
func (b *bench) supportsRole(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, b.soloist, "serve", "-h").CombinedOutput()
	return rolePattern.Match(out)
}
