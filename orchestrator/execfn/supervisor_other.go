//go:build !linux

package execfn

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// Outside Linux there is no exec supervisor (no child subreaper, no
// /proc): Options.Supervisor is ignored and programs run directly, in
// their own process group, as before. A node killed with SIGKILL leaves
// them running.

const supervisorSupported = false

func supervisedCommand(context.Context, []string, []string) (*exec.Cmd, func() (error, error)) {
	panic("execfn: no exec supervisor on this system")
}

// SupervisorMain is the exec supervisor of Linux. On this system it only
// reports that there is none, and returns 2.
func SupervisorMain([]string) int {
	fmt.Fprintln(os.Stderr, "soloist exec supervisor: only on Linux")
	return 2
}
