package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// larger than the configured limit, or a request would exceed etcd's
	// request size limit. Retrying cannot help.
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
	// ErrUnavailable means the store could not be reached in time. It is
	// transient: the same call may succeed later. The outcome of a write
	// that returns it is unknown only if the error says so.
	ErrUnavailable = errors.New("orchestrator: store unavailable")
	// ErrNoSpace means etcd raised its NOSPACE alarm: it refuses every write
	// until an operator compacts, defragments and disarms the alarm. Nothing
	// was written.
	ErrNoSpace = errors.New("orchestrator: etcd is out of space (NOSPACE alarm)")
	// ErrStoreLimit means etcd refused a request as too large or with too
	// many operations: a bug of the caller or a limit set lower than the
	// configuration assumes. Nothing was written and retrying cannot help.
	ErrStoreLimit = errors.New("orchestrator: request exceeds etcd's limits")
	// ErrStoreDenied means etcd refused the request for lack of permission
	// or authentication. Nothing was written; it needs an operator's grant.
	ErrStoreDenied = errors.New("orchestrator: etcd denied the request")
)

// NoSpaceHelp is what an operator does about ErrNoSpace.
const NoSpaceHelp = "free space in etcd: compact its history (etcdctl compact $(etcdctl endpoint status -w json | jq '.[0].Status.header.revision')), " +
	"defragment every member (etcdctl defrag --cluster), purge finished instances, then clear the alarm (etcdctl alarm disarm); " +
	"raise --quota-backend-bytes if the data really needs more room"

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

// ClassifyError is storeErr for callers outside the package: it maps an
// etcd client error onto ErrNoSpace, ErrStoreLimit, ErrStoreDenied or
// ErrUnavailable, keeping the cause.
func ClassifyError(err error) error { return storeErr(err) }

// storeErr classifies an error of an etcd call, keeping the cause:
// ErrNoSpace, ErrStoreLimit and ErrStoreDenied are permanent (etcd refused
// the request before applying it, and retrying cannot help); everything
// else, timeouts and cancellations included, is ErrUnavailable (transient,
// and for a write the outcome is unknown).
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNoSpace), errors.Is(err, ErrStoreLimit), errors.Is(err, ErrStoreDenied):
		return err
	case errors.Is(err, rpctypes.ErrNoSpace):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrDuplicateKey):
		return fmt.Errorf("%w: %w", ErrStoreLimit, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrAuthFailed),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrUserEmpty),
		errors.Is(err, rpctypes.ErrAuthOldRevision):
		return fmt.Errorf("%w: %w", ErrStoreDenied, err)
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.ResourceExhausted {
		// The client's own gRPC limit: the message is larger than it may send.
		return fmt.Errorf("%w: %w", ErrStoreLimit, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// IsPermanent reports whether err is a store error that retrying cannot
// mend: ErrNoSpace (until an operator acts), ErrStoreLimit, ErrStoreDenied.
// Such a write was not applied, except with ErrNoSpace: etcd also answers
// NOSPACE for a write it applied and found over the quota while applying
// it (the write that raises the alarm).
func IsPermanent(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, ErrStoreLimit) || errors.Is(err, ErrStoreDenied)
}
