package integration

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/soloist-dev/soloist/integration/harness"
)

var soakFlag = flag.Bool("soak", false, "run the long soak version of every fault scenario (also SOLOIST_SOAK=1)")

var (
	bins      *harness.Binaries
	buildErr  error
	raceNodes bool
)

// TestMain builds etcd, soloist and the effect helper once, runs the
// scenarios, and prints the figures table.
func TestMain(m *testing.M) {
	flag.Parse()
	var dir string
	if !testing.Short() {
		var err error
		dir, err = os.MkdirTemp("", "soloist-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		raceNodes = os.Getenv("SOLOIST_INTEGRATION_RACE") == "1"
		start := time.Now()
		bins, buildErr = harness.Build(dir, raceNodes)
		if buildErr == nil {
			fmt.Printf("built etcd, soloist (race=%v) and soloist-effect in %s\n", raceNodes, time.Since(start).Round(100*time.Millisecond))
		}
	}
	code := m.Run()
	if t := harness.Table(); t != "" {
		fmt.Printf("\nFault suite figures (soak=%v):\n\n%s\n", soak(), t)
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func soak() bool { return *soakFlag || os.Getenv("SOLOIST_SOAK") == "1" }

// short returns a for the default (CI) run and b for the soak.
func short[T any](a, b T) T {
	if soak() {
		return b
	}
	return a
}

func binaries(t *testing.T) *harness.Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault suite runs real etcd clusters and soloist processes; skipped with -short")
	}
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return bins
}
