package sidecar

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// The work-item side of the protocol (workers) is not built yet: these
// answers stand in for it until the workitems files replace this one.

// errNoWorkItems is the answer to every work-item RPC for now.
var errNoWorkItems = status.Error(codes.Unimplemented,
	"this Soloist node does not dispatch work items to gRPC workers yet (GetWorkItems, CompleteOrchestratorTask, CompleteActivityTask, Abandon*); "+
		"the client RPCs (start, status, wait, raise, terminate, suspend, resume, purge, restart, rewind, query, history) are served")

// GetWorkItems is not served yet.
func (s *Server) GetWorkItems(*pb.GetWorkItemsRequest, grpc.ServerStreamingServer[pb.WorkItem]) error {
	return errNoWorkItems
}

// CompleteOrchestratorTask is not served yet.
func (s *Server) CompleteOrchestratorTask(context.Context, *pb.OrchestratorResponse) (*pb.CompleteTaskResponse, error) {
	return nil, errNoWorkItems
}

// CompleteActivityTask is not served yet.
func (s *Server) CompleteActivityTask(context.Context, *pb.ActivityResponse) (*pb.CompleteTaskResponse, error) {
	return nil, errNoWorkItems
}

// AbandonTaskOrchestratorWorkItem is not served yet.
func (s *Server) AbandonTaskOrchestratorWorkItem(context.Context, *pb.AbandonOrchestrationTaskRequest) (*pb.AbandonOrchestrationTaskResponse, error) {
	return nil, errNoWorkItems
}

// AbandonTaskActivityWorkItem is not served yet.
func (s *Server) AbandonTaskActivityWorkItem(context.Context, *pb.AbandonActivityTaskRequest) (*pb.AbandonActivityTaskResponse, error) {
	return nil, errNoWorkItems
}
