package harness

import (
	"path/filepath"

	"github.com/soloist-dev/soloist/integration/harness/proc"
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
	b := &Binaries{
		Etcd:    filepath.Join(dir, "etcd"),
		Soloist: filepath.Join(dir, "soloist"),
		Effect:  filepath.Join(dir, "soloist-effect"),
	}
	err := proc.Build(
		proc.Target{Pkg: proc.Etcd, Out: b.Etcd},
		proc.Target{Pkg: proc.Soloist, Out: b.Soloist, Race: race},
		proc.Target{Pkg: "github.com/soloist-dev/soloist/integration/cmd/soloist-effect", Out: b.Effect},
	)
	if err != nil {
		return nil, err
	}
	return b, nil
}
