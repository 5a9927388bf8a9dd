package orchestrator

import (
	"context"
	"errors"
	"reflect"
)

// FailureDetails says why a task or an orchestration failed, in the
// Durable Task SDKs' shape. A failed activity, exec or HTTP function,
// sub-orchestration or orchestration records them in its history
// (TaskFailed, SubOrchestrationInstanceFailed, ExecutionCompleted) and the
// status of a Failed instance shows them.
type FailureDetails struct {
	// ErrorType names the kind of failure: the ErrorType() of an error that
	// has one (ApplicationError, for example), else the error's type name,
	// or "Error" for a plain error.
	ErrorType string `json:"errorType"`
	// ErrorMessage is the error's message.
	ErrorMessage string `json:"errorMessage"`
	// StackTrace is the goroutine's stack for a panic, or what an error's
	// StackTrace() returns; empty otherwise (Go errors carry no stack).
	StackTrace string `json:"stackTrace,omitempty"`
	// InnerFailure is the failure this one wraps: an activity's in the
	// orchestration failure it caused, or the cause of a wrapped error.
	InnerFailure *FailureDetails `json:"innerFailure,omitempty"`
	// IsNonRetriable is set when retrying cannot help.
	IsNonRetriable bool `json:"isNonRetriable,omitempty"`
}

// Error makes FailureDetails an error (its message).
func (f *FailureDetails) Error() string { return f.ErrorMessage }

// ApplicationError is an error with a type name of the application's
// choosing, which becomes FailureDetails.ErrorType: return one from an
// activity or an orchestration so that callers can tell failures apart
// (orchestrator code with errors.As on the task's *TaskFailedError, users
// in the status's failureDetails).
type ApplicationError struct {
	Type    string
	Message string
	// NonRetriable tells retry policies not to retry it.
	NonRetriable bool
	// Cause, if set, becomes the InnerFailure.
	Cause error
}

func (e *ApplicationError) Error() string {
	if e.Cause != nil && e.Message == "" {
		return e.Cause.Error()
	}
	return e.Message
}

// ErrorType returns Type.
func (e *ApplicationError) ErrorType() string { return e.Type }

// Unwrap returns Cause.
func (e *ApplicationError) Unwrap() error { return e.Cause }

// panicError is an orchestration's or activity's panic.
type panicError struct {
	what  string // "orchestration" or "activity"
	value string
	stack string
}

func (e *panicError) Error() string     { return e.what + " panicked: " + e.value }
func (e *panicError) ErrorType() string { return "Panic" }
func (e *panicError) StackTrace() string {
	return e.stack
}

// DetailsOf describes err as FailureDetails.
func DetailsOf(err error) *FailureDetails {
	return detailsOf(err, 0)
}

func detailsOf(err error, depth int) *FailureDetails {
	if err == nil {
		return nil
	}
	var fd *FailureDetails
	if errors.As(err, &fd) && fd == err {
		return fd
	}
	var tf *TaskFailedError
	if errors.As(err, &tf) && error(tf) == err {
		d := &FailureDetails{ErrorType: "TaskFailed", ErrorMessage: tf.Error(), IsNonRetriable: tf.NonRetriable, InnerFailure: tf.Details}
		return d
	}
	d := &FailureDetails{ErrorType: errorType(err), ErrorMessage: truncateBytes(err.Error(), maxFailureBytes)}
	if st, ok := err.(interface{ StackTrace() string }); ok {
		d.StackTrace = truncateBytes(st.StackTrace(), maxFailureBytes)
	}
	var nr interface{ NonRetriable() bool }
	if errors.As(err, &nr) {
		d.IsNonRetriable = nr.NonRetriable()
	}
	var ae *ApplicationError
	if errors.As(err, &ae) && ae.NonRetriable {
		d.IsNonRetriable = true
	}
	if depth < 4 {
		if inner := errors.Unwrap(err); inner != nil {
			d.InnerFailure = detailsOf(inner, depth+1)
		}
	}
	return d
}

// errorType names an error's kind without Go's type syntax.
func errorType(err error) string {
	if t, ok := err.(interface{ ErrorType() string }); ok && t.ErrorType() != "" {
		return t.ErrorType()
	}
	var nd *NonDeterminismError
	switch {
	case errors.As(err, &nd):
		return "NonDeterminism"
	case errors.Is(err, ErrHistoryLimit):
		return "HistoryLimit"
	case errors.Is(err, ErrEventTimeout):
		return "EventTimeout"
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	case errors.Is(err, ErrPayloadTooLarge):
		return "PayloadTooLarge"
	}
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() {
	case "errors", "fmt", "":
		return "Error"
	}
	return t.Name()
}
