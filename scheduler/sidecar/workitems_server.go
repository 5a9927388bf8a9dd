package sidecar

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// The work-item RPCs: the server's hub (workitems.go) serves them.

// GetWorkItems streams a worker its work items and a health ping every
// Config.PingInterval, until the worker goes or the node drains.
func (s *Server) GetWorkItems(req *pb.GetWorkItemsRequest, srv grpc.ServerStreamingServer[pb.WorkItem]) error {
	return s.work.GetWorkItems(req, srv)
}

// CompleteOrchestratorTask answers an orchestration work item.
func (s *Server) CompleteOrchestratorTask(ctx context.Context, res *pb.OrchestratorResponse) (*pb.CompleteTaskResponse, error) {
	return s.work.CompleteOrchestratorTask(ctx, res)
}

// CompleteActivityTask answers an activity work item.
func (s *Server) CompleteActivityTask(ctx context.Context, res *pb.ActivityResponse) (*pb.CompleteTaskResponse, error) {
	return s.work.CompleteActivityTask(ctx, res)
}

// AbandonTaskOrchestratorWorkItem gives an orchestration work item back.
func (s *Server) AbandonTaskOrchestratorWorkItem(ctx context.Context, req *pb.AbandonOrchestrationTaskRequest) (*pb.AbandonOrchestrationTaskResponse, error) {
	return s.work.AbandonTaskOrchestratorWorkItem(ctx, req)
}

// AbandonTaskActivityWorkItem gives an activity work item back.
func (s *Server) AbandonTaskActivityWorkItem(ctx context.Context, req *pb.AbandonActivityTaskRequest) (*pb.AbandonActivityTaskResponse, error) {
	return s.work.AbandonTaskActivityWorkItem(ctx, req)
}

// newServerHub makes the server's hub: a worker without filters is offered
// what the node does not run natively, and the node hears when what the
// workers serve changes.
func newServerHub(cfg Config, log *slog.Logger) (*hub, error) {
	m, err := newWIMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	var native func(string, string) bool
	if cfg.Node != nil {
		reg := cfg.Node.Registry()
		native = func(name, version string) bool {
			_, ok := reg.OrchestratorVersion(name, version)
			return ok
		}
	}
	h := newHub(log, m, cfg.PingInterval, native)
	if cfg.Node != nil {
		h.changed = cfg.Node.RemoteChanged
	}
	return h, nil
}
