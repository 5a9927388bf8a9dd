package execfn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The exec supervisor, Linux side. See the package documentation, section
// "Process lifetime", for what it guarantees; SupervisorMain documents its
// command line.

const supervisorSupported = true

// lifelineFD is the supervisor's file descriptor 3: the read end of a pipe
// whose only write end the node holds. EOF on it means the node closed it
// (the attempt was cancelled) or died, however it died: the kernel closes
// a dead process's descriptors.
const lifelineFD = 3

// supervisorGrace is how long the node waits, after closing the lifeline,
// for the supervisor to exit before it kills what it can see of the tree
// and the supervisor itself. The supervisor needs a few milliseconds.
const supervisorGrace = 500 * time.Millisecond

// treeKillTimeout bounds how long the supervisor keeps killing and reaping
// after the program's end: only a process stuck in uninterruptible sleep
// (state D) survives SIGKILL that long, and it dies as soon as it wakes.
const treeKillTimeout = 10 * time.Second

// forwarded are the signals the supervisor passes on to the program's
// process group instead of dying of them itself.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// supervisedCommand prepares the command that runs argv under the
// supervisor and returns it with the function that starts it and waits for
// it. The caller sets Env, stdin, stdout, stderr and WaitDelay. When ctx is
// done the lifeline is closed, so the supervisor kills the program's whole
// tree and exits; if it has not exited supervisorGrace later, the node
// kills every descendant of the supervisor it can see, then the
// supervisor.
func supervisedCommand(ctx context.Context, supervisor, argv []string) (*exec.Cmd, func() (waitErr, startErr error)) {
	args := append(append(append([]string(nil), supervisor[1:]...), "--"), argv...)
	cmd := exec.CommandContext(ctx, supervisor[0], args...)
	// Its own process group, as a program run directly: signals meant for
	// the node's group (a terminal's ^C) do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var (
		w        *os.File
		mu       sync.Mutex
		exited   bool
		backstop *time.Timer
	)
	cmd.Cancel = func() error {
		_ = w.Close()
		mu.Lock()
		defer mu.Unlock()
		if !exited && backstop == nil {
			backstop = time.AfterFunc(supervisorGrace, func() {
				mu.Lock()
				defer mu.Unlock()
				if !exited {
					killTree(cmd.Process.Pid)
					_ = cmd.Process.Kill()
				}
			})
		}
		return nil
	}
	return cmd, func() (error, error) {
		r, pw, err := os.Pipe() // both ends close-on-exec: no other child inherits them
		if err != nil {
			return nil, err
		}
		w = pw
		defer w.Close()
		cmd.ExtraFiles = []*os.File{r} // fd 3 of the supervisor
		err = cmd.Start()
		_ = r.Close()
		if err != nil {
			return nil, err
		}
		waitErr := cmd.Wait()
		mu.Lock()
		exited = true
		if backstop != nil {
			backstop.Stop()
		}
		mu.Unlock()
		return waitErr, nil
	}
}

// SupervisorMain is the exec supervisor: the hidden command that soloist
// serve runs each exec function's program under ("soloist
// __exec-supervisor -- PROG ARGS..."), and that Options.Supervisor names.
// args are the arguments after the command's name: "--", then the program
// and its arguments. File descriptor 3 must be the read end of the node's
// lifeline pipe (Run passes it); stdin, stdout, stderr and the environment
// go to the program unchanged.
//
// The supervisor makes itself a child subreaper, so that every orphaned
// descendant of the program is re-parented to it instead of to init, and
// starts the program in a process group of its own. It forwards SIGTERM,
// SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to that group. When the
// program exits, or the lifeline reports the node gone, it kills with
// SIGKILL the program's group and every descendant left (found in /proc,
// until it has no child left), then exits with the program's exit code;
// for a program killed by a signal it kills itself with the same signal,
// so that the node sees the same wait status as for the program run
// directly. SupervisorMain returns only the exit code: 2 for a wrong
// command line, 126 or 127 when the program cannot be started (as a shell
// does), 1 for a failure of the supervisor itself.
func SupervisorMain(args []string) int {
	if len(args) < 2 || args[0] != "--" || args[1] == "" {
		return supervisorFail(2, "usage: soloist __exec-supervisor -- PROGRAM [ARG...] (started by soloist serve, with its lifeline on fd 3)")
	}
	argv := args[1:]
	var st syscall.Stat_t
	if err := syscall.Fstat(lifelineFD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return supervisorFail(2, "fd 3 is not the node's lifeline pipe: this command is started by soloist serve, not by hand")
	}
	syscall.CloseOnExec(lifelineFD) // the program does not inherit it
	if nodeGone() {
		return 1
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return supervisorFail(127, "%v", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return supervisorFail(1, "PR_SET_CHILD_SUBREAPER: %v", err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	// SIGPIPE on a write to stderr must not kill the supervisor; notifying
	// (not ignoring) keeps the program's disposition the default.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	// The program's parent-death signal is tied to the thread that starts
	// it: this goroutine keeps its thread until the process exits. If the
	// supervisor itself is killed, the program goes with it.
	runtime.LockOSThread()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		code := 126
		if errors.Is(err, syscall.ENOENT) {
			code = 127
		}
		return supervisorFail(code, "%s: %v", argv[0], err)
	}

	// The reaper: every child that ends, the program and the orphans
	// re-parented to us, is reaped here. No child left means no descendant
	// left: an orphan is re-parented to its nearest living subreaper
	// ancestor, which is us or one of our descendants.
	status := make(chan syscall.WaitStatus, 1)
	noChildren := make(chan struct{})
	go func() {
		for {
			var ws syscall.WaitStatus
			wpid, err := syscall.Wait4(-1, &ws, unix.WALL, nil)
			switch {
			case errors.Is(err, syscall.EINTR):
			case err != nil: // ECHILD
				close(noChildren)
				return
			case wpid == pid:
				status <- ws
			}
		}
	}()
	gone := make(chan struct{})
	go func() {
		lifeline := os.NewFile(lifelineFD, "lifeline")
		var b [64]byte
		for {
			if _, err := lifeline.Read(b[:]); err != nil {
				close(gone)
				return
			}
		}
	}()

	var ws syscall.WaitStatus
	programDone := false
wait:
	for {
		select {
		case s := <-sigs:
			if err := syscall.Kill(-pid, s.(syscall.Signal)); errors.Is(err, syscall.ESRCH) {
				_ = syscall.Kill(pid, s.(syscall.Signal)) // it left its group
			}
		case ws = <-status:
			programDone = true
			break wait
		case <-gone:
			break wait
		}
	}
	// The program ended, or the node is gone: nothing it started may
	// outlive this moment.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if !reapTree(noChildren) {
		fmt.Fprintf(os.Stderr, "soloist exec supervisor: processes still alive %s after SIGKILL: %v\n", treeKillTimeout, descendants(os.Getpid()))
		return 1
	}
	if !programDone {
		ws = <-status // sent before the reaper saw no child left
	}
	signal.Stop(sigs)
	if ws.Signaled() {
		dieBySignal(ws.Signal())
	}
	return ws.ExitStatus()
}

// nodeGone reports whether the lifeline already has no writer (the node
// died before the supervisor could start the program).
func nodeGone() bool {
	fds := []unix.PollFd{{Fd: lifelineFD, Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLHUP != 0
}

// reapTree kills every descendant with SIGKILL, again and again, until the
// reaper has no child left. A process forked after a scan is the child of
// one the scan found and killed, so it is re-parented to us and found by
// the next scan. It returns false if descendants are still there after
// treeKillTimeout.
func reapTree(noChildren <-chan struct{}) bool {
	deadline := time.Now().Add(treeKillTimeout)
	for pause := 500 * time.Microsecond; ; pause = min(2*pause, 20*time.Millisecond) {
		for _, p := range descendants(os.Getpid()) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		select {
		case <-noChildren:
			return true
		case <-time.After(pause):
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// killTree sends SIGKILL to every process below root that /proc shows.
// The node uses it as the backstop of a supervisor that did not exit: it
// catches the program and whatever has not been re-parented yet.
func killTree(root int) {
	for _, p := range descendants(root) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// descendants returns the processes below root in the process tree, read
// from /proc/*/stat (zombies included, root excluded). The kernel does not
// reuse the ID of a process until it has been reaped, and every process
// found here is either ours to reap or its parent's, which is being
// killed too, so a signal sent to the list reaches no stranger (short of
// the ID space wrapping around within microseconds).
func descendants(root int) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	children := map[int][]int{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parentOf reads the parent process ID of pid from /proc/PID/stat: "pid
// (comm) state ppid ...", where comm may hold spaces and parentheses.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// dieBySignal ends the supervisor with sig, the signal that ended the
// program, so that its parent sees the same wait status. The Go runtime
// handles most signals itself (SIGQUIT, SIGSEGV and SIGABRT would print a
// traceback and exit 2), so the default action is restored with a raw
// rt_sigaction first; no core file is written. If that fails it exits
// 128+sig, as a shell reports a signal death.
func dieBySignal(sig syscall.Signal) {
	signal.Reset()
	_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	// A zeroed struct sigaction is SIG_DFL with no flags and an empty mask
	// on every architecture; 128 bytes is larger than any of them.
	var act [16]uint64
	for _, setsize := range []uintptr{8, 16} { // _NSIG/8: 16 on mips
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act[0])), 0, setsize, 0, 0); e == 0 {
			break
		}
	}
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(100 * time.Millisecond)
	os.Exit(128 + int(sig))
}

func supervisorFail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "soloist exec supervisor: "+format+"\n", args...)
	return code
}
