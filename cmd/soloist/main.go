// Command soloist runs a Soloist node (soloist serve) and talks to one over
// HTTP (soloist start, status, list, wait, terminate, ...). Run "soloist help"
// for the commands and "soloist COMMAND -h" for the flags of each.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == execSupervisorCommand {
		os.Exit(runExecSupervisor(os.Args[2:]))
	}
	os.Exit(run(context.Background(), os.Args[1:], newEnv(os.Getenv), os.Stdout, os.Stderr))
}

// env is what a command reads of its environment; tests pass their own.
type env struct {
	getenv func(string) string
}

func newEnv(getenv func(string) string) env { return env{getenv: getenv} }

// Exit codes, documented in docs/operations.md ("The CLI") and in soloist --help.
const (
	exitOK          = 0
	exitFailed      = 1 // the command failed: the server refused, the instance failed, serve stopped on an error
	exitUsage       = 2 // the command line is wrong
	exitUnreachable = 3 // the server (client verbs) or etcd (serve) could not be reached
	exitTimeout     = 4 // wait --timeout ran out
)

const exitCodesHelp = `Exit codes:
  0  done (wait: the instance Completed)
  1  failed: the server refused (no such instance, already exists, ...), the
     instance Failed or was Terminated (wait), or serve stopped on an error
  2  usage: unknown command or flag, bad value of a flag or SOLOIST_ variable
  3  unreachable: no answer from the server (client verbs), or no connection
     to etcd within --etcd-dial-timeout (serve)
  4  timeout: wait --timeout ran out before the instance finished
`

// usageError is a mistake on the command line: exit code 2.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// exitError carries an exit code, and a message unless it was already
// reported.
type exitError struct {
	code int
	err  error // nil if already reported
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// run is main without os.Exit: it returns the exit code.
func run(ctx context.Context, args []string, e env, stdout, stderr io.Writer) int {
	root, started := newRootCommand(e, stdout, stderr)
	if len(args) == 0 {
		// soloist alone: the help, on stderr, as a usage error.
		root.SetOut(stderr)
		root.SetArgs([]string{"--help"})
		_ = root.ExecuteContext(ctx)
		return exitUsage
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if !*started {
		// cobra refused the command line before any command ran: an
		// unknown command, a bad flag or argument.
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{cmd: cmd.Name(), msg: err.Error()}
		}
	}
	return report(cmd, err, stderr)
}

// report prints err the way every command does and returns the exit code.
func report(cmd *cobra.Command, err error, stderr io.Writer) int {
	var ue *usageError
	var xe *exitError
	code := exitCode(err)
	switch {
	case errors.As(err, &ue):
		path := "soloist"
		if cmd != nil && cmd.HasParent() {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", path, ue.msg, path)
		return exitUsage
	case errors.As(err, &xe) && xe.err == nil:
		return xe.code
	}
	fmt.Fprintf(stderr, "soloist: %v\n", err)
	return code
}

// exitCode is the exit code of a command's error.
func exitCode(err error) int {
	var ue *usageError
	var xe *exitError
	var ure *unreachableError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, &ure):
		return exitUnreachable
	}
	return exitFailed
}

// newRootCommand builds the command tree. started is set once a command's
// own code runs, so that run tells cobra's refusals of the command line
// (exit code 2) from a command's failures.
func newRootCommand(e env, stdout, stderr io.Writer) (*cobra.Command, *bool) {
	started := new(bool)
	bi := readBuildInfo()
	root := &cobra.Command{
		Use:   "soloist",
		Short: "soloist runs singleton orchestrations on etcd",
		Long: `soloist runs singleton orchestrations on etcd.

  soloist serve [flags]                      run a node (embedded etcd unless --etcd-endpoints)
  soloist start FUNCTION [ID] [--input JSON] [--conflict-policy P] [--reuse-policy P]
  soloist status ID [--history]
  soloist list [--status S] [--prefix P] [--top N]
  soloist wait ID [--timeout D]
  soloist terminate|suspend|resume ID [--reason R]
  soloist raise ID EVENT [--data JSON]
  soloist restart|purge ID
  soloist nodes                              live nodes, their gRPC workers, what they run
  soloist version
  soloist completion bash|zsh|fish

Client commands talk to --server (default http://127.0.0.1:8080, env
SOLOIST_SERVER) with --api-key (env SOLOIST_API_KEY) and print -o table, json
or yaml (default: table on a terminal, else json). Every serve flag also
reads SOLOIST_<FLAG>, e.g. SOLOIST_ETCD_ENDPOINTS; a flag beats its variable.`,
		Version:       bi.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			*started = true
			if err := bindEnv(cmd.Flags(), e); err != nil {
				return usagef(cmd.Name(), "%v", err)
			}
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate(versionText(bi))
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef(cmd.Name(), "%v", err)
	})
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usagef("help", "unknown command %q", strings.Join(args, " "))
			}
			return cmd.Help()
		},
	})
	plain := root.UsageTemplate()
	root.SetUsageTemplate(plain + "\n" + exitCodesHelp)

	root.AddCommand(
		newServeCommand(),
		newStartCommand(),
		newStatusCommand(),
		newListCommand(),
		newWaitCommand(),
		newControlCommand("terminate", "terminate an active instance"),
		newControlCommand("suspend", "suspend an active instance"),
		newControlCommand("resume", "resume a suspended instance"),
		newRaiseCommand(),
		newRestartCommand(),
		newPurgeCommand(),
		newNodesCommand(),
		newVersionCommand(bi),
	)
	for _, c := range root.Commands() {
		c.SetUsageTemplate(plain)
	}
	return root, started
}

// exactArgs checks the number of positional arguments of a command whose
// synopsis is cmd.Use.
func exactArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		synopsis := "soloist " + cmd.Use
		switch {
		case len(args) < min:
			return usagef(cmd.Name(), "missing arguments; usage: %s", synopsis)
		case len(args) > max:
			return usagef(cmd.Name(), "unexpected argument %q; usage: %s", args[max], synopsis)
		}
		return nil
	}
}
