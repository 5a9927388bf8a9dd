package proc

import (
	"fmt"
	"time"
)

// Clock is the one monotonic clock of a run: every recorded event (a
// client call and return, a sink effect, a node log line, an etcd watch
// event, a fault) is stamped with the time since the clock started, taken
// from Go's monotonic clock of this process.
type Clock struct {
	start time.Time
}

// NewClock starts a clock.
func NewClock() *Clock { return &Clock{start: time.Now()} }

// Now is the time since the clock started.
func (c *Clock) Now() time.Duration { return time.Since(c.start) }

// Stamp formats a clock reading as +12.345s.
func Stamp(d time.Duration) string { return fmt.Sprintf("+%.3fs", d.Seconds()) }
