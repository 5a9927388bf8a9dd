package execfn

import "syscall"

// procAttr puts the program in its own process group, and has the kernel
// kill it if the thread that started it dies: with the node's process (a
// kill -9, a crash), the program goes too instead of running on with a
// stale fencing token. The starting thread stays locked until Wait returns,
// so Go never retires it under a live program.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
