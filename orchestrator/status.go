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
	case ReuseAllow, ReuseAllowFailedOnly, ReuseReject:
		return p, nil
	}
	return "", &ValidationError{Field: "reusePolicy", Value: v,
		Reason: "must be one of allow, allowFailedOnly, reject"}
}

// allows reports whether a terminal instance in status s may be replaced.
func (p ReusePolicy) allows(s RuntimeStatus) bool {
	switch p {
	case ReuseAllow:
		return true
	case ReuseAllowFailedOnly:
		return s == StatusFailed || s == StatusTerminated
	}
	return false
}
