package sidecartest

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// Start starts an instance of name with the ID and JSON input ("" for
// none) through StartInstance, as an SDK client does.
func Start(ctx context.Context, conn grpc.ClientConnInterface, name, id, input string) error {
	req := &pb.CreateInstanceRequest{Name: name, InstanceId: id}
	if input != "" {
		req.Input = wrapperspb.String(input)
	}
	if _, err := pb.NewTaskHubSidecarServiceClient(conn).StartInstance(ctx, req); err != nil {
		return fmt.Errorf("sidecartest: StartInstance %s: %w", id, err)
	}
	return nil
}

// Instance is what WaitForCompletion returns.
type Instance struct {
	// Status is the runtime status without the protocol's prefix:
	// "COMPLETED", "FAILED", "TERMINATED".
	Status string
	Output string
	// Failure is the failure message of a failed instance.
	Failure string
}

// WaitForCompletion waits through WaitForInstanceCompletion until the
// instance has ended, or ctx ends.
func WaitForCompletion(ctx context.Context, conn grpc.ClientConnInterface, id string) (Instance, error) {
	res, err := pb.NewTaskHubSidecarServiceClient(conn).WaitForInstanceCompletion(ctx,
		&pb.GetInstanceRequest{InstanceId: id, GetInputsAndOutputs: true})
	if err != nil {
		return Instance{}, fmt.Errorf("sidecartest: WaitForInstanceCompletion %s: %w", id, err)
	}
	st := res.GetOrchestrationState()
	return Instance{
		Status:  strings.TrimPrefix(st.GetOrchestrationStatus().String(), "ORCHESTRATION_STATUS_"),
		Output:  st.GetOutput().GetValue(),
		Failure: st.GetFailureDetails().GetErrorMessage(),
	}, nil
}
