package orchestrator

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is; the typed errors below wrap or
// match them so callers that only need the kind can use errors.Is too.
var (
	// ErrInstanceNotFound means no instance record exists for the ID.
	ErrInstanceNotFound = errors.New("orchestrator: instance not found")
	// ErrInstanceExists means a start was refused by the conflict or reuse policy.
	ErrInstanceExists = errors.New("orchestrator: instance already exists")
	// ErrInvalidInstanceID means an instance ID breaks the rules of ValidateInstanceID.
	ErrInvalidInstanceID = errors.New("orchestrator: invalid instance ID")
	// ErrInvalidInput means a request argument is malformed (see ValidationError).
	ErrInvalidInput = errors.New("orchestrator: invalid input")
	// ErrUnknownFunction means no orchestration of that name is registered.
	ErrUnknownFunction = errors.New("orchestrator: unknown function")
	// ErrPayloadTooLarge means an input, output, custom status or event is
	// larger than the configured limit.
	ErrPayloadTooLarge = errors.New("orchestrator: payload too large")
	// ErrInstanceTerminal means the operation needs an active instance but the
	// instance is Completed, Failed or Terminated.
	ErrInstanceTerminal = errors.New("orchestrator: instance is terminal")
	// ErrInstanceActive means the operation needs a terminal instance (purge).
	ErrInstanceActive = errors.New("orchestrator: instance is active")
	// ErrFenced means a holder's write was refused because the writer no
	// longer holds the instance (its fencing compare failed). The writer must
	// stop at once.
	ErrFenced = errors.New("orchestrator: write fenced: no longer the holder")
	// ErrExecutionChanged means the instance record no longer belongs to the
	// execution the caller works on (it was terminated, restarted or purged).
	ErrExecutionChanged = errors.New("orchestrator: execution changed")
	// ErrNotImplemented marks an operation this version does not provide.
	ErrNotImplemented = errors.New("orchestrator: not implemented")
	// ErrUnavailable means the store could not be reached in time; the
	// outcome of a write that returns it is unknown only if the error says so.
	ErrUnavailable = errors.New("orchestrator: store unavailable")
)

// ExistsError is returned when a start is refused because of the policies.
// It carries the status of the instance that blocked the start.
type ExistsError struct {
	Status *Status
	// Reason names the policy that refused the start.
	Reason string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("An instance with ID '%s' already exists.", e.Status.InstanceID)
}

// Is makes errors.Is(err, ErrInstanceExists) true.
func (e *ExistsError) Is(target error) bool { return target == ErrInstanceExists }

// ValidationError says which argument is wrong and how to fix it.
type ValidationError struct {
	Field  string
	Value  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, truncate(e.Value, 80), e.Reason)
}

// Is makes errors.Is(err, ErrInvalidInput) true, and ErrInvalidInstanceID for
// the instance ID field.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalidInput || (target == ErrInvalidInstanceID && e.Field == "instance ID")
}

// TerminalError is returned when an operation needs an active instance.
type TerminalError struct {
	InstanceID string
	Status     RuntimeStatus
}

func (e *TerminalError) Error() string {
	return fmt.Sprintf("instance '%s' is %s: the operation needs an active instance", e.InstanceID, e.Status)
}

// Is makes errors.Is(err, ErrInstanceTerminal) true.
func (e *TerminalError) Is(target error) bool { return target == ErrInstanceTerminal }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
