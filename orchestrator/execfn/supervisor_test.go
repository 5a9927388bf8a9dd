//go:build linux

package execfn

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary is its own exec supervisor: main_test.go dispatches
// "__exec-supervisor" to SupervisorMain, as soloist's main does.
func testSupervisor(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "__exec-supervisor"}
}

// modes are the two ways of running a program: directly, and under the
// supervisor.
func modes(t *testing.T) []struct {
	name string
	sup  []string
} {
	return []struct {
		name string
		sup  []string
	}{{"direct", nil}, {"supervised", testSupervisor(t)}}
}

// descendantGrace is how long after the kill was observed the test waits
// before it looks at the grandchild's file: the supervisor needs a few
// milliseconds to notice and kill; this leaves room for a loaded machine.
const descendantGrace = 200 * time.Millisecond

// grandchildScript starts a grandchild that appends a line to $F every 50
// ms until it is killed, writes its pid to $PIDF, and waits. With setsid
// the grandchild leaves the program's process group (and session).
func grandchildScript(setsid bool) string {
	loop := `sh -c 'echo $$ > "$PIDF"; while :; do date +%s%N >> "$F"; sleep 0.05; done' & wait`
	if setsid {
		return "setsid " + loop
	}
	return loop
}

// TestGrandchildDies checks that a program's grandchild stops writing once
// its attempt is cancelled, and once its node is killed with SIGKILL,
// whether it stays in the program's process group or leaves it with
// setsid. Without the supervisor the grandchild survives a SIGKILL of the
// node in either case and a cancel after setsid: those rows are the
// control, showing that the check sees a survivor.
func TestGrandchildDies(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid command")
	}
	t.Parallel()
	for _, m := range modes(t) {
		for _, event := range []string{"cancel", "node-killed"} {
			for _, variant := range []string{"group", "setsid"} {
				survives := m.sup == nil && (event == "node-killed" || variant == "setsid")
				t.Run(m.name+"/"+event+"/"+variant, func(t *testing.T) {
					t.Parallel()
					dir := t.TempDir()
					f, pidf := filepath.Join(dir, "F"), filepath.Join(dir, "pid")
					script := grandchildScript(variant == "setsid")
					env := []string{"F=" + f, "PIDF=" + pidf}
					var killed time.Time
					if event == "cancel" {
						killed = cancelWhileWriting(t, m.sup, script, env, f)
					} else {
						killed = killNodeWhileWriting(t, m.sup, script, env, f)
					}
					pid := waitPID(t, pidf)
					t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
					time.Sleep(descendantGrace)
					before := fileSize(t, f)
					time.Sleep(300 * time.Millisecond)
					after := fileSize(t, f)
					grew := after != before
					t.Logf("grandchild %d: %d bytes appended between %s and %s after the kill",
						pid, after-before, descendantGrace, time.Since(killed).Round(time.Millisecond))
					switch {
					case survives && !grew:
						t.Fatalf("control: without the supervisor the grandchild should survive, but it stopped writing")
					case !survives && grew:
						t.Fatalf("the grandchild kept writing to its file after the %s (%d bytes in 300ms)", event, after-before)
					case !survives:
						waitDead(t, pid)
					}
				})
			}
		}
	}
}

// cancelWhileWriting runs script as an exec function, cancels it once $F
// is being written, and returns when Run has returned.
func cancelWhileWriting(t *testing.T, sup []string, script string, env []string, f string) time.Time {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("lease lost")
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, sh(script), testInv(), Options{Env: env, Supervisor: sup})
		done <- err
	}()
	waitWriting(t, f, done)
	cancel(stop)
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("Run: %v, want the context's cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the cancel")
	}
	return time.Now()
}

// killNodeWhileWriting starts a stand-in node (the test binary as
// "__execfn-test-node") that runs script as an exec function, kills it with
// SIGKILL once $F is being written, and returns when it is dead.
func killNodeWhileWriting(t *testing.T, sup []string, script string, env []string, f string) time.Time {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mode := "direct"
	if sup != nil {
		mode = "supervised"
	}
	node := exec.Command(exe, "__execfn-test-node", mode, script)
	node.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	node.Stderr = &stderr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- node.Wait() }()
	waitWriting(t, f, exited)
	if err := node.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("stand-in node: %v, want killed; stderr: %s", err, stderr.String())
	}
	return time.Now()
}

// waitWriting waits until f has two lines: the grandchild is looping.
func waitWriting(t *testing.T, f string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(f); err == nil && bytes.Count(b, []byte("\n")) >= 2 {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("the run ended before the grandchild wrote: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the grandchild did not write within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestSupervisedLikeDirect checks that the supervisor changes nothing a
// program or a caller can see: the same outputs, and the same errors with
// the same messages, signal deaths included.
func TestSupervisedLikeDirect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		argv  []string
		input string
		opts  Options
	}{
		{"json output", sh(`echo '{"a": 1}'`), "", Options{}},
		{"text output", sh(`printf 'x "quoted"'`), "", Options{}},
		{"stdin is the input", sh(`cat`), `{"x":[1,2]}`, Options{}},
		{"environment", sh(`printf '%s|%s|%s|%s|%s|%s' "$SOLOIST_INSTANCE_ID" "$SOLOIST_EXECUTION_ID" "$SOLOIST_FUNCTION" "$SOLOIST_FENCING_TOKEN" "$EXTRA" "$PATH"`),
			"", Options{Env: []string{"EXTRA=extra"}}},
		{"argv", []string{"sh", "-c", `printf '%s,' "$0" "$@"`, "zero", "one", "two words"}, "", Options{}},
		{"exit code and stderr", sh(`echo partial; echo boom >&2; exit 3`), "", Options{}},
		{"exit 126", sh(`exit 126`), "", Options{}},
		{"SIGTERM", sh(`echo dying >&2; kill -TERM $$`), "", Options{}},
		{"SIGKILL", sh(`kill -KILL $$`), "", Options{}},
		{"SIGINT", sh(`kill -INT $$`), "", Options{}},
		{"SIGHUP", sh(`kill -HUP $$`), "", Options{}},
		{"SIGQUIT", sh(`kill -QUIT $$`), "", Options{}},
		{"SIGSEGV", sh(`kill -SEGV $$`), "", Options{}},
		{"SIGABRT", sh(`kill -ABRT $$`), "", Options{}},
		{"SIGUSR1", sh(`kill -USR1 $$`), "", Options{}},
		{"SIGPIPE", sh(`kill -PIPE $$`), "", Options{}},
		{"timeout", sh(`sleep 30`), "", Options{Timeout: 200 * time.Millisecond}},
		{"output too large", sh(`while :; do echo yyyyyyyyyyyyyyyyyyyyyyyy; done`), "", Options{MaxOutput: 1024}},
		{"missing program", []string{"/nonexistent/soloist-program"}, "", Options{}},
		{"missing program in PATH", []string{"soloist-no-such-program"}, "", Options{}},
		{"not executable", []string{notExec}, "", Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if sig, ok := ignoredSignal(c.name); ok {
				// Under nohup (or any parent that ignores it) a directly
				// started program inherits the ignored disposition: it
				// survives its own kill and the modes differ by design.
				t.Skipf("%v is ignored by this test process (started under nohup?): a direct child inherits that", sig)
			}
			inv := testInv()
			inv.Input = json.RawMessage(c.input)
			var got [2]string
			for i, m := range modes(t) {
				opts := c.opts
				opts.Supervisor = m.sup
				out, err := Run(context.Background(), c.argv, inv, opts)
				var xe *ExitError
				switch {
				case err == nil:
					got[i] = "output " + string(out)
				case errors.As(err, &xe):
					got[i] = fmt.Sprintf("exit error %+v: %v", *xe, err)
				case strings.HasPrefix(err.Error(), "start "):
					// The texts of start errors differ (stat against fork/exec); what
					// matters is that the program was not started and is named.
					got[i] = "start error naming " + c.argv[0] + ": " + fmt.Sprint(strings.Contains(err.Error(), c.argv[0]))
				default:
					got[i] = "error " + err.Error()
				}
			}
			if got[0] != got[1] {
				t.Fatalf("direct and supervised differ:\n  direct:     %s\n  supervised: %s", got[0], got[1])
			}
			t.Log(got[0])
		})
	}
}

// ignoredSignal reports the signal a TestSupervisedLikeDirect case named
// after it sends, if this process ignores that signal.
func ignoredSignal(name string) (syscall.Signal, bool) {
	sig, ok := map[string]syscall.Signal{
		"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGHUP": syscall.SIGHUP,
		"SIGQUIT": syscall.SIGQUIT, "SIGUSR1": syscall.SIGUSR1, "SIGPIPE": syscall.SIGPIPE,
	}[name]
	return sig, ok && signal.Ignored(sig)
}

// TestSupervisedLeftovers checks that nothing a program left behind
// outlives its successful attempt, even outside its process group, and
// that a leftover holding stdout does not delay the result: the supervisor
// kills it before it exits, so Run's Wait never needs the wait delay.
func TestSupervisedLeftovers(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid command")
	}
	t.Parallel()
	for _, c := range []struct{ name, spawn string }{
		{"detached", `sleep 1000 >/dev/null 2>&1 & echo $! > "$PIDFILE"`},
		{"holding stdout", `sleep 1000 & echo $! > "$PIDFILE"`},
		{"setsid", `setsid sh -c 'echo $$ > "$PIDFILE"; exec sleep 1000' & while [ ! -s "$PIDFILE" ]; do sleep 0.01; done`},
		{"double fork", `(setsid sh -c 'echo $$ > "$PIDFILE"; exec sleep 1000' &) ; while [ ! -s "$PIDFILE" ]; do sleep 0.01; done`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pidFile := filepath.Join(t.TempDir(), "pid")
			logs, log := captureLog()
			start := time.Now()
			out, err := Run(context.Background(), sh(c.spawn+`; echo '{"ok":true}'`), testInv(),
				Options{Env: []string{"PIDFILE=" + pidFile}, Supervisor: testSupervisor(t), Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != `{"ok":true}` {
				t.Fatalf("output = %s", out)
			}
			// The property is that the result did not wait for a leftover
			// (Wait hit no wait delay), not a bound on Run's duration: a
			// loaded machine makes Run slow with nothing left behind.
			if strings.Contains(logs.String(), waitDelayMessage) {
				t.Errorf("a leftover held stdout until the wait delay (Run took %s)", time.Since(start))
			}
			waitDead(t, waitPID(t, pidFile))
		})
	}
}

// startSupervisor runs the supervisor by hand, as Run does: the program
// on its stdout pipe, the lifeline on fd 3. It returns the command and the
// lifeline's write end.
func startSupervisor(t *testing.T, argv ...string) (*exec.Cmd, *os.File, *bufio.Reader) {
	t.Helper()
	sup := testSupervisor(t)
	cmd := exec.Command(sup[0], append(append(sup[1:], "--"), argv...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	cmd.ExtraFiles = []*os.File{r}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	return cmd, w, bufio.NewReader(stdout)
}

// TestSupervisorForwardsSignals checks that SIGTERM and SIGINT sent to the
// supervisor reach the program, which may handle them and exit as it
// likes, and that the supervisor exits as the program did.
func TestSupervisorForwardsSignals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sig  syscall.Signal
		name string
	}{{syscall.SIGTERM, "TERM"}, {syscall.SIGINT, "INT"}} {
		sig, name := c.sig, c.name
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd, _, stdout := startSupervisor(t, "/bin/sh", "-c",
				`trap 'echo got-`+name+`; exit 7' `+name+`; echo ready; sleep 1000 & wait`)
			if line, err := stdout.ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("program said %q, %v", line, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			line, _ := stdout.ReadString('\n')
			err := cmd.Wait()
			var xe *exec.ExitError
			if !errors.As(err, &xe) || xe.ExitCode() != 7 || line != "got-"+name+"\n" {
				t.Fatalf("supervisor: %v, program said %q; want exit 7 after got-%s", err, line, name)
			}
		})
	}
}

// TestSupervisorNodeGoneBeforeStart checks that a supervisor whose node
// is already gone does not start the program at all.
func TestSupervisorNodeGoneBeforeStart(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	sup := testSupervisor(t)
	cmd := exec.Command(sup[0], append(append(sup[1:], "--"), "/bin/sh", "-c", `touch "$0"`, marker)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	cmd.ExtraFiles = []*os.File{r}
	err = cmd.Run()
	_ = r.Close()
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() != 1 {
		t.Fatalf("supervisor: %v, want exit 1", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran though the node was gone")
	}
}

// TestSupervisorByHand checks that the hidden command refuses to run
// without its lifeline or without a program.
func TestSupervisorByHand(t *testing.T) {
	t.Parallel()
	sup := testSupervisor(t)
	for _, args := range [][]string{{"--", "/bin/true"}, {"/bin/true"}, {"--"}} {
		cmd := exec.Command(sup[0], append(sup[1:], args...)...)
		out, err := cmd.CombinedOutput()
		var xe *exec.ExitError
		if !errors.As(err, &xe) || xe.ExitCode() != 2 || !strings.Contains(string(out), "soloist exec supervisor: ") {
			t.Errorf("supervisor %q: %v, %q; want exit 2 and a message", args, err, out)
		}
	}
}

// TestStoppedSupervisor checks the node's backstop: a supervisor that
// cannot act (here stopped with SIGSTOP) when the attempt is cancelled is
// killed supervisorGrace later, and so is everything below it.
func TestStoppedSupervisor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, pidf := filepath.Join(dir, "F"), filepath.Join(dir, "pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, sh(grandchildScript(false)), testInv(), Options{Env: []string{"F=" + f, "PIDF=" + pidf}, Supervisor: testSupervisor(t)})
		done <- err
	}()
	waitWriting(t, f, done)
	grandchild := waitPID(t, pidf)
	t.Cleanup(func() { _ = syscall.Kill(grandchild, syscall.SIGKILL) })
	sup := 0 // the grandchild's ancestor that is a supervisor
	for p := grandchild; p > 1; p, _ = parentOf(p) {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); bytes.Contains(cmdline, []byte("__exec-supervisor")) {
			sup = p
			break
		}
	}
	if sup == 0 {
		t.Fatal("no supervisor above the grandchild")
	}
	if err := syscall.Kill(sup, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the cancel")
	}
	if d := time.Since(start); d < supervisorGrace || d > supervisorGrace+time.Second {
		t.Errorf("Run returned %s after the cancel, want about %s", d, supervisorGrace)
	}
	waitDead(t, grandchild)
}
