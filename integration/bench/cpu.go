package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of CPU times in /proc (USER_HZ), 100 on Linux.
const clockTick = 10 * time.Millisecond

// cpuSample is CPU time used so far: by etcd, by the nodes, by this
// process, and by the whole machine (every process, /proc/stat).
type cpuSample struct {
	at                         time.Time
	etcd, nodes, bench, system time.Duration
}

// cpu reads the CPU time of the cluster's processes, of this process and
// of the machine. A process it cannot read counts 0.
func (c *cluster) cpu() cpuSample {
	s := cpuSample{at: time.Now(), system: systemCPU()}
	for _, m := range c.etcd.Members {
		s.etcd += procCPU(m.Proc.Pid())
	}
	for _, n := range c.nodes {
		s.nodes += procCPU(n.p.Pid())
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

// note says how many cores each used between before and s, and how many
// the rest of the machine used (other processes: other work on a shared
// machine shows here).
func (s cpuSample) note(before cpuSample) string {
	secs := s.at.Sub(before.at).Seconds()
	if secs <= 0 {
		return ""
	}
	cores := func(a, b time.Duration) float64 { return (a - b).Seconds() / secs }
	etcd, nodes, bench := cores(s.etcd, before.etcd), cores(s.nodes, before.nodes), cores(s.bench, before.bench)
	all := cores(s.system, before.system)
	return fmt.Sprintf("CPU cores used: etcd %.2f, nodes %.2f, benchmark %.2f, everything else %.2f (machine busy %.2f of %d)",
		etcd, nodes, bench, max(all-etcd-nodes-bench, 0), all, numCPU())
}

// others is the cores used by processes outside the run.
func (s cpuSample) others(before cpuSample) float64 {
	secs := s.at.Sub(before.at).Seconds()
	if secs <= 0 {
		return 0
	}
	ours := (s.etcd - before.etcd) + (s.nodes - before.nodes) + (s.bench - before.bench)
	return max((s.system-before.system-ours).Seconds()/secs, 0)
}

// procCPU is utime + stime of a process from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: fields
	// start after the last ')'. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+st) * clockTick
}

// systemCPU is the busy time of all CPUs from /proc/stat (everything but
// idle and iowait).
func systemCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0
		}
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are already in user
			continue
		}
		busy += n
	}
	return time.Duration(busy) * clockTick
}

func numCPU() int { return runtime.NumCPU() }

// cpuWindow samples the cluster's CPU use from warmup to warmup+d from
// now, in the background; the returned function waits for the end and
// records what was used in r.
func (c *cluster) cpuWindow(warmup, d time.Duration) (record func(r *results, phase string)) {
	done := make(chan [2]cpuSample, 1)
	go func() {
		time.Sleep(warmup)
		before := c.cpu()
		time.Sleep(d)
		done <- [2]cpuSample{before, c.cpu()}
	}()
	return func(r *results, phase string) {
		s := <-done
		r.addNum(phase, phase+"_others_cores", s[1].others(s[0]), f2, s[1].note(s[0])+", over the window")
	}
}
