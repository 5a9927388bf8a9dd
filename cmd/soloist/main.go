// Command soloist runs a Soloist node (soloist serve) and talks to one over
// HTTP (soloist start, status, list, wait, terminate, ...). Run "soloist help"
// for the commands and "soloist COMMAND -h" for the flags of each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, e env, stdout, stderr io.Writer) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"serve":     {"run a Soloist node", runServe},
		"start":     {"start an orchestration instance", runStart},
		"status":    {"print an instance's status", runStatus},
		"list":      {"list instances", runList},
		"wait":      {"wait until an instance is terminal", runWait},
		"terminate": {"terminate an active instance", runTerminate},
		"suspend":   {"suspend an active instance", runSuspend},
		"resume":    {"resume a suspended instance", runResume},
		"raise":     {"raise an event to an instance", runRaise},
		"restart":   {"start a new execution of an instance with its input", runRestart},
		"purge":     {"delete a terminal instance", runPurge},
		"version":   {"print version, commit and Go version", runVersion},
	}
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// exitError carries an exit code for an error that was already reported.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// run is main without os.Exit: it returns the exit code.
func run(ctx context.Context, args []string, e env, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return report(c.run(ctx, []string{"-h"}, e, stdout, stderr), stderr)
			}
			fmt.Fprintf(stderr, "soloist: unknown command %q\n", args[1])
			return 2
		}
		printUsage(stdout)
		return 0
	case "-v", "-version", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "soloist: unknown command %q\nRun 'soloist help' for the list of commands.\n", name)
		return 2
	}
	return report(c.run(ctx, args[1:], e, stdout, stderr), stderr)
}

// report prints err the way every command does and returns the exit code.
func report(err error, stderr io.Writer) int {
	var ue *usageError
	var xe *exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "soloist %s: %s\nRun 'soloist %s -h' for usage.\n", ue.cmd, ue.msg, ue.cmd)
		return 2
	}
	fmt.Fprintf(stderr, "soloist: %v\n", err)
	return 1
}

func printUsage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`soloist runs singleton orchestrations on etcd.

Usage:
  soloist serve [flags]                      run a node (embedded etcd unless --etcd-endpoints)
  soloist start FUNCTION [ID] [--input JSON] [--conflict-policy P] [--reuse-policy P]
  soloist status ID [--history]
  soloist list [--status S] [--prefix P] [--top N]
  soloist wait ID [--timeout D]
  soloist terminate|suspend|resume ID [--reason R]
  soloist raise ID EVENT [--data JSON]
  soloist restart|purge ID
  soloist version

Commands:
`)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, commands[n].summary)
	}
	b.WriteString(`
Client commands talk to --server (default http://127.0.0.1:8080, env
SOLOIST_SERVER) with --api-key (env SOLOIST_API_KEY). Every serve flag also
reads SOLOIST_<FLAG>, e.g. SOLOIST_ETCD_ENDPOINTS; a flag beats its variable.

Run 'soloist COMMAND -h' for the flags of a command.
`)
	io.WriteString(w, b.String())
}
