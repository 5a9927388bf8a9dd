package harness

import (
	"sync/atomic"
	"time"

	"github.com/soloist-dev/soloist/integration/harness/proc"
)

// The processes, the clock and the etcd cluster live in package proc,
// which does not depend on package testing, so the benchmark program
// (integration/bench) runs them too. These names keep the suite's code
// as it was.
type (
	// Process is one program the harness runs; see proc.Process.
	Process = proc.Process
	// Clock is the scenario's one monotonic clock; see proc.Clock.
	Clock = proc.Clock
	// Cluster is an etcd cluster of real processes; see proc.Cluster.
	Cluster = proc.Cluster
	// Member is one etcd member; see proc.Member.
	Member = proc.Member
)

// NewClock starts a clock.
func NewClock() *Clock { return proc.NewClock() }

// Stamp formats a clock reading as +12.345s.
func Stamp(d time.Duration) string { return proc.Stamp(d) }

// FreePort returns a loopback port nobody listens on.
func FreePort() (int, error) { return proc.FreePort() }

// StartCluster starts n etcd members (data in dir) and waits for a leader.
func StartCluster(dir, etcdBin string, clock *Clock, n int, args ...string) (*Cluster, error) {
	return proc.StartCluster(dir, etcdBin, clock, n, args...)
}

func cleanEnv(extra ...string) []string { return proc.CleanEnv(extra...) }

func exitDesc(err error) string { return proc.ExitDesc(err) }

// seq hands out unique small numbers (request tags, process incarnations).
var seq atomic.Int64

func nextSeq() int64 { return seq.Add(1) }
