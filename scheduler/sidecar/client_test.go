package sidecar_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

const (
	stPending    = pb.OrchestrationStatus_ORCHESTRATION_STATUS_PENDING
	stRunning    = pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING
	stSuspended  = pb.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED
	stCompleted  = pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED
	stFailed     = pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED
	stTerminated = pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED
	stCanceled   = pb.OrchestrationStatus_ORCHESTRATION_STATUS_CANCELED
)

func TestStartAndGetInstance(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{}) // no node: instances stay Pending
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	resp, err := s.stub.StartInstance(callCtx(t), &pb.CreateInstanceRequest{
		Name: "Anything", InstanceId: "one", Input: wrapperspb.String(`{"city":"Tokyo"}`),
		Version: wrapperspb.String("v2"), Tags: map[string]string{"team": "blue"},
		ScheduledStartTimestamp: timestamppb.New(at),
		ParentTraceContext:      &pb.TraceContext{TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetInstanceId() != "one" {
		t.Fatalf("instance ID %q, want one", resp.GetInstanceId())
	}
	st := s.get(t, "one")
	if st.GetName() != "Anything" || st.GetOrchestrationStatus() != stPending || st.GetVersion().GetValue() != "v2" ||
		st.GetTags()["team"] != "blue" || !st.GetScheduledStartTimestamp().AsTime().Equal(at) ||
		st.GetInput().GetValue() != `{"city":"Tokyo"}` || st.GetOutput() != nil || st.GetExecutionId().GetValue() == "" ||
		st.GetCreatedTimestamp() == nil || st.GetCompletedTimestamp() != nil {
		t.Fatalf("state %v", st)
	}
	// Without inputs and outputs.
	bare, err := s.stub.GetInstance(callCtx(t), &pb.GetInstanceRequest{InstanceId: "one"})
	if err != nil || !bare.GetExists() || bare.GetOrchestrationState().GetInput() != nil || bare.GetOrchestrationState().GetName() != "Anything" {
		t.Fatalf("GetInstance without inputs: %v, %v", bare, err)
	}
	// No ID: one is generated and returned.
	gen, err := s.stub.StartInstance(callCtx(t), &pb.CreateInstanceRequest{Name: "Anything"})
	if err != nil || gen.GetInstanceId() == "" || s.get(t, gen.GetInstanceId()) == nil {
		t.Fatalf("start without ID: %v, %v", gen, err)
	}
	// A missing instance is exists=false, not an error.
	missing, err := s.stub.GetInstance(callCtx(t), &pb.GetInstanceRequest{InstanceId: "nobody"})
	if err != nil || missing.GetExists() {
		t.Fatalf("missing instance: %v, %v", missing, err)
	}
}

func TestStartInvalid(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{})
	cases := []struct {
		name string
		req  *pb.CreateInstanceRequest
		want string
	}{
		{"no name", &pb.CreateInstanceRequest{InstanceId: "x"}, "name is empty"},
		{"bad ID", &pb.CreateInstanceRequest{Name: "F", InstanceId: "a/b"}, "instance ID"},
		{"bad JSON", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", Input: wrapperspb.String("{nope")}, "input"},
		{"large input", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", Input: wrapperspb.String(`"` + strings.Repeat("a", 20<<10) + `"`)}, "input"},
		{"bad tag", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", Tags: map[string]string{"": "v"}}, "tag"},
		{"bad traceparent", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", ParentTraceContext: &pb.TraceContext{TraceParent: "nonsense"}}, "trace"},
		{"bad action", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", OrchestrationIdReusePolicy: &pb.OrchestrationIdReusePolicy{Action: 7}}, "action"},
		{"bad status", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", OrchestrationIdReusePolicy: &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{42}}}, "status 42"},
		{"bad time", &pb.CreateInstanceRequest{Name: "F", InstanceId: "x", ScheduledStartTimestamp: &timestamppb.Timestamp{Nanos: -1}}, "scheduledStartTimestamp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.stub.StartInstance(callCtx(t), c.req)
			wantCode(t, err, codes.InvalidArgument, c.want)
		})
	}
	if s.get(t, "x") != nil {
		t.Fatal("a refused start wrote the instance")
	}
}

func TestHugeAndMalformedRequests(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{})
	// Above 4 x 16 KiB + 64 KiB: refused before it is decoded.
	_, err := s.stub.StartInstance(callCtx(t), &pb.CreateInstanceRequest{Name: "F", InstanceId: "huge",
		Input: wrapperspb.String(`"` + strings.Repeat("a", 200<<10) + `"`)})
	wantCode(t, err, codes.ResourceExhausted)
	// Bytes that are no CreateInstanceRequest.
	err = s.conn.Invoke(callCtx(t), "/TaskHubSidecarService/StartInstance", &rawMessage{0xff, 0xff, 0xff, 0x0f},
		new(rawMessage), grpc.ForceCodecV2(rawCodec{}))
	if c := status.Code(err); c != codes.Internal && c != codes.InvalidArgument {
		t.Fatalf("malformed request: %v", err)
	}
	// An unknown method.
	err = s.conn.Invoke(callCtx(t), "/TaskHubSidecarService/NoSuchMethod", &rawMessage{}, new(rawMessage), grpc.ForceCodecV2(rawCodec{}))
	wantCode(t, err, codes.Unimplemented)
	// The server still serves.
	if _, err := s.stub.Hello(callCtx(t), &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if s.get(t, "huge") != nil {
		t.Fatal("a refused start wrote the instance")
	}
}

// outcome of a start in the reuse-policy matrix.
type startOutcome string

const (
	started  startOutcome = "started"  // a new execution
	exists   startOutcome = "exists"   // ALREADY_EXISTS, nothing changed
	ignored  startOutcome = "ignored"  // OK, nothing changed
	replaced startOutcome = "replaced" // a new execution replaced the old one
)

func TestReusePolicyMatrix(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	all := []pb.OrchestrationStatus{stRunning, stPending, stSuspended, stCompleted, stFailed, stTerminated}
	terminal := []pb.OrchestrationStatus{stCompleted, stFailed, stTerminated}
	policies := []struct {
		name string
		p    *pb.OrchestrationIdReusePolicy
	}{
		{"none", nil},
		{"replace nothing", &pb.OrchestrationIdReusePolicy{}},
		{"replace all", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: all}},
		{"replace terminal", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: terminal}},
		{"replace failed", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{stFailed, stCanceled}}},
		{"replace completed and running", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{stCompleted, stRunning}}},
		{"go: ignore running", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{stRunning, stPending, stSuspended}, Action: pb.CreateOrchestrationAction_IGNORE}},
		{"go: ignore completed", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{stCompleted}, Action: pb.CreateOrchestrationAction_IGNORE}},
		{"go: ignore all", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: all, Action: pb.CreateOrchestrationAction_IGNORE}},
		{"go: terminate running and failed", &pb.OrchestrationIdReusePolicy{ReplaceableStatus: []pb.OrchestrationStatus{stRunning, stFailed}, Action: pb.CreateOrchestrationAction_TERMINATE}},
	}
	// want[policy][existing status]; "" is no existing instance.
	existing := []pb.OrchestrationStatus{-1, stRunning, stSuspended, stCompleted, stFailed, stTerminated}
	want := map[string][]startOutcome{
		"none":                             {started, exists, exists, replaced, replaced, replaced},
		"replace nothing":                  {started, exists, exists, exists, exists, exists},
		"replace all":                      {started, replaced, replaced, replaced, replaced, replaced},
		"replace terminal":                 {started, exists, exists, replaced, replaced, replaced},
		"replace failed":                   {started, exists, exists, exists, replaced, exists},
		"replace completed and running":    {started, replaced, exists, replaced, exists, exists},
		"go: ignore running":               {started, ignored, ignored, exists, exists, exists},
		"go: ignore completed":             {started, exists, exists, ignored, exists, exists},
		"go: ignore all":                   {started, ignored, ignored, ignored, ignored, ignored},
		"go: terminate running and failed": {started, replaced, exists, exists, replaced, exists},
	}
	for _, p := range policies {
		for i, ex := range existing {
			id := strings.ReplaceAll(p.name, " ", "_") + "-" + strings.TrimPrefix(ex.String(), "ORCHESTRATION_STATUS_")
			if ex == -1 {
				id = strings.ReplaceAll(p.name, " ", "_") + "-none"
			}
			t.Run(id, func(t *testing.T) {
				before := prepare(t, s, id, ex)
				req := &pb.CreateInstanceRequest{Name: "Wait", InstanceId: id, OrchestrationIdReusePolicy: p.p}
				_, err := s.stub.StartInstance(callCtx(t), req)
				after := s.get(t, id)
				var got startOutcome
				switch {
				case status.Code(err) == codes.AlreadyExists:
					if !strings.Contains(status.Convert(err).Message(), "orchestration instance already exists") {
						t.Fatalf("message %q", status.Convert(err).Message())
					}
					got = exists
				case err != nil:
					t.Fatalf("start: %v", err)
				case before == nil:
					got = started
				case after.GetExecutionId().GetValue() == before.GetExecutionId().GetValue():
					got = ignored
				default:
					got = replaced
				}
				if got != want[p.name][i] {
					t.Fatalf("policy %s on %v: %s, want %s", p.name, ex, got, want[p.name][i])
				}
				if (got == exists || got == ignored) && (after.GetExecutionId().GetValue() != before.GetExecutionId().GetValue() ||
					after.GetOrchestrationStatus() != before.GetOrchestrationStatus()) {
					t.Fatalf("a refused or ignored start changed the instance: %v -> %v", before, after)
				}
				if got == replaced && after.GetOrchestrationStatus().String() == stTerminated.String() {
					t.Fatalf("replaced, yet %v", after)
				}
			})
		}
	}
}

// prepare makes instance id have status ex (-1: no instance) and returns
// its state.
func prepare(t *testing.T, s *server, id string, ex pb.OrchestrationStatus) *pb.OrchestrationState {
	t.Helper()
	ctx := callCtx(t)
	switch ex {
	case -1:
		return nil
	case stRunning:
		s.start(t, "Wait", id, "")
	case stSuspended:
		s.start(t, "Wait", id, "")
		s.waitStatus(t, id, stRunning)
		if _, err := s.stub.SuspendInstance(ctx, &pb.SuspendRequest{InstanceId: id}); err != nil {
			t.Fatal(err)
		}
	case stCompleted:
		s.start(t, "Hello", id, `"x"`)
	case stFailed:
		s.start(t, "Fail", id, "")
	case stTerminated:
		s.start(t, "Wait", id, "")
		if _, err := s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: id}); err != nil {
			t.Fatal(err)
		}
	}
	return s.waitStatus(t, id, ex)
}

func TestConcurrentCheckThenStart(t *testing.T) {
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	b := v.startServer(serverOpts{reg: testRegistry(t)})
	const clients = 64
	var (
		mu      sync.Mutex
		results = map[string]int{}
		wg      sync.WaitGroup
		gate    = make(chan struct{})
	)
	for i := range clients {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			// The seed's singleton: start unless an instance runs.
			ctx := callCtx(t)
			resp, err := s.stub.GetInstance(ctx, &pb.GetInstanceRequest{InstanceId: "singleton"})
			outcome := ""
			switch {
			case err != nil:
				outcome = "get error: " + err.Error()
			case resp.GetExists() && resp.GetOrchestrationState().GetOrchestrationStatus() != stCompleted &&
				resp.GetOrchestrationState().GetOrchestrationStatus() != stFailed &&
				resp.GetOrchestrationState().GetOrchestrationStatus() != stTerminated:
				outcome = "saw it"
			default:
				_, err := s.stub.StartInstance(ctx, &pb.CreateInstanceRequest{Name: "Wait", InstanceId: "singleton"})
				switch {
				case err == nil:
					outcome = "started"
				case status.Code(err) == codes.AlreadyExists && strings.Contains(err.Error(), "orchestration instance already exists"):
					outcome = "told it exists"
				default:
					outcome = "start error: " + err.Error()
				}
			}
			mu.Lock()
			results[outcome]++
			mu.Unlock()
		}()
	}
	close(gate)
	wg.Wait()
	if results["started"] != 1 || results["started"]+results["saw it"]+results["told it exists"] != clients {
		t.Fatalf("outcomes %v: want exactly one started and every other told it exists", results)
	}
	t.Logf("outcomes: %v", results)
	// One execution: it runs, and completes once, with the event's data.
	a.waitStatus(t, "singleton", stRunning)
	if _, err := b.stub.RaiseEvent(callCtx(t), &pb.RaiseEventRequest{InstanceId: "singleton", Name: "go", Input: wrapperspb.String(`1`)}); err != nil {
		t.Fatal(err)
	}
	if st := a.waitDone(t, "singleton"); st.GetOrchestrationStatus() != stCompleted || st.GetOutput().GetValue() != "1" {
		t.Fatalf("singleton ended %v", st)
	}
}

func TestLifecycleRPCs(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	ctx := callCtx(t)

	// Start, wait for the start, raise, wait for the completion.
	s.start(t, "Wait", "w1", "")
	started, err := s.stub.WaitForInstanceStart(ctx, &pb.GetInstanceRequest{InstanceId: "w1"})
	if err != nil || started.GetOrchestrationState().GetOrchestrationStatus() == stPending {
		t.Fatalf("WaitForInstanceStart: %v, %v", started, err)
	}
	if _, err := s.stub.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: "w1", Name: "go", Input: wrapperspb.String(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "w1"); st.GetOrchestrationStatus() != stCompleted || st.GetOutput().GetValue() != `{"n":1}` ||
		st.GetCompletedTimestamp() == nil {
		t.Fatalf("w1 ended %v", st)
	}
	// A terminal instance refuses events, clearly.
	_, err = s.stub.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: "w1", Name: "go"})
	wantCode(t, err, codes.FailedPrecondition, "Completed")

	// Suspend, raise while suspended, resume: it completes.
	s.start(t, "Wait", "w2", "")
	s.waitStatus(t, "w2", stRunning)
	if _, err := s.stub.SuspendInstance(ctx, &pb.SuspendRequest{InstanceId: "w2", Reason: wrapperspb.String("pause")}); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, "w2", stSuspended)
	if _, err := s.stub.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: "w2", Name: "go", Input: wrapperspb.String(`2`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if st := s.get(t, "w2"); st.GetOrchestrationStatus() != stSuspended {
		t.Fatalf("a suspended instance moved on: %v", st)
	}
	if _, err := s.stub.ResumeInstance(ctx, &pb.ResumeRequest{InstanceId: "w2", Reason: wrapperspb.String("go on")}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "w2"); st.GetOrchestrationStatus() != stCompleted || st.GetOutput().GetValue() != "2" {
		t.Fatalf("w2 ended %v", st)
	}

	// Terminate with an output; terminating again is a no-op.
	s.start(t, "Wait", "w3", "")
	if _, err := s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: "w3", Output: wrapperspb.String(`"bye"`)}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "w3"); st.GetOrchestrationStatus() != stTerminated || st.GetOutput().GetValue() != `"bye"` {
		t.Fatalf("w3 ended %v", st)
	}
	if _, err := s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: "w3"}); err != nil {
		t.Fatalf("terminate a terminated instance: %v", err)
	}

	// Terminate recursive ends the child; without, the child runs on.
	for _, rec := range []bool{true, false} {
		id := "p-rec"
		if !rec {
			id = "p-flat"
		}
		s.start(t, "Parent", id, "")
		s.waitStatus(t, id+"-child", stRunning)
		if _, err := s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: id, Recursive: rec}); err != nil {
			t.Fatal(err)
		}
		s.waitStatus(t, id, stTerminated)
		if rec {
			s.waitStatus(t, id+"-child", stTerminated)
		} else if st := s.get(t, id+"-child"); st.GetOrchestrationStatus() != stRunning {
			t.Fatalf("non-recursive terminate ended the child: %v", st)
		}
	}

	// Restart under the same ID: a new execution with the same input.
	s.start(t, "Hello", "h1", `"Tokyo"`)
	first := s.waitDone(t, "h1")
	if first.GetOutput().GetValue() != `"Hello Tokyo"` {
		t.Fatalf("h1 output %v", first.GetOutput())
	}
	rs, err := s.stub.RestartInstance(ctx, &pb.RestartInstanceRequest{InstanceId: "h1"})
	if err != nil || rs.GetInstanceId() != "h1" {
		t.Fatalf("restart: %v, %v", rs, err)
	}
	again := s.waitDone(t, "h1")
	if again.GetExecutionId().GetValue() == first.GetExecutionId().GetValue() || again.GetOutput().GetValue() != `"Hello Tokyo"` {
		t.Fatalf("restart: %v after %v", again, first)
	}
	rs, err = s.stub.RestartInstance(ctx, &pb.RestartInstanceRequest{InstanceId: "h1", RestartWithNewInstanceId: true})
	if err != nil || rs.GetInstanceId() == "h1" || rs.GetInstanceId() == "" {
		t.Fatalf("restart with a new ID: %v, %v", rs, err)
	}
	if st := s.waitDone(t, rs.GetInstanceId()); st.GetOutput().GetValue() != `"Hello Tokyo"` {
		t.Fatalf("restarted as new: %v", st)
	}
	// An active instance refuses a restart under its ID.
	s.start(t, "Wait", "w4", "")
	_, err = s.stub.RestartInstance(ctx, &pb.RestartInstanceRequest{InstanceId: "w4"})
	wantCode(t, err, codes.AlreadyExists, "orchestration instance already exists")

	// Rewind a failed instance: the failed activity runs again.
	s.start(t, "Flaky", "f1", "")
	if st := s.waitDone(t, "f1"); st.GetOrchestrationStatus() != stFailed || st.GetFailureDetails().GetErrorMessage() == "" {
		t.Fatalf("f1 ended %v", st)
	}
	if _, err := s.stub.RewindInstance(ctx, &pb.RewindInstanceRequest{InstanceId: "f1", Reason: wrapperspb.String("retry")}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "f1"); st.GetOrchestrationStatus() != stCompleted || st.GetOutput().GetValue() != `"fine"` {
		t.Fatalf("f1 after rewind %v", st)
	}
	_, err = s.stub.RewindInstance(ctx, &pb.RewindInstanceRequest{InstanceId: "f1"})
	wantCode(t, err, codes.FailedPrecondition, "Failed")

	// Missing instances: NOT_FOUND.
	_, err = s.stub.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: "ghost", Name: "go"})
	wantCode(t, err, codes.NotFound, "ghost")
	_, err = s.stub.SuspendInstance(ctx, &pb.SuspendRequest{InstanceId: "ghost"})
	wantCode(t, err, codes.NotFound)
	_, err = s.stub.TerminateInstance(ctx, &pb.TerminateRequest{InstanceId: "ghost"})
	wantCode(t, err, codes.NotFound)
	_, err = s.stub.RewindInstance(ctx, &pb.RewindInstanceRequest{InstanceId: "ghost"})
	wantCode(t, err, codes.NotFound)
	_, err = s.stub.RestartInstance(ctx, &pb.RestartInstanceRequest{InstanceId: "ghost"})
	wantCode(t, err, codes.NotFound)
	w, err := s.stub.WaitForInstanceCompletion(ctx, &pb.GetInstanceRequest{InstanceId: "ghost"})
	if err != nil || w.GetExists() {
		t.Fatalf("wait for a missing instance: %v, %v", w, err)
	}
	_, err = s.stub.RaiseEvent(ctx, &pb.RaiseEventRequest{InstanceId: "w4"})
	wantCode(t, err, codes.InvalidArgument, "event name")
}

func TestWaitEndsOnDeadlineAndShutdown(t *testing.T) {
	v := newEnv(t)
	s := v.startServer(serverOpts{})
	s.start(t, "Nobody", "p1", "")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := s.stub.WaitForInstanceCompletion(ctx, &pb.GetInstanceRequest{InstanceId: "p1"})
	wantCode(t, err, codes.DeadlineExceeded)

	errc := make(chan error, 1)
	go func() {
		_, err := s.stub.WaitForInstanceStart(callCtx(t), &pb.GetInstanceRequest{InstanceId: "p1"})
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	begun := time.Now()
	s.srv.Shutdown(sctx)
	if d := time.Since(begun); d > 3*time.Second {
		t.Fatalf("Shutdown waited %s for a wait in progress", d)
	}
	wantCode(t, <-errc, codes.Unavailable, "shutting down")
}
