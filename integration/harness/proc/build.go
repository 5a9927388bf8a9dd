package proc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Target is one binary to build: the package to build and where to put it.
type Target struct {
	Pkg  string // import path, e.g. github.com/soloist-dev/soloist/cmd/soloist
	Out  string // output file
	Race bool   // build with the race detector
}

// Build compiles the targets in parallel with the go command that runs
// this program (or the one on PATH), and returns the first failure with
// the compiler's output.
func Build(targets ...Target) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			return fmt.Errorf("proc: no go command to build the binaries with: %w", err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i, t := range targets {
		args := []string{"build", "-o", t.Out}
		if t.Race {
			args = append(args, "-race")
		}
		args = append(args, t.Pkg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := exec.Command(gobin, args...).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("proc: go %v: %v\n%s", args, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Etcd is the etcd server package, a tool of go.mod.
const Etcd = "go.etcd.io/etcd/server/v3"

// Soloist is the soloist command.
const Soloist = "github.com/soloist-dev/soloist/cmd/soloist"
