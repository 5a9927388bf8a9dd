package harness

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Clock is the one monotonic clock of a scenario: every recorded event (a
// client call and return, a sink effect, a node log line, an etcd watch
// event, a fault) is stamped with the time since the clock started, taken
// from Go's monotonic clock in this test process.
type Clock struct {
	start time.Time
}

// NewClock starts a clock.
func NewClock() *Clock { return &Clock{start: time.Now()} }

// Now is the time since the clock started.
func (c *Clock) Now() time.Duration { return time.Since(c.start) }

// Stamp formats a clock reading as +12.345s.
func Stamp(d time.Duration) string { return fmt.Sprintf("+%.3fs", d.Seconds()) }

// seq hands out unique small numbers (request tags, process incarnations).
var seq atomic.Int64

func nextSeq() int64 { return seq.Add(1) }
