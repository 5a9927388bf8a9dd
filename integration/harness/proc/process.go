package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one program the harness runs (an etcd member or a Soloist
// node), restartable with the same arguments. Its stdout and stderr go,
// line by line and stamped with the scenario clock, to one log file shared
// by all its incarnations; OnLine sees every line too.
type Process struct {
	Name    string
	Bin     string
	Args    []string
	Env     []string
	LogPath string
	Clock   *Clock
	// OnLine, if set, is called for every output line (without the
	// newline) with the clock reading of its arrival and the incarnation.
	OnLine func(at time.Duration, incarnation int, line []byte)

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	waitErr     error
	incarnation int
	paused      bool
	log         *os.File
	tail        []string
	races       int
}

// Start starts a new incarnation. The process must not be running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.exited) {
		return fmt.Errorf("proc: %s is already running", p.Name)
	}
	if p.log == nil {
		f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		p.log = f
	}
	p.incarnation++
	inc := p.incarnation
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = p.Env
	// A crashed test binary must not leave members and nodes behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w := &lineWriter{fn: func(line []byte) { p.line(inc, line) }}
	cmd.Stdout, cmd.Stderr = w, w
	fmt.Fprintf(p.log, "%s === %s incarnation %d: %s %s\n", Stamp(p.Clock.Now()), p.Name, inc, p.Bin, strings.Join(p.Args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("proc: start %s: %w", p.Name, err)
	}
	p.cmd, p.exited, p.paused = cmd, make(chan struct{}), false
	exited := p.exited
	go func() {
		err := cmd.Wait()
		w.flush()
		p.mu.Lock()
		p.waitErr = err
		fmt.Fprintf(p.log, "%s === %s incarnation %d exited: %v\n", Stamp(p.Clock.Now()), p.Name, inc, ExitDesc(err))
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// ExitDesc describes how a process ended: "status 0" or the error.
func ExitDesc(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func (p *Process) line(inc int, line []byte) {
	at := p.Clock.Now()
	p.mu.Lock()
	if p.log != nil {
		fmt.Fprintf(p.log, "%s %s\n", Stamp(at), line)
	}
	p.tail = append(p.tail, Stamp(at)+" "+string(line))
	if len(p.tail) > 400 {
		p.tail = append(p.tail[:0], p.tail[len(p.tail)-200:]...)
	}
	if bytes.Contains(line, []byte("WARNING: DATA RACE")) {
		p.races++
	}
	p.mu.Unlock()
	if p.OnLine != nil {
		p.OnLine(at, inc, line)
	}
}

// Incarnation is the number of the current (or last) incarnation, from 1.
func (p *Process) Incarnation() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.incarnation
}

// Pid is the current incarnation's process ID, 0 if none runs.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether an incarnation is running (paused counts).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.exited)
}

// Paused reports whether the process is stopped with SIGSTOP.
func (p *Process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused && p.cmd != nil && !isClosed(p.exited)
}

// Races counts "WARNING: DATA RACE" lines in the output (race builds).
func (p *Process) Races() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.races
}

// Signal sends sig to the running incarnation.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return fmt.Errorf("proc: %s is not running", p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("proc: signal %v to %s: %w", sig, p.Name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	fmt.Fprintf(p.log, "%s === sent %v to %s (pid %d)\n", Stamp(p.Clock.Now()), sig, p.Name, p.cmd.Process.Pid)
	return nil
}

// Wait waits up to timeout for the running incarnation to exit and
// reports whether it did.
func (p *Process) Wait(timeout time.Duration) bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return true
	}
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitErr is how the last incarnation ended (nil for status 0).
func (p *Process) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Kill sends SIGKILL and waits for the exit (a paused process dies of
// SIGKILL too).
func (p *Process) Kill() error {
	if !p.Running() {
		return nil
	}
	_ = p.Signal(syscall.SIGKILL)
	if !p.Wait(10 * time.Second) {
		return fmt.Errorf("proc: %s did not die of SIGKILL within 10s", p.Name)
	}
	return nil
}

// Term sends SIGTERM and waits up to timeout for a clean exit.
func (p *Process) Term(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if !p.Wait(timeout) {
		return fmt.Errorf("proc: %s did not exit within %s of SIGTERM", p.Name, timeout)
	}
	return p.ExitErr()
}

// Tail is the last n lines of output, stamped.
func (p *Process) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tail
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return strings.Join(t, "\n")
}

// Close kills the process and closes its log.
func (p *Process) Close() error {
	if p.Paused() {
		_ = p.Signal(syscall.SIGCONT)
	}
	err := p.Kill()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log != nil {
		_ = p.log.Close()
		p.log = nil
	}
	return err
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// lineWriter calls fn for every complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func([]byte)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(bytes.TrimRight(w.buf[:i], "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 1<<20 { // a runaway line
		w.fn(w.buf)
		w.buf = nil
	}
	return len(b), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.fn(w.buf)
		w.buf = nil
	}
}

// CleanEnv is this process's environment without SOLOIST_* variables, which
// would change the flags of soloist serve.
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOLOIST_") && !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
