//go:build !linux

package execfn

import "syscall"

// procAttr puts the program in its own process group. Outside Linux there
// is no parent-death signal: a program outlives a node killed with kill -9.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
