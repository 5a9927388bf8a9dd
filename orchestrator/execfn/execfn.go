package execfn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/internal/fncommon"
)

// DefaultMaxOutput is the default cap of a program's captured stdout: 1 MiB.
const DefaultMaxOutput = 1 << 20

// stderrTail is how much of the end of stderr an error carries.
const stderrTail = 4 << 10

// waitDelay bounds how long an attempt waits, after its program exited or was
// killed, for stdout and stderr to be closed by processes that escaped the
// process group.
const waitDelay = 2 * time.Second

// waitDelayMessage is logged when an attempt's result waited the wait
// delay for a leftover process to close stdout or stderr.
const waitDelayMessage = "a process the program left behind kept its stdout or stderr open; the result waited the wait delay; run the program under the exec supervisor, or have it close or redirect both before it exits"

// ErrOutputTooLarge means the program wrote more than Options.MaxOutput bytes
// to stdout.
var ErrOutputTooLarge = errors.New("execfn: stdout too large")

// ErrTimeout means an attempt ran longer than Options.Timeout.
var ErrTimeout = errors.New("execfn: timed out")

// Options configure an exec function.
type Options struct {
	// Timeout bounds each attempt; 0 means no limit. An attempt that times
	// out is killed and fails (and is retried if Retry allows).
	Timeout time.Duration
	// Retry re-runs the program after a failed attempt. Defaults to one
	// attempt.
	Retry Retry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Env is added to the parent's environment ("KEY=value"). The SOLOIST_*
	// variables of the contract always win.
	Env []string
	// MaxOutput caps the captured stdout in bytes. Defaults to
	// DefaultMaxOutput.
	MaxOutput int
	// Supervisor is the command that runs the program under the exec
	// supervisor, without the program: Run appends "--", the program and
	// its arguments, and passes the lifeline pipe as file descriptor 3. It
	// must end up in SupervisorMain; soloist serve sets it to its own
	// binary with the hidden command: [/path/to/soloist __exec-supervisor].
	// With the supervisor, the program's whole process tree dies with the
	// node however the node dies (see "Process lifetime" in the package
	// documentation). Empty runs the program directly: then a node killed
	// with SIGKILL takes only the program with it, not its children.
	// Linux only; ignored on other systems.
	Supervisor []string
}

// Retry says how often and how soon a failed attempt is re-run: at most
// MaxAttempts attempts (the first included; below 1 means 1), Backoff
// apart, none starting later than Timeout (if set) after the first began.
// It is the same type as httpfn.Retry.
type Retry = fncommon.Retry

// ExitError is the failure of an attempt whose program exited non-zero or
// was killed by a signal.
type ExitError struct {
	// Program is argv[0].
	Program string
	// ExitCode is the exit code, or -1 if a signal ended the program.
	ExitCode int
	// Signal ended the program when ExitCode is -1.
	Signal syscall.Signal
	// Stderr is the last 4 KiB of stderr, trimmed.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, "%s exited with code %d", e.Program, e.ExitCode)
	} else {
		fmt.Fprintf(&b, "%s was killed by signal %d (%s)", e.Program, int(e.Signal), e.Signal)
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	} else {
		b.WriteString(" (stderr was empty)")
	}
	return b.String()
}

// New returns an orchestration that runs argv (argv[0] is looked up in PATH
// if it has no slash) as described in the package documentation. It panics
// if argv is empty: validate configuration before calling it.
func New(argv []string, opts Options) orchestrator.OrchestratorFunc {
	if len(argv) == 0 || argv[0] == "" {
		panic("execfn: New needs a program to run")
	}
	argv = append([]string(nil), argv...)
	opts.Env = append([]string(nil), opts.Env...)
	opts.Supervisor = append([]string(nil), opts.Supervisor...)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(octx *orchestrator.OrchestrationContext) (any, error) {
		out, err := Run(octx.Context(), argv, fncommon.InvocationOf(octx), opts)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// Invocation is what one run of an exec function is about: its Input is
// written to stdin (empty writes nothing), and Env returns the contract's
// environment variables (SOLOIST_INSTANCE_ID, SOLOIST_EXECUTION_ID,
// SOLOIST_FUNCTION, SOLOIST_FENCING_TOKEN). It is the same type as
// httpfn.Invocation.
type Invocation = fncommon.Invocation

// TraceEnv returns the W3C trace context of ctx's span as environment
// variables, TRACEPARENT and TRACESTATE (if any), as the OpenTelemetry
// environment-variable carriers name them; nil if ctx has none.
func TraceEnv(ctx context.Context) []string {
	tc := orchestrator.TraceContextFrom(ctx)
	if tc.IsZero() {
		return nil
	}
	env := []string{"TRACEPARENT=" + tc.Parent}
	if tc.State != "" {
		env = append(env, "TRACESTATE="+tc.State)
	}
	return env
}

// withoutTraceEnv drops the node's own TRACEPARENT and TRACESTATE (if it
// was started with any): a program gets its run's trace context or none.
func withoutTraceEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TRACEPARENT=") && !strings.HasPrefix(kv, "TRACESTATE=") {
			out = append(out, kv)
		}
	}
	return out
}

// Run runs argv for inv with the retries of opts and returns the output of
// the first successful attempt. If ctx is cancelled it kills the running
// attempt, does not retry, and returns context.Cause(ctx). New wraps Run;
// it is exported for callers that have no OrchestrationContext.
func Run(ctx context.Context, argv []string, inv Invocation, opts Options) (json.RawMessage, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("execfn: no program to run")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("instance_id", inv.InstanceID, "execution_id", inv.ExecutionID, "fencing_token", inv.FencingToken)
	env := append(append(withoutTraceEnv(os.Environ()), opts.Env...), inv.Env()...)
	// Each attempt is a span, a child of ctx's (the run's): with the
	// tracer provider of that span, so nothing global is used.
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(orchestrator.TracerName)
	attempt := 0
	var out json.RawMessage
	opts.Logger = log
	err := opts.Retry.Policy().Do(ctx, func() error {
		attempt++
		start := time.Now()
		log.Debug("exec attempt starting", "program", argv[0], "attempt", attempt)
		actx, span := tracer.Start(ctx, "exec "+inv.Function, trace.WithAttributes(
			orchestrator.AttrFunction.String(inv.Function), orchestrator.AttrInstanceID.String(inv.InstanceID),
			orchestrator.AttrExecutionID.String(inv.ExecutionID), orchestrator.AttrFencingToken.Int64(inv.FencingToken),
			orchestrator.AttrAttempt.Int(attempt), attribute.String("process.executable.name", filepath.Base(argv[0])),
		))
		defer span.End()
		var err error
		if out, err = runOnce(actx, argv, slices.Concat(env, TraceEnv(actx)), inv.Input, opts); err == nil {
			log.Debug("exec attempt succeeded", "attempt", attempt, "duration", time.Since(start))
		} else {
			var xe *ExitError
			if errors.As(err, &xe) && xe.ExitCode >= 0 {
				span.SetAttributes(attribute.Int("process.exit.code", xe.ExitCode))
			}
			orchestrator.RecordFailure(span, orchestrator.DetailsOf(err))
		}
		return err
	}, nil, func(attempt int, err error, wait time.Duration) {
		log.Warn("exec attempt failed; retrying", "attempt", attempt, "max_attempts", opts.Retry.MaxAttempts,
			"backoff", wait, "error", err)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// runOnce runs one attempt. Its process tree (without a supervisor: its
// process group) is killed when ctx is done, when the timeout expires, when
// stdout passes the cap, and after the program exits.
func runOnce(ctx context.Context, argv, env []string, input []byte, opts Options) (json.RawMessage, error) {
	timeout, maxOutput := opts.Timeout, opts.MaxOutput
	if maxOutput <= 0 {
		maxOutput = DefaultMaxOutput
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if timeout > 0 {
		var stop context.CancelFunc
		actx, stop = context.WithTimeoutCause(actx, timeout,
			&fncommon.CauseError{Msg: fmt.Sprintf("%s timed out after %s", argv[0], timeout), Err: ErrTimeout})
		defer stop()
	}

	var cmd *exec.Cmd
	var run func() (waitErr, startErr error)
	if len(opts.Supervisor) > 0 && supervisorSupported {
		// Not found or not executable: the same error as without the
		// supervisor, before starting it.
		if _, err := exec.LookPath(argv[0]); err != nil {
			return nil, fmt.Errorf("start %s: %w", argv[0], err)
		}
		cmd, run = supervisedCommand(actx, opts.Supervisor, argv)
	} else {
		cmd = exec.CommandContext(actx, argv[0], argv[1:]...)
		cmd.SysProcAttr = procAttr()
		cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
		run = func() (error, error) { return startAndWait(cmd) }
	}
	cmd.Env = env
	cmd.WaitDelay = waitDelay
	if len(input) > 0 {
		cmd.Stdin = bytes.NewReader(input)
	}
	stdout := &cappedBuffer{max: maxOutput, overflow: func() {
		cancel(&fncommon.CauseError{Err: ErrOutputTooLarge, Msg: fmt.Sprintf(
			"%s wrote more than %d bytes to stdout and was killed; write large results elsewhere and print a reference", argv[0], maxOutput)})
	}}
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	waitErr, err := run()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		// Something the program left behind held stdout or stderr open
		// after it exited: the result waited the whole wait delay for it.
		opts.Logger.Warn(waitDelayMessage, "program", argv[0], "wait_delay", waitDelay)
	}
	// Whatever the program left behind in its group dies with it (the
	// supervisor has already killed everything below it). The group ID
	// cannot be reused while a member is alive, so this never hits a
	// stranger while there is something to kill.
	_ = killGroup(cmd.Process.Pid)

	switch {
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case stdout.overflowed():
		return nil, context.Cause(actx)
	case waitErr == nil || errors.Is(waitErr, exec.ErrWaitDelay):
		// Exit 0 (ErrWaitDelay: and something it left held stdout open).
		// A timeout that fired after the exit does not undo the success.
		return orchestrator.OutputFromBytes(stdout.Bytes()), nil
	case actx.Err() != nil:
		return nil, context.Cause(actx) // the timeout killed it
	default:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			xe := &ExitError{Program: argv[0], ExitCode: ee.ExitCode(), Stderr: strings.TrimSpace(stderr.String())}
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				xe.Signal = ws.Signal()
			}
			return nil, xe
		}
		return nil, fmt.Errorf("run %s: %w", argv[0], waitErr)
	}
}

// startAndWait runs cmd on one locked OS thread, from Start until Wait
// returns: the parent-death signal of procAttr is tied to that thread.
func startAndWait(cmd *exec.Cmd) (waitErr, startErr error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return <-waited, nil
}

// killGroup sends SIGKILL to the process group pgid.
func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// cappedBuffer keeps up to max bytes and calls overflow once when more
// arrive. It keeps accepting (and dropping) writes so the writer does not
// block until it is killed.
type cappedBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	max      int
	over     bool
	overflow func()
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return len(p), nil
	}
	if b.buf.Len()+len(p) > b.max {
		b.over = true
		b.overflow()
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *cappedBuffer) overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Bytes()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.truncated = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.ToValidUTF8(string(b.buf), "")
	if b.truncated {
		return "..." + s
	}
	return s
}
