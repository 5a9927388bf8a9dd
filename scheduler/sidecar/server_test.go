package sidecar_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func TestAuth(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{keys: []string{"k1", "k2"}})
	_, err := s.stub.Hello(callCtx(t), &emptypb.Empty{})
	wantCode(t, err, codes.Unauthenticated, "authorization: Bearer")
	_, err = s.stub.Hello(callCtx(t, "wrong"), &emptypb.Empty{})
	wantCode(t, err, codes.Unauthenticated)
	// A refused call is refused before its request is looked at.
	_, err = s.stub.GetInstance(callCtx(t, "k3"), &pb.GetInstanceRequest{InstanceId: "bad/id"})
	wantCode(t, err, codes.Unauthenticated)
	if _, err := s.stub.Hello(callCtx(t, "k2"), &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello with a valid key: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-functions-key", "k1")
	if _, err := s.stub.Hello(ctx, &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello with x-functions-key: %v", err)
	}
	// Streams are checked too.
	stream, err := s.stub.GetWorkItems(callCtx(t), &pb.GetWorkItemsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unauthenticated)
}

func TestEntitiesUnimplemented(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{})
	_, err := s.stub.SignalEntity(callCtx(t), &pb.SignalEntityRequest{InstanceId: "@counter@a", Name: "add"})
	wantCode(t, err, codes.Unimplemented, "durable entities")
	_, err = s.stub.QueryEntities(callCtx(t), &pb.QueryEntitiesRequest{})
	wantCode(t, err, codes.Unimplemented, "durable entities")
	_, err = s.stub.CreateTaskHub(callCtx(t), &pb.CreateTaskHubRequest{})
	wantCode(t, err, codes.Unimplemented, "task hubs")
	if _, err := s.stub.Hello(callCtx(t), &emptypb.Empty{}); err != nil {
		t.Fatalf("Hello after refusals: %v", err)
	}
}
