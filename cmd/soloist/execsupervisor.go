package main

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator/execfn"
)

// execSupervisorCommand is the hidden command that soloist serve runs each
// exec function's program under: "soloist __exec-supervisor -- PROG
// ARGS...", with the node's lifeline pipe on fd 3 (see
// execfn.SupervisorMain). main dispatches it before anything else, so it
// never shows in the help, parses no flags and reads no configuration.
const execSupervisorCommand = "__exec-supervisor"

// runExecSupervisor runs the hidden command; args follow its name.
func runExecSupervisor(args []string) int { return execfn.SupervisorMain(args) }

// execSupervisor is the execfn.Options.Supervisor of every exec function:
// this binary with the hidden command, resolved once. Without it (the
// binary's path cannot be found, or this is a test binary, whose main
// would not dispatch the hidden command) programs run directly, and a node
// killed with SIGKILL leaves their children behind; that is logged once.
var execSupervisor = sync.OnceValue(func() []string {
	if testing.Testing() {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		slog.Warn("exec functions run without their supervisor: a node killed with SIGKILL leaves their children running",
			"error", err)
		return nil
	}
	return []string{exe, execSupervisorCommand}
})
