package execfn_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/soloist-dev/soloist/orchestrator/execfn"
)

// TestMain also makes the test binary the exec supervisor of the tests
// ("__exec-supervisor", as soloist serve re-executes itself) and the
// stand-in node that the tests kill with SIGKILL ("__execfn-test-node").
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "__exec-supervisor":
			os.Exit(execfn.SupervisorMain(os.Args[2:]))
		case "__execfn-test-node":
			os.Exit(testNode(os.Args[2:]))
		}
	}
	goleak.VerifyTestMain(m)
}

// testNode runs "/bin/sh -c SCRIPT" as an exec function, with the
// supervisor if the first argument is "supervised". The test kills it
// while the program runs.
func testNode(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: __execfn-test-node supervised|direct SCRIPT")
		return 2
	}
	var opts execfn.Options
	if args[0] == "supervised" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		opts.Supervisor = []string{exe, "__exec-supervisor"}
	}
	_, err := execfn.Run(context.Background(), []string{"/bin/sh", "-c", args[1]}, execfn.Invocation{InstanceID: "node-test"}, opts)
	fmt.Fprintf(os.Stderr, "the program ended before the node was killed: %v\n", err)
	return 1
}
