package orchestrator

import (
	"fmt"
	"strings"
)

// RuntimeStatus is an instance's status, spelled as Durable Functions spells it.
type RuntimeStatus string

// The runtime statuses. Pending, Running, Suspended and ContinuedAsNew are
// active; Completed, Failed and Terminated are terminal.
const (
	StatusPending        RuntimeStatus = "Pending"
	StatusRunning        RuntimeStatus = "Running"
	StatusSuspended      RuntimeStatus = "Suspended"
	StatusContinuedAsNew RuntimeStatus = "ContinuedAsNew"
	StatusCompleted      RuntimeStatus = "Completed"
	StatusFailed         RuntimeStatus = "Failed"
	StatusTerminated     RuntimeStatus = "Terminated"
)

// AllStatuses lists every runtime status, active ones first.
var AllStatuses = []RuntimeStatus{
	StatusPending, StatusRunning, StatusSuspended, StatusContinuedAsNew,
	StatusCompleted, StatusFailed, StatusTerminated,
}

// Active reports whether an instance in this status blocks a new start of its ID.
func (s RuntimeStatus) Active() bool {
	switch s {
	case StatusPending, StatusRunning, StatusSuspended, StatusContinuedAsNew:
		return true
	}
	return false
}

// Terminal reports whether the status is final for its execution.
func (s RuntimeStatus) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusTerminated:
		return true
	}
	return false
}

// Runnable reports whether a holder should be running an instance in this
// status: active and not suspended.
func (s RuntimeStatus) Runnable() bool { return s.Active() && s != StatusSuspended }

// ParseRuntimeStatus accepts a status name in any letter case.
func ParseRuntimeStatus(v string) (RuntimeStatus, error) {
	for _, s := range AllStatuses {
		if strings.EqualFold(string(s), strings.TrimSpace(v)) {
			return s, nil
		}
	}
	return "", &ValidationError{Field: "runtimeStatus", Value: v,
		Reason: fmt.Sprintf("must be one of %s", joinStatuses(AllStatuses))}
}

func joinStatuses(ss []RuntimeStatus) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ", ")
}

// ConflictPolicy says what a start does when the ID is active.
type ConflictPolicy string

// Conflict policies (Temporal's WorkflowIdConflictPolicy).
const (
	// ConflictFail refuses the start with ErrInstanceExists (HTTP 409).
	ConflictFail ConflictPolicy = "fail"
	// ConflictUseExisting starts nothing and returns the existing instance.
	ConflictUseExisting ConflictPolicy = "useExisting"
	// ConflictTerminateExisting terminates the active instance and starts the
	// new one in the same transaction.
	ConflictTerminateExisting ConflictPolicy = "terminateExisting"
)

// ReusePolicy says whether a start may reuse an ID whose instance is terminal.
type ReusePolicy string

// Reuse policies (Temporal's WorkflowIdReusePolicy).
const (
	// ReuseAllow lets any terminal ID start again.
	ReuseAllow ReusePolicy = "allow"
	// ReuseAllowFailedOnly lets only Failed or Terminated IDs start again.
	ReuseAllowFailedOnly ReusePolicy = "allowFailedOnly"
	// ReuseReject never lets a terminal ID start again.
	ReuseReject ReusePolicy = "reject"
	// ReuseIgnore starts nothing when the ID's instance is terminal in one
	// of StartOptions.IgnoreStatuses (all three if empty) and reports
	// success with that instance (StartResult.Started false), as Durable
	// Task's OrchestrationIdReusePolicy action IGNORE does. A terminal
	// status not listed is replaced, as ReuseAllow does. The decision is
	// made on the record the start transaction read, like every start's.
	ReuseIgnore ReusePolicy = "ignore"
)

// ParseConflictPolicy parses a policy name; empty means ConflictFail.
func ParseConflictPolicy(v string) (ConflictPolicy, error) {
	switch p := ConflictPolicy(v); p {
	case "":
		return ConflictFail, nil
	case ConflictFail, ConflictUseExisting, ConflictTerminateExisting:
		return p, nil
	}
	return "", &ValidationError{Field: "conflictPolicy", Value: v,
		Reason: "must be one of fail, useExisting, terminateExisting"}
}

// ParseReusePolicy parses a policy name; empty means ReuseAllow.
func ParseReusePolicy(v string) (ReusePolicy, error) {
	switch p := ReusePolicy(v); p {
	case "":
		return ReuseAllow, nil
	case ReuseAllow, ReuseAllowFailedOnly, ReuseReject, ReuseIgnore:
		return p, nil
	}
	return "", &ValidationError{Field: "reusePolicy", Value: v,
		Reason: "must be one of allow, allowFailedOnly, reject, ignore"}
}

// allows reports whether a terminal instance in status s may be replaced.
func (p ReusePolicy) allows(s RuntimeStatus) bool {
	switch p {
	case ReuseAllow, ReuseIgnore: // ignore: the ignored statuses are decided first
		return true
	case ReuseAllowFailedOnly:
		return s == StatusFailed || s == StatusTerminated
	}
	return false
}

// ValidateIgnoreStatuses checks StartOptions.IgnoreStatuses: terminal
// statuses, and only with ReuseIgnore.
func ValidateIgnoreStatuses(p ReusePolicy, ss []RuntimeStatus) error {
	if len(ss) == 0 {
		return nil
	}
	if p != ReuseIgnore {
		return &ValidationError{Field: "ignoreStatuses", Value: joinStatuses(ss),
			Reason: "they apply only with reusePolicy=ignore"}
	}
	for _, s := range ss {
		if !s.Terminal() {
			return &ValidationError{Field: "ignoreStatuses", Value: string(s),
				Reason: "list only terminal statuses (Completed, Failed, Terminated); for an active ID use conflictPolicy=useExisting"}
		}
	}
	return nil
}

// ignores reports whether a start with ReuseIgnore and the statuses ss
// ignores an instance in terminal status s.
func ignores(ss []RuntimeStatus, s RuntimeStatus) bool {
	if !s.Terminal() {
		return false
	}
	if len(ss) == 0 {
		return true
	}
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
