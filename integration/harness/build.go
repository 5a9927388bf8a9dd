package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Binaries are the programs a scenario runs, built once per test binary.
type Binaries struct {
	// Etcd is etcd built from go.etcd.io/etcd/server/v3 (a tool of go.mod).
	Etcd string
	// Soloist is ./cmd/soloist.
	Soloist string
	// Effect is ./integration/cmd/soloist-effect, the exec function whose
	// every side effect goes to the scenario's sink.
	Effect string
}

// Build compiles the binaries into dir. With race, soloist is built with
// the race detector (slower; the harness then runs it with GORACE exit
// codes so a data race in a node fails the scenario).
func Build(dir string, race bool) (*Binaries, error) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			return nil, fmt.Errorf("harness: no go command to build the binaries with: %w", err)
		}
	}
	b := &Binaries{
		Etcd:    filepath.Join(dir, "etcd"),
		Soloist: filepath.Join(dir, "soloist"),
		Effect:  filepath.Join(dir, "soloist-effect"),
	}
	soloistArgs := []string{"build", "-o", b.Soloist}
	if race {
		soloistArgs = append(soloistArgs, "-race")
	}
	jobs := [][]string{
		{"build", "-o", b.Etcd, "go.etcd.io/etcd/server/v3"},
		append(soloistArgs, "github.com/soloist-dev/soloist/cmd/soloist"),
		{"build", "-o", b.Effect, "github.com/soloist-dev/soloist/integration/cmd/soloist-effect"},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, args := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(gobin, args...)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("harness: go %v: %v\n%s", args, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}
