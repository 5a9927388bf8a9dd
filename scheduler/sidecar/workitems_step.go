package sidecar

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// stepRequest is one orchestration step to send to a worker: the execution,
// its history as committed (past) and the events the step delivers (new),
// and the fencing token of the node's holding.
type stepRequest struct {
	x          Execution
	name       string
	fence      int64
	past, news []orchestrator.HistoryEvent
	maxPayload int
}

// step sends one orchestration step to a worker that serves it and waits
// for its answer. An answer that checkActions refuses is refused to the
// worker (the error says which action and why) and ends the step with that
// error, nothing committed; an accepted one is handed to commit, whose
// error the worker is told: a fenced write or a changed execution as
// FAILED_PRECONDITION (the answer is stale: this node no longer holds that
// execution, and nothing of it was written). The wait ends with ctx (the
// holding's), after which any answer is stale.
func (h *hub) step(ctx context.Context, r stepRequest, commit func(*pb.OrchestratorResponse) error) error {
	pastPB, newPB := HistoryToProto(r.x, r.past, r.news)
	d := &dispatch{
		kind: kindOrchestration, name: r.name, instanceID: r.x.InstanceID, executionID: r.x.ExecutionID, fence: r.fence,
		orch: &pb.OrchestratorRequest{
			InstanceId: r.x.InstanceID, ExecutionId: wrapperspb.String(r.x.ExecutionID),
			PastEvents: pastPB, NewEvents: newPB,
		},
	}
	return h.run(ctx, d, func(a answer) (error, bool) {
		if err := checkActions(a.orch, r.maxPayload); err != nil {
			return err, true
		}
		if err := commit(a.orch); err != nil {
			return commitStatus(err), true
		}
		return nil, true
	})
}

// commitStatus is the gRPC status a worker gets for a step its node could
// not commit.
func commitStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, orchestrator.ErrFenced), errors.Is(err, orchestrator.ErrExecutionChanged):
		return status.Errorf(codes.FailedPrecondition, "%v: %v", errStale, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.FailedPrecondition, "%v: the node stopped running the instance (%v)", errStale, err)
	case errors.Is(err, orchestrator.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "the step could not be stored: %v", err)
	}
	return status.Errorf(codes.Aborted, "the step could not be committed: %v", err)
}
