package execfn

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func testInv() Invocation {
	return Invocation{InstanceID: "inst-1", ExecutionID: "exec-1", Function: "job", FencingToken: 42}
}

func TestOutput(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, script, input, want string
	}{
		{"json object", `echo '{"a": 1}'`, "", `{"a": 1}`},
		{"json number", `echo 42`, "", `42`},
		{"plain text is a string", `echo hello world`, "", `"hello world"`},
		{"text without newline", `printf 'x "quoted"'`, "", `"x \"quoted\""`},
		{"empty stdout is null", `true`, "", `null`},
		{"stdin is the input", `cat`, `{"x":[1,2]}`, `{"x":[1,2]}`},
		{"no input, empty stdin", `cat`, "", `null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			inv := testInv()
			inv.Input = json.RawMessage(c.input)
			out, err := Run(context.Background(), sh(c.script), inv, Options{})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if string(out) != c.want {
				t.Fatalf("output = %s, want %s", out, c.want)
			}
		})
	}
}

func TestNonZeroExit(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), sh(`echo partial; echo boom >&2; exit 3`), testInv(), Options{})
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("err = %v (%T), want *ExitError", err, err)
	}
	if xe.ExitCode != 3 || xe.Stderr != "boom" {
		t.Fatalf("ExitError = %+v, want code 3 and stderr boom", xe)
	}
	if msg := err.Error(); msg != "/bin/sh exited with code 3: boom" {
		t.Fatalf("message = %q", msg)
	}
}

func TestStderrTail(t *testing.T) {
	t.Parallel()
	script := `i=0; while [ $i -lt 2000 ]; do printf 'noise-' >&2; i=$((i+1)); done; echo THE-END >&2; exit 1`
	_, err := Run(context.Background(), sh(script), testInv(), Options{})
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("err = %v, want *ExitError", err)
	}
	if !strings.HasSuffix(xe.Stderr, "THE-END") || !strings.HasPrefix(xe.Stderr, "...") {
		t.Fatalf("stderr tail does not keep the end: %.40q ... %q", xe.Stderr, xe.Stderr[max(0, len(xe.Stderr)-20):])
	}
	if len(xe.Stderr) > stderrTail+3 {
		t.Fatalf("stderr tail is %d bytes, want at most %d", len(xe.Stderr), stderrTail+3)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	script := `printf '%s|%s|%s|%s|%s|%s' "$SOLOIST_INSTANCE_ID" "$SOLOIST_EXECUTION_ID" "$SOLOIST_FUNCTION" "$SOLOIST_FENCING_TOKEN" "$EXTRA" "$PATH"`
	opts := Options{Env: []string{"EXTRA=extra", "SOLOIST_INSTANCE_ID=must-not-win"}}
	out, err := Run(context.Background(), sh(script), testInv(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal("inst-1|exec-1|job|42|extra|" + os.Getenv("PATH")) // PATH comes from the parent
	if string(out) != string(want) {
		t.Fatalf("output = %s, want %s", out, want)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := Run(context.Background(), sh(`sleep 30`), testInv(), Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("message = %q", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %s", d)
	}
}

func TestOutputTooLarge(t *testing.T) {
	t.Parallel()
	for _, script := range []string{
		`while :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done`, // killed
		`head -c 5000 /dev/zero | tr '\0' x; exit 0`,              // exits 0 with too much
	} {
		_, err := Run(context.Background(), sh(script), testInv(), Options{MaxOutput: 1024})
		if !errors.Is(err, ErrOutputTooLarge) || !strings.Contains(err.Error(), "more than 1024 bytes") {
			t.Fatalf("%s: err = %v, want ErrOutputTooLarge", script, err)
		}
	}
}

func TestRetryCount(t *testing.T) {
	t.Parallel()
	count := filepath.Join(t.TempDir(), "count")
	_, err := Run(context.Background(), sh(`echo x >> "$COUNT"; echo fail >&2; exit 1`), testInv(),
		Options{Env: []string{"COUNT=" + count}, Retry: Retry{MaxAttempts: 3, Backoff: 10 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "all 3 attempts failed") {
		t.Fatalf("err = %v, want all 3 attempts failed", err)
	}
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("err = %v does not wrap the last *ExitError", err)
	}
	if n := lines(t, count); n != 3 {
		t.Fatalf("ran %d times, want 3", n)
	}
}

func TestRetrySucceeds(t *testing.T) {
	t.Parallel()
	count := filepath.Join(t.TempDir(), "count")
	script := `echo x >> "$COUNT"; [ "$(wc -l < "$COUNT")" -ge 2 ] && echo '"ok"' && exit 0; exit 1`
	out, err := Run(context.Background(), sh(script), testInv(),
		Options{Env: []string{"COUNT=" + count}, Retry: Retry{MaxAttempts: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `"ok"` || lines(t, count) != 2 {
		t.Fatalf("output %s after %d runs, want \"ok\" after 2", out, lines(t, count))
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("lease lost")
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, sh(`exit 1`), testInv(), Options{Retry: Retry{MaxAttempts: 100, Backoff: time.Hour}})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the first attempt fail; the assertion is below
	cancel(stop)
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the context's cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept waiting for its backoff after the context was cancelled")
	}
}

// TestCancelKillsGroup checks that cancelling the context kills the program
// and the children it spawned.
func TestCancelKillsGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("terminated")
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, sh(`sleep 1000 & echo $! > "$PIDFILE"; wait`), testInv(), Options{Env: []string{"PIDFILE=" + pidFile}})
		done <- err
	}()
	pid := waitPID(t, pidFile)
	if !alive(pid) {
		t.Fatalf("child %d is not running before the cancel", pid)
	}
	start := time.Now()
	cancel(stop)
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the context's cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the context was cancelled")
	}
	if d := time.Since(start); d > waitDelay {
		t.Errorf("Run took %s to return after cancel; the group kill should close the pipes at once", d)
	}
	waitDead(t, pid)
}

// TestLeftoversKilledAfterExit checks that nothing an attempt started
// outlives it, and that a child holding stdout delays the result by at most
// waitDelay.
func TestLeftoversKilledAfterExit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, redirect string }{{"detached", ">/dev/null 2>&1"}, {"holding stdout", ""}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pidFile := filepath.Join(t.TempDir(), "pid")
			logs, log := captureLog()
			start := time.Now()
			out, err := Run(context.Background(), sh(`sleep 1000 `+c.redirect+` & echo $! > "$PIDFILE"; echo '{"ok":true}'`),
				testInv(), Options{Env: []string{"PIDFILE=" + pidFile}, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != `{"ok":true}` {
				t.Fatalf("output = %s", out)
			}
			if d := time.Since(start); d > waitDelay+3*time.Second {
				t.Fatalf("Run took %s", d)
			}
			// Without the supervisor a child holding stdout makes Wait use
			// the wait delay, and Run says so; a detached one does not.
			if warned, want := strings.Contains(logs.String(), waitDelayMessage), c.redirect == ""; warned != want {
				t.Errorf("wait-delay warning logged %v, want %v; logs:\n%s", warned, want, logs.String())
			}
			waitDead(t, waitPID(t, pidFile))
		})
	}
}

func TestMissingProgram(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), []string{"/nonexistent/soloist-program"}, testInv(), Options{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/soloist-program") {
		t.Fatalf("err = %v, want one naming the program", err)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func waitPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(path)
		if s := strings.TrimSpace(string(b)); err == nil && strings.HasSuffix(string(b), "\n") && s != "" {
			pid, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("pid file %q: %v", b, err)
			}
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the script did not write its child's pid within 10s")
	return 0
}

// alive reports whether pid is a running process: it exists and is not a
// zombie waiting for a reaper (PID 1 of a container may never reap it).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child process %d is still alive 5s after its attempt ended", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
