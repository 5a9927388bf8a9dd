package orchestrator

import "time"

// SetFinalWriteTimeout shortens finalWriteTimeout for a test that must not
// run in parallel with others; it returns the restore.
func SetFinalWriteTimeout(d time.Duration) (restore func()) {
	old := finalWriteTimeout
	finalWriteTimeout = d
	return func() { finalWriteTimeout = old }
}
