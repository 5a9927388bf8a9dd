package sidecar_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

func TestQueryAndListInstanceIds(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	ctx := callCtx(t)
	for _, id := range []string{"q-a", "q-b", "q-c"} {
		s.start(t, "Hello", id, `"`+id+`"`)
		s.waitDone(t, id)
	}
	s.start(t, "Wait", "q-d", "")
	s.waitStatus(t, "q-d", stRunning)
	s.start(t, "Hello", "other", `"x"`)
	s.waitDone(t, "other")

	// Paged, by prefix, with inputs and outputs.
	var ids []string
	var token *wrapperspb.StringValue
	for page := 0; ; page++ {
		resp, err := s.stub.QueryInstances(ctx, &pb.QueryInstancesRequest{Query: &pb.InstanceQuery{
			InstanceIdPrefix: wrapperspb.String("q-"), MaxInstanceCount: 2, ContinuationToken: token, FetchInputsAndOutputs: true}})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range resp.GetOrchestrationState() {
			ids = append(ids, st.GetInstanceId())
			if st.GetInstanceId() == "q-a" && (st.GetInput().GetValue() != `"q-a"` || st.GetOutput().GetValue() != `"Hello q-a"`) {
				t.Fatalf("q-a: %v", st)
			}
		}
		if token = resp.GetContinuationToken(); token == nil {
			break
		}
		if page > 3 {
			t.Fatal("the pages do not end")
		}
	}
	if !slices.Equal(ids, []string{"q-a", "q-b", "q-c", "q-d"}) {
		t.Fatalf("query by prefix: %v", ids)
	}
	// By status; CANCELED alone matches nothing.
	resp, err := s.stub.QueryInstances(ctx, &pb.QueryInstancesRequest{Query: &pb.InstanceQuery{
		RuntimeStatus: []pb.OrchestrationStatus{stRunning}}})
	if err != nil || len(resp.GetOrchestrationState()) != 1 || resp.GetOrchestrationState()[0].GetInstanceId() != "q-d" ||
		resp.GetOrchestrationState()[0].GetInput() != nil {
		t.Fatalf("query running: %v, %v", resp, err)
	}
	resp, err = s.stub.QueryInstances(ctx, &pb.QueryInstancesRequest{Query: &pb.InstanceQuery{
		RuntimeStatus: []pb.OrchestrationStatus{stCanceled}}})
	if err != nil || len(resp.GetOrchestrationState()) != 0 {
		t.Fatalf("query canceled: %v, %v", resp, err)
	}
	_, err = s.stub.QueryInstances(ctx, &pb.QueryInstancesRequest{Query: &pb.InstanceQuery{MaxInstanceCount: 5000}})
	wantCode(t, err, codes.InvalidArgument, "maxInstanceCount")
	_, err = s.stub.QueryInstances(ctx, &pb.QueryInstancesRequest{Query: &pb.InstanceQuery{ContinuationToken: wrapperspb.String("garbage")}})
	wantCode(t, err, codes.InvalidArgument, "continuation token")

	// The list-IDs form: completed ones.
	list, err := s.stub.ListInstanceIds(ctx, &pb.ListInstanceIdsRequest{RuntimeStatus: []pb.OrchestrationStatus{stCompleted}, PageSize: 10})
	if err != nil || !slices.Equal(list.GetInstanceIds(), []string{"other", "q-a", "q-b", "q-c"}) || list.GetLastInstanceKey() != nil {
		t.Fatalf("list IDs: %v, %v", list, err)
	}
	list, err = s.stub.ListInstanceIds(ctx, &pb.ListInstanceIdsRequest{PageSize: 2})
	if err != nil || len(list.GetInstanceIds()) != 2 || list.GetLastInstanceKey() == nil {
		t.Fatalf("list IDs, a page: %v, %v", list, err)
	}
	next, err := s.stub.ListInstanceIds(ctx, &pb.ListInstanceIdsRequest{PageSize: 10, LastInstanceKey: list.GetLastInstanceKey()})
	if err != nil || len(next.GetInstanceIds()) != 3 || slices.Contains(next.GetInstanceIds(), list.GetInstanceIds()[1]) {
		t.Fatalf("list IDs, the next page: %v, %v", next, err)
	}
}

func TestPurgeInstances(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	ctx := callCtx(t)
	for _, id := range []string{"a", "b", "c", "d"} {
		s.start(t, "Hello", id, `"x"`)
		s.waitDone(t, id)
	}
	s.start(t, "Fail", "f", "")
	s.waitDone(t, "f")
	s.start(t, "Wait", "running", "")
	s.waitStatus(t, "running", stRunning)

	purge := func(req *pb.PurgeInstancesRequest) int32 {
		t.Helper()
		resp, err := s.stub.PurgeInstances(ctx, req)
		if err != nil {
			t.Fatalf("purge %v: %v", req, err)
		}
		if !resp.GetIsComplete().GetValue() {
			t.Fatalf("purge %v: not complete", req)
		}
		return resp.GetDeletedInstanceCount()
	}
	if n := purge(&pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_InstanceId{InstanceId: "a"}}); n != 1 || s.get(t, "a") != nil {
		t.Fatalf("purge one: %d", n)
	}
	if n := purge(&pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_InstanceId{InstanceId: "a"}}); n != 0 {
		t.Fatalf("purge a missing one: %d", n)
	}
	_, err := s.stub.PurgeInstances(ctx, &pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_InstanceId{InstanceId: "running"}})
	wantCode(t, err, codes.FailedPrecondition, "terminate it")
	if n := purge(&pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_InstanceBatch{InstanceBatch: &pb.InstanceBatch{InstanceIds: []string{"b", "c", "zz"}}}}); n != 2 {
		t.Fatalf("purge a batch: %d", n)
	}
	if n := purge(&pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_PurgeInstanceFilter{PurgeInstanceFilter: &pb.PurgeInstanceFilter{
		RuntimeStatus: []pb.OrchestrationStatus{stFailed}}}}); n != 1 || s.get(t, "f") != nil || s.get(t, "d") == nil {
		t.Fatalf("purge by filter: %d", n)
	}
	_, err = s.stub.PurgeInstances(ctx, &pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_PurgeInstanceFilter{PurgeInstanceFilter: &pb.PurgeInstanceFilter{
		RuntimeStatus: []pb.OrchestrationStatus{stRunning}}}})
	wantCode(t, err, codes.InvalidArgument, "terminal")
	_, err = s.stub.PurgeInstances(ctx, &pb.PurgeInstancesRequest{})
	wantCode(t, err, codes.InvalidArgument, "nothing to purge")

	// Recursive: the parent and its child.
	s.start(t, "Parent", "p", "")
	s.waitStatus(t, "p-child", stRunning)
	if _, err := s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: "p", Recursive: true}); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, "p-child", stTerminated)
	if n := purge(&pb.PurgeInstancesRequest{Request: &pb.PurgeInstancesRequest_InstanceId{InstanceId: "p"}, Recursive: true}); n != 2 || s.get(t, "p-child") != nil {
		t.Fatalf("purge recursive: %d", n)
	}
}

func TestStreamInstanceHistory(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	s.start(t, "Hello", "h", `"Tokyo"`)
	done := s.waitDone(t, "h")
	_, events := historyKinds(t, s, "h")
	var kinds []string
	for _, ev := range events {
		if ev.GetTimestamp() == nil {
			t.Fatalf("event without a timestamp: %v", ev)
		}
		switch e := ev.GetEventType().(type) {
		case *pb.HistoryEvent_OrchestratorStarted:
			kinds = append(kinds, "orchestratorStarted")
		case *pb.HistoryEvent_ExecutionStarted:
			kinds = append(kinds, "executionStarted")
			if e.ExecutionStarted.GetName() != "Hello" || e.ExecutionStarted.GetInput().GetValue() != `"Tokyo"` ||
				e.ExecutionStarted.GetOrchestrationInstance().GetInstanceId() != "h" ||
				e.ExecutionStarted.GetOrchestrationInstance().GetExecutionId().GetValue() != done.GetExecutionId().GetValue() || ev.GetEventId() != -1 {
				t.Fatalf("executionStarted %v", ev)
			}
		case *pb.HistoryEvent_TaskScheduled:
			kinds = append(kinds, "taskScheduled")
			if e.TaskScheduled.GetName() != "Hello" || ev.GetEventId() != 0 {
				t.Fatalf("taskScheduled %v", ev)
			}
		case *pb.HistoryEvent_TaskCompleted:
			kinds = append(kinds, "taskCompleted")
			if e.TaskCompleted.GetTaskScheduledId() != 0 || e.TaskCompleted.GetResult().GetValue() != `"Hello Tokyo"` || ev.GetEventId() != -1 {
				t.Fatalf("taskCompleted %v", ev)
			}
		case *pb.HistoryEvent_ExecutionCompleted:
			kinds = append(kinds, "executionCompleted")
			if e.ExecutionCompleted.GetOrchestrationStatus() != stCompleted || e.ExecutionCompleted.GetResult().GetValue() != `"Hello Tokyo"` {
				t.Fatalf("executionCompleted %v", ev)
			}
		default:
			t.Fatalf("unexpected event %v", ev)
		}
	}
	want := []string{"orchestratorStarted", "executionStarted", "taskScheduled", "orchestratorStarted", "taskCompleted", "executionCompleted"}
	if !slices.Equal(kinds, want) {
		t.Fatalf("history %v, want %v", kinds, want)
	}
	ghost, err := s.stub.StreamInstanceHistory(callCtx(t), &pb.StreamInstanceHistoryRequest{InstanceId: "ghost"})
	if err == nil {
		_, err = ghost.Recv()
	}
	wantCode(t, err, codes.NotFound, "ghost")
}
