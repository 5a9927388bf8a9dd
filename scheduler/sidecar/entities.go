package sidecar

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// Durable entities and task hub management are not served: each such RPC
// answers UNIMPLEMENTED and says so.

// errNoEntities is the answer to every entity RPC.
var errNoEntities = status.Error(codes.Unimplemented,
	"Soloist does not support durable entities (signal, get, query, clean entity storage, entity work items); use orchestrations and external events instead")

// SignalEntity is not served.
func (s *Server) SignalEntity(context.Context, *pb.SignalEntityRequest) (*pb.SignalEntityResponse, error) {
	return nil, errNoEntities
}

// GetEntity is not served.
func (s *Server) GetEntity(context.Context, *pb.GetEntityRequest) (*pb.GetEntityResponse, error) {
	return nil, errNoEntities
}

// QueryEntities is not served.
func (s *Server) QueryEntities(context.Context, *pb.QueryEntitiesRequest) (*pb.QueryEntitiesResponse, error) {
	return nil, errNoEntities
}

// CleanEntityStorage is not served.
func (s *Server) CleanEntityStorage(context.Context, *pb.CleanEntityStorageRequest) (*pb.CleanEntityStorageResponse, error) {
	return nil, errNoEntities
}

// CompleteEntityTask is not served.
func (s *Server) CompleteEntityTask(context.Context, *pb.EntityBatchResult) (*pb.CompleteTaskResponse, error) {
	return nil, errNoEntities
}

// AbandonTaskEntityWorkItem is not served.
func (s *Server) AbandonTaskEntityWorkItem(context.Context, *pb.AbandonEntityTaskRequest) (*pb.AbandonEntityTaskResponse, error) {
	return nil, errNoEntities
}

// CreateTaskHub is not served: Soloist's store is its etcd prefix, made by
// the first write.
func (s *Server) CreateTaskHub(context.Context, *pb.CreateTaskHubRequest) (*pb.CreateTaskHubResponse, error) {
	return nil, status.Error(codes.Unimplemented,
		"Soloist has no task hubs to create: its store is the etcd prefix of the node (--etcd-prefix), which needs no setup")
}

// DeleteTaskHub is not served.
func (s *Server) DeleteTaskHub(context.Context, *pb.DeleteTaskHubRequest) (*pb.DeleteTaskHubResponse, error) {
	return nil, status.Error(codes.Unimplemented,
		"Soloist has no task hubs to delete: purge instances with PurgeInstances (a filter purges many)")
}
