// Package fncommon holds what the exec functions (orchestrator/execfn) and
// the HTTP functions (orchestrator/httpfn) share: the invocation they are
// about, their retry settings, and the error that names a cause. Both
// packages export these types under their own names (aliases), so a
// change here reaches both at once.
package fncommon

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// The headers of an HTTP function's request that carry the invocation.
const (
	HeaderInstanceID   = "Soloist-Instance-Id"
	HeaderExecutionID  = "Soloist-Execution-Id"
	HeaderFencingToken = "Soloist-Fencing-Token"
	HeaderFunction     = "Soloist-Function"
)

// Invocation is what one run of an exec or HTTP function is about.
type Invocation struct {
	InstanceID   string
	ExecutionID  string
	Function     string
	FencingToken int64
	// Input is the exec function's stdin (empty writes nothing) or the
	// HTTP function's request body (empty sends null).
	Input json.RawMessage
}

// InvocationOf is the invocation of the run of octx.
func InvocationOf(octx *orchestrator.OrchestrationContext) Invocation {
	return Invocation{
		InstanceID:   octx.InstanceID(),
		ExecutionID:  octx.ExecutionID(),
		Function:     octx.Name(),
		FencingToken: octx.FencingToken(),
		Input:        octx.RawInput(),
	}
}

// Env returns the exec contract's environment variables of the invocation.
func (inv Invocation) Env() []string {
	return []string{
		"SOLOIST_INSTANCE_ID=" + inv.InstanceID,
		"SOLOIST_EXECUTION_ID=" + inv.ExecutionID,
		"SOLOIST_FUNCTION=" + inv.Function,
		"SOLOIST_FENCING_TOKEN=" + strconv.FormatInt(inv.FencingToken, 10),
	}
}

// Header returns the HTTP contract's headers of the invocation.
func (inv Invocation) Header() http.Header {
	h := http.Header{}
	h.Set(HeaderInstanceID, inv.InstanceID)
	h.Set(HeaderExecutionID, inv.ExecutionID)
	h.Set(HeaderFencingToken, strconv.FormatInt(inv.FencingToken, 10))
	h.Set(HeaderFunction, inv.Function)
	return h
}

// Retry says how often and how soon a failed attempt is repeated.
type Retry struct {
	// MaxAttempts is the number of attempts in all, the first included.
	// Values below 1 mean 1.
	MaxAttempts int
	// Backoff is the pause between attempts. Defaults to no pause.
	Backoff time.Duration
	// Timeout, if set, bounds the time from the start of the first attempt
	// within which another attempt may start (RetryPolicy.RetryTimeout):
	// a retry whose backoff would end later is not made.
	Timeout time.Duration
}

// Policy is the constant-backoff retry policy of r.
func (r Retry) Policy() orchestrator.RetryPolicy {
	return orchestrator.RetryPolicy{MaxAttempts: r.MaxAttempts, FirstInterval: r.Backoff, BackoffCoefficient: 1, RetryTimeout: r.Timeout}
}

// CauseError reads well in an instance's output and still matches its
// sentinel with errors.Is.
type CauseError struct {
	Msg string
	Err error
}

func (e *CauseError) Error() string { return e.Msg }
func (e *CauseError) Unwrap() error { return e.Err }
