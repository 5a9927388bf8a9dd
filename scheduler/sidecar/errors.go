package sidecar

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/orchestrator"
)

// alreadyExists is the message of a refused start; the SDKs look for its
// first words.
const alreadyExists = "orchestration instance already exists"

// existsStatus is the answer to a start refused because the ID is taken.
func existsStatus(id string, st orchestrator.RuntimeStatus, why string) error {
	return status.Errorf(codes.AlreadyExists, "%s: '%s' is %s (%s)", alreadyExists, id, st, why)
}

// invalid is INVALID_ARGUMENT with a formatted message.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// toStatus maps an error of the orchestrator client (or of ctx) to a gRPC
// status; what names the operation for the messages that need it.
func (s *Server) toStatus(ctx context.Context, err error, what string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, orchestrator.ErrUnavailable) {
		return err // already a gRPC status
	}
	var exists *orchestrator.ExistsError
	switch {
	case errors.As(err, &exists):
		return existsStatus(exists.Status.InstanceID, exists.Status.RuntimeStatus, exists.Reason)
	case errors.Is(err, orchestrator.ErrInstanceNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, orchestrator.ErrInvalidInput), errors.Is(err, orchestrator.ErrInvalidInstanceID),
		errors.Is(err, orchestrator.ErrPayloadTooLarge), errors.Is(err, orchestrator.ErrStoreLimit):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, orchestrator.ErrInstanceTerminal), errors.Is(err, orchestrator.ErrInstanceActive),
		errors.Is(err, orchestrator.ErrNotRewindable), errors.Is(err, orchestrator.ErrConditionFailed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, orchestrator.ErrNoSpace):
		return status.Errorf(codes.ResourceExhausted, "%v; %s", err, orchestrator.NoSpaceHelp)
	case errors.Is(err, orchestrator.ErrStoreDenied):
		return status.Errorf(codes.Internal, "%s: %v (the node's etcd role lacks a permission; an operator must grant it)", what, err)
	case ctx.Err() != nil:
		if s.isStopping() {
			return status.Errorf(codes.Unavailable, "%s: this node is shutting down; call again (another node answers)", what)
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return status.Errorf(codes.DeadlineExceeded, "%s: the call's deadline passed", what)
		}
		return status.Errorf(codes.Canceled, "%s: the call was cancelled", what)
	case errors.Is(err, orchestrator.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s: %v", what, err)
	}
	s.log.Error("call failed", "operation", what, "error", err)
	return status.Error(codes.Internal, fmt.Sprintf("%s: %v", what, err))
}

// isStopping reports whether Shutdown has begun.
func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// untilStopping is ctx, cancelled also when Shutdown begins.
func (s *Server) untilStopping(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
