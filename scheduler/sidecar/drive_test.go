package sidecar_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// scriptWorker is a Durable Task worker written out step by step by a
// test: a GetWorkItems stream whose items (health pings left out) arrive
// on items, answered with the stub's Complete* calls.
type scriptWorker struct {
	stub   pb.TaskHubSidecarServiceClient
	items  chan *pb.WorkItem
	cancel context.CancelFunc
	ended  chan struct{}
}

// connectWorker opens a worker's stream on s and waits until s runs the
// orchestration orch for it.
func connectWorker(t *testing.T, s *server, req *pb.GetWorkItemsRequest, orch string) *scriptWorker {
	t.Helper()
	w := openWorker(t, s, req)
	deadline := time.Now().Add(10 * time.Second)
	for !s.srv.Remote().Serves(orch, "") {
		if time.Now().After(deadline) {
			t.Fatalf("the server does not serve %s after the worker connected", orch)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// openWorker opens a worker's stream on s.
func openWorker(t *testing.T, s *server, req *pb.GetWorkItemsRequest) *scriptWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.stub.GetWorkItems(ctx, req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &scriptWorker{stub: s.stub, items: make(chan *pb.WorkItem, 16), cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		for {
			it, err := stream.Recv()
			if err != nil {
				return
			}
			if it.GetHealthPing() == nil {
				w.items <- it
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

// close hangs up the worker's stream and waits until it has ended.
func (w *scriptWorker) close() {
	w.cancel()
	<-w.ended
}

// next waits for the worker's next work item.
func (w *scriptWorker) next(t *testing.T) *pb.WorkItem {
	t.Helper()
	select {
	case it := <-w.items:
		return it
	case <-time.After(20 * time.Second):
		t.Fatal("no work item within 20s")
		return nil
	}
}

// nextStep waits for an orchestration step.
func (w *scriptWorker) nextStep(t *testing.T) (*pb.OrchestratorRequest, string) {
	t.Helper()
	it := w.next(t)
	if it.GetOrchestratorRequest() == nil {
		t.Fatalf("work item %v, want an orchestrator request", it)
	}
	return it.GetOrchestratorRequest(), it.GetCompletionToken()
}

// nextActivity waits for an activity work item.
func (w *scriptWorker) nextActivity(t *testing.T) (*pb.ActivityRequest, string) {
	t.Helper()
	it := w.next(t)
	if it.GetActivityRequest() == nil {
		t.Fatalf("work item %v, want an activity request", it)
	}
	return it.GetActivityRequest(), it.GetCompletionToken()
}

// answer completes a step with actions (and a custom status, if not "").
func (w *scriptWorker) answer(t *testing.T, id, tok, custom string, actions ...*pb.OrchestratorAction) error {
	t.Helper()
	res := &pb.OrchestratorResponse{InstanceId: id, CompletionToken: tok, Actions: actions}
	if custom != "" {
		res.CustomStatus = wrapperspb.String(custom)
	}
	_, err := w.stub.CompleteOrchestratorTask(callCtx(t), res)
	return err
}

func scheduleTask(id int32, name, input string) *pb.OrchestratorAction {
	return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_ScheduleTask{
		ScheduleTask: &pb.ScheduleTaskAction{Name: name, Input: wrapperspb.String(input)}}}
}

func createTimer(id int32, at time.Time) *pb.OrchestratorAction {
	return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_CreateTimer{
		CreateTimer: &pb.CreateTimerAction{FireAt: timestamppb.New(at)}}}
}

func completeWith(id int32, result string) *pb.OrchestratorAction {
	return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{
		CompleteOrchestration: &pb.CompleteOrchestrationAction{
			OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED, Result: wrapperspb.String(result)}}}
}

// startedWith fails unless the events hold ExecutionStarted of name with input.
func startedWith(t *testing.T, evs []*pb.HistoryEvent, name, input string) {
	t.Helper()
	for _, ev := range evs {
		if s := ev.GetExecutionStarted(); s != nil {
			if s.GetName() != name || s.GetInput().GetValue() != input {
				t.Fatalf("ExecutionStarted %v, want %s with %s", s, name, input)
			}
			return
		}
	}
	t.Fatalf("no ExecutionStarted in %v", evs)
}

// A worker runs an orchestration with an activity through the node: the
// step with ExecutionStarted and the input, the activity as an
// ActivityRequest, the next step with its TaskCompleted, the output.
func TestWorkerRunsOrchestration(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WGreet")
	s.start(t, "WGreet", "g1", `"Tokyo"`)

	req, tok := w.nextStep(t)
	if req.GetInstanceId() != "g1" || len(req.GetPastEvents()) != 0 {
		t.Fatalf("first step %v", req)
	}
	startedWith(t, req.GetNewEvents(), "WGreet", `"Tokyo"`)
	if err := w.answer(t, "g1", tok, `"greeting"`, scheduleTask(0, "Say", `"Tokyo"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.get(t, "g1"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING || st.GetCustomStatus().GetValue() != `"greeting"` {
		t.Fatalf("after the first step: %v custom %v", st.GetOrchestrationStatus(), st.GetCustomStatus())
	}

	act, atok := w.nextActivity(t)
	if act.GetName() != "Say" || act.GetTaskId() != 0 || act.GetInput().GetValue() != `"Tokyo"` || act.GetOrchestrationInstance().GetInstanceId() != "g1" {
		t.Fatalf("activity %v", act)
	}
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "g1", TaskId: 0,
		Result: wrapperspb.String(`"Hello Tokyo"`), CompletionToken: atok}); err != nil {
		t.Fatal(err)
	}

	req, tok = w.nextStep(t)
	var scheduled, completed bool
	for _, ev := range req.GetPastEvents() {
		scheduled = scheduled || ev.GetTaskScheduled().GetName() == "Say" && ev.GetEventId() == 0
	}
	for _, ev := range req.GetNewEvents() {
		c := ev.GetTaskCompleted()
		completed = completed || c != nil && c.GetTaskScheduledId() == 0 && c.GetResult().GetValue() == `"Hello Tokyo"`
	}
	if !scheduled || !completed {
		t.Fatalf("second step: past %v new %v", req.GetPastEvents(), req.GetNewEvents())
	}
	startedWith(t, req.GetPastEvents(), "WGreet", `"Tokyo"`)
	if err := w.answer(t, "g1", tok, "", completeWith(1, `"Hello Tokyo"`)); err != nil {
		t.Fatal(err)
	}
	st := s.waitDone(t, "g1")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED || st.GetOutput().GetValue() != `"Hello Tokyo"` {
		t.Fatalf("end: %v %v", st.GetOrchestrationStatus(), st.GetOutput())
	}
	// A repeat of the last answer is stale and changes nothing.
	err := w.answer(t, "g1", tok, "", completeWith(1, `"again"`))
	wantCode(t, err, codes.FailedPrecondition, "stale")
	if got := s.get(t, "g1").GetOutput().GetValue(); got != `"Hello Tokyo"` {
		t.Fatalf("output after a stale answer: %s", got)
	}
}

// A durable timer: the step after it comes once it is due, with
// TimerFired; an external event raised by a client reaches the worker as
// EventRaised. The node parks the idle run after 100 ms each time, so the
// timer and the event wake it.
func TestWorkerTimerAndEvent(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t), parkAfter: 100 * time.Millisecond})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WTimer")
	s.start(t, "WTimer", "t1", "")

	_, tok := w.nextStep(t)
	fireAt := time.Now().Add(500 * time.Millisecond).UTC()
	if err := w.answer(t, "t1", tok, "", createTimer(0, fireAt)); err != nil {
		t.Fatal(err)
	}
	req, tok := w.nextStep(t)
	if now := time.Now(); now.Before(fireAt) {
		t.Fatalf("the step after the timer came at %v, before its fireAt %v", now, fireAt)
	}
	fired := false
	for _, ev := range req.GetNewEvents() {
		fired = fired || ev.GetTimerFired() != nil && ev.GetTimerFired().GetTimerId() == 0
	}
	if !fired {
		t.Fatalf("new events %v, want TimerFired 0", req.GetNewEvents())
	}
	// Now wait for an event (no action): the step commits, nothing waits.
	if err := w.answer(t, "t1", tok, `"waiting"`); err != nil {
		t.Fatal(err)
	}
	select {
	case it := <-w.items:
		t.Fatalf("a work item %v with nothing new", it)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := s.stub.RaiseEvent(callCtx(t), &pb.RaiseEventRequest{InstanceId: "t1", Name: "go", Input: wrapperspb.String(`42`)}); err != nil {
		t.Fatal(err)
	}
	req, tok = w.nextStep(t)
	raised := false
	for _, ev := range req.GetNewEvents() {
		r := ev.GetEventRaised()
		raised = raised || r != nil && r.GetName() == "go" && r.GetInput().GetValue() == "42"
	}
	if !raised {
		t.Fatalf("new events %v, want EventRaised go 42", req.GetNewEvents())
	}
	if err := w.answer(t, "t1", tok, "", completeWith(1, `42`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "t1"); st.GetOutput().GetValue() != "42" || st.GetCustomStatus().GetValue() != `"waiting"` {
		t.Fatalf("end: %v output %v custom %v", st.GetOrchestrationStatus(), st.GetOutput(), st.GetCustomStatus())
	}
}

// A worker that hangs up with a step in flight: the step goes to the
// worker that connects next, with a new token; the old token is refused
// and changes nothing.
func TestWorkerReconnectStaleCompletion(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w1 := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WStale")
	s.start(t, "WStale", "s1", `1`)
	first, oldTok := w1.nextStep(t)
	w1.close()
	w2 := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WStale")
	again, tok := w2.nextStep(t)
	if tok == oldTok || len(again.GetNewEvents()) != len(first.GetNewEvents()) {
		t.Fatalf("dispatched again: token %q (old %q), %d new events (first %d)", tok, oldTok, len(again.GetNewEvents()), len(first.GetNewEvents()))
	}
	err := w2.answer(t, "s1", oldTok, "", completeWith(0, `"old"`))
	wantCode(t, err, codes.FailedPrecondition, "stale")
	if st := s.get(t, "s1"); st.GetOrchestrationStatus() == pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED {
		t.Fatalf("a stale answer completed the instance: %v", st)
	}
	if err := w2.answer(t, "s1", tok, "", completeWith(0, `"new"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "s1"); st.GetOutput().GetValue() != `"new"` {
		t.Fatalf("output %v", st.GetOutput())
	}
}

// An answer the server does not take (an entity action) is refused to the
// worker as UNIMPLEMENTED, and the execution fails with the reason; the
// node goes on serving.
func TestWorkerInvalidAnswerFailsExecution(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WBad")
	s.start(t, "WBad", "b1", "")
	_, tok := w.nextStep(t)
	err := w.answer(t, "b1", tok, "", &pb.OrchestratorAction{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_SendEntityMessage{
		SendEntityMessage: &pb.SendEntityMessageAction{}}})
	wantCode(t, err, codes.Unimplemented, "entities")
	st := s.waitDone(t, "b1")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED || !contains(st.GetFailureDetails().GetErrorMessage(), "entities") {
		t.Fatalf("end: %v %v", st.GetOrchestrationStatus(), st.GetFailureDetails())
	}
	// The node still runs the next instance.
	s.start(t, "WBad", "b2", "")
	_, tok = w.nextStep(t)
	if err := w.answer(t, "b2", tok, "", completeWith(0, `"ok"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "b2"); st.GetOutput().GetValue() != `"ok"` {
		t.Fatalf("b2: %v", st)
	}
	// An action ID out of sequence is the engine's refusal: the same.
	s.start(t, "WBad", "b3", "")
	_, tok = w.nextStep(t)
	err = w.answer(t, "b3", tok, "", scheduleTask(5, "Say", `1`))
	wantCode(t, err, codes.InvalidArgument, "out of sequence")
	if st := s.waitDone(t, "b3"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED ||
		st.GetFailureDetails().GetErrorType() != "InvalidOrchestratorAction" || !contains(st.GetFailureDetails().GetErrorMessage(), "out of sequence") {
		t.Fatalf("b3: %v", st)
	}
}

// Two nodes, a worker on each. The node that holds the instance is cut
// from etcd with its worker's activity in flight; the other node takes the
// instance with a larger fencing token, sends the activity to its own
// worker, and finishes the instance from the history. The first worker's
// late answer is refused.
func TestWorkerTakeover(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var la, lb logBuffer
	a := v.startServer(serverOpts{reg: testRegistry(t), log: la.logger().With("test_server", "a")})
	b := v.startServer(serverOpts{reg: testRegistry(t), log: lb.logger().With("test_server", "b")})
	wa := connectWorker(t, a, &pb.GetWorkItemsRequest{}, "WMove")
	wb := connectWorker(t, b, &pb.GetWorkItemsRequest{}, "WMove")
	a.start(t, "WMove", "m1", `"x"`)

	// Whichever node took it, its worker gets the first step.
	var holder, other *server
	var hw, ow *scriptWorker
	var it *pb.WorkItem
	var otherLog *logBuffer
	select {
	case it = <-wa.items:
		holder, other, hw, ow, otherLog = a, b, wa, wb, &lb
	case it = <-wb.items:
		holder, other, hw, ow, otherLog = b, a, wb, wa, &la
	case <-time.After(20 * time.Second):
		t.Fatal("no worker got the first step")
	}
	if err := hw.answer(t, "m1", it.GetCompletionToken(), "", scheduleTask(0, "Say", `"x"`)); err != nil {
		t.Fatal(err)
	}
	_, lateTok := hw.nextActivity(t)
	cl := v.client()
	before, err := cl.Status(context.Background(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(holder.node.Held(), "m1") {
		t.Fatalf("the node whose worker got the step does not hold m1 (holds %v)", holder.node.Held())
	}
	_ = holder.etcd.Close() // a crash, as far as etcd can tell: the lease is not revoked

	act, tok := ow.nextActivity(t)
	if act.GetName() != "Say" || act.GetTaskId() != 0 {
		t.Fatalf("activity on the other node: %v", act)
	}
	after, err := cl.Status(context.Background(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if after.FencingToken <= before.FencingToken || !slices.Contains(other.node.Held(), "m1") {
		t.Fatalf("fencing token %d -> %d, other node holds %v", before.FencingToken, after.FencingToken, other.node.Held())
	}
	if _, err := ow.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "m1", TaskId: 0,
		Result: wrapperspb.String(`"moved"`), CompletionToken: tok}); err != nil {
		t.Fatal(err)
	}
	req, stok := ow.nextStep(t)
	startedWith(t, req.GetPastEvents(), "WMove", `"x"`)
	if err := ow.answer(t, "m1", stok, "", completeWith(1, `"done on the other node"`)); err != nil {
		t.Fatal(err)
	}
	if st := other.waitDone(t, "m1"); st.GetOutput().GetValue() != `"done on the other node"` {
		t.Fatalf("end: %v", st)
	}
	// The first node's run has stopped by now (it lost the lease): its
	// worker's late answer is refused and changes nothing.
	deadline := time.Now().Add(15 * time.Second)
	for slices.Contains(holder.node.Held(), "m1") {
		if time.Now().After(deadline) {
			t.Fatal("the cut node still believes it holds m1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = hw.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "m1", TaskId: 0,
		Result: wrapperspb.String(`"late"`), CompletionToken: lateTok})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("late answer from the cut node's worker: %v, want FailedPrecondition", err)
	}
	tookOver := false
	for _, l := range otherLog.lines() {
		tookOver = tookOver || contains(l, `"msg":"took over instance"`) && contains(l, `"how":"failover"`) && contains(l, `"instance_id":"m1"`)
	}
	if !tookOver {
		t.Fatalf("the other node logged no failover of m1:\n%s", strings.Join(otherLog.lines(), "\n"))
	}
	for _, l := range append(la.lines(), lb.lines()...) {
		t.Log(l) // what each node logged, for the record (go test -v)
	}
	h, err := cl.History(context.Background(), "m1", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range h {
		if ev.EventType == orchestrator.EventTaskCompleted && string(ev.Result) != `"moved"` {
			t.Fatalf("history has the late result: %+v", ev)
		}
	}
}

// Two nodes, a worker on each. The worker of the node that holds the
// instance hangs up for good: about a lease TTL later that node releases
// the instance, the other node (whose worker serves it) takes it with a
// larger fencing token, and its worker gets the next step with the whole
// history.
func TestWorkerGoneInstanceMoves(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	b := v.startServer(serverOpts{reg: testRegistry(t)})
	wa := connectWorker(t, a, &pb.GetWorkItemsRequest{}, "WGone")
	wb := connectWorker(t, b, &pb.GetWorkItemsRequest{}, "WGone")
	a.start(t, "WGone", "q1", `"in"`)
	var holder, other *server
	var hw, ow *scriptWorker
	var it *pb.WorkItem
	select {
	case it = <-wa.items:
		holder, other, hw, ow = a, b, wa, wb
	case it = <-wb.items:
		holder, other, hw, ow = b, a, wb, wa
	case <-time.After(20 * time.Second):
		t.Fatal("no worker got the first step")
	}
	// The orchestration waits for an event: the step schedules nothing.
	if err := hw.answer(t, "q1", it.GetCompletionToken(), ""); err != nil {
		t.Fatal(err)
	}
	cl := v.client()
	before, err := cl.Status(context.Background(), "q1")
	if err != nil {
		t.Fatal(err)
	}
	hw.close()
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(other.node.Held(), "q1") {
		if time.Now().After(deadline) {
			t.Fatalf("the other node did not take q1 (holder holds %v)", holder.node.Held())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for slices.Contains(holder.node.Held(), "q1") { // its run ends just after its release
		if time.Now().After(deadline) {
			t.Fatal("both nodes hold q1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := other.stub.RaiseEvent(callCtx(t), &pb.RaiseEventRequest{InstanceId: "q1", Name: "go", Input: wrapperspb.String(`"moved"`)}); err != nil {
		t.Fatal(err)
	}
	req, tok := ow.nextStep(t)
	startedWith(t, req.GetPastEvents(), "WGone", `"in"`)
	if err := ow.answer(t, "q1", tok, "", completeWith(0, `"moved"`)); err != nil {
		t.Fatal(err)
	}
	st := other.waitDone(t, "q1")
	after, err := cl.Status(context.Background(), "q1")
	if err != nil {
		t.Fatal(err)
	}
	if st.GetOutput().GetValue() != `"moved"` || after.FencingToken <= before.FencingToken {
		t.Fatalf("end: %v, fencing token %d -> %d", st, before.FencingToken, after.FencingToken)
	}
}

// A worker's orchestration starts a sub-orchestration (run by the worker
// too), gets its result, and continues as new; the next execution starts
// with the new input.
func TestWorkerSubOrchestrationAndContinueAsNew(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WParent")
	s.start(t, "WParent", "p1", `1`)

	_, tok := w.nextStep(t)
	if err := w.answer(t, "p1", tok, "", &pb.OrchestratorAction{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CreateSubOrchestration{
		CreateSubOrchestration: &pb.CreateSubOrchestrationAction{Name: "WChild", InstanceId: "p1-child", Input: wrapperspb.String(`"c"`)}}}); err != nil {
		t.Fatal(err)
	}
	creq, ctok := w.nextStep(t)
	if creq.GetInstanceId() != "p1-child" {
		t.Fatalf("step for %s, want the child's", creq.GetInstanceId())
	}
	startedWith(t, creq.GetNewEvents(), "WChild", `"c"`)
	if err := w.answer(t, "p1-child", ctok, "", completeWith(0, `"child done"`)); err != nil {
		t.Fatal(err)
	}
	req, tok := w.nextStep(t)
	got := false
	for _, ev := range req.GetNewEvents() {
		c := ev.GetSubOrchestrationInstanceCompleted()
		got = got || c != nil && c.GetTaskScheduledId() == 0 && c.GetResult().GetValue() == `"child done"`
	}
	if !got {
		t.Fatalf("parent's new events %v, want SubOrchestrationInstanceCompleted 0", req.GetNewEvents())
	}
	first := req.GetExecutionId().GetValue()
	if err := w.answer(t, "p1", tok, "", &pb.OrchestratorAction{Id: 1, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{
		CompleteOrchestration: &pb.CompleteOrchestrationAction{OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
			Result: wrapperspb.String(`2`)}}}); err != nil {
		t.Fatal(err)
	}
	req, tok = w.nextStep(t)
	if req.GetInstanceId() != "p1" || req.GetExecutionId().GetValue() == first || len(req.GetPastEvents()) != 0 {
		t.Fatalf("after ContinueAsNew: %s execution %s (first %s), %d past events", req.GetInstanceId(), req.GetExecutionId().GetValue(), first, len(req.GetPastEvents()))
	}
	startedWith(t, req.GetNewEvents(), "WParent", `2`)
	if err := w.answer(t, "p1", tok, "", &pb.OrchestratorAction{Id: 0, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{
		CompleteOrchestration: &pb.CompleteOrchestrationAction{OrchestrationStatus: pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED,
			FailureDetails: &pb.TaskFailureDetails{ErrorType: "Boom", ErrorMessage: "second generation fails"}}}}); err != nil {
		t.Fatal(err)
	}
	st := s.waitDone(t, "p1")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED || st.GetFailureDetails().GetErrorType() != "Boom" ||
		st.GetFailureDetails().GetErrorMessage() != "second generation fails" || st.GetInput().GetValue() != "2" {
		t.Fatalf("end: %v", st)
	}
	if c := s.get(t, "p1-child"); c.GetOutput().GetValue() != `"child done"` || c.GetParentInstanceId().GetValue() != "p1" {
		t.Fatalf("child: %v", c)
	}
}

// The Go SDK's dialect: no completion tokens; answers name the instance
// (and the task). A terminate from a client while the worker holds a step
// ends the instance; the worker's answer to that step is then stale.
func TestWorkerWithoutTokensAndTerminate(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WGo")
	s.start(t, "WGo", "n1", `"x"`)
	w.nextStep(t)
	if err := w.answer(t, "n1", "", "", scheduleTask(0, "Say", `"x"`)); err != nil {
		t.Fatal(err)
	}
	act, _ := w.nextActivity(t)
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "n1", TaskId: act.GetTaskId(),
		Result: wrapperspb.String(`"y"`)}); err != nil {
		t.Fatal(err)
	}
	w.nextStep(t)
	if err := w.answer(t, "n1", "", "", completeWith(1, `"y"`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "n1"); st.GetOutput().GetValue() != `"y"` {
		t.Fatalf("n1: %v", st)
	}

	s.start(t, "WGo", "n2", "")
	_, tok := w.nextStep(t)
	if _, err := s.stub.TerminateInstance(callCtx(t), &pb.TerminateRequest{InstanceId: "n2", Output: wrapperspb.String(`"stop"`)}); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "n2"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED {
		t.Fatalf("n2: %v", st)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := w.answer(t, "n2", tok, "", completeWith(0, `"late"`))
		if status.Code(err) == codes.FailedPrecondition {
			break
		}
		if err == nil {
			t.Fatal("an answer for a terminated instance was taken")
		}
		if time.Now().After(deadline) {
			t.Fatalf("answer after the terminate: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := s.get(t, "n2"); st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED || st.GetOutput().GetValue() != `"stop"` {
		t.Fatalf("n2 after the late answer: %v", st)
	}
}

// A node that drains (as serve does on SIGTERM: the gRPC server shuts down
// as the node drains) with an activity out with its worker hands the
// instance over: the other node takes it, sends the activity to its own
// worker, and that worker finishes the instance.
func TestWorkerNodeDrains(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var la, lb logBuffer
	a := v.startServer(serverOpts{reg: testRegistry(t), log: la.logger()})
	b := v.startServer(serverOpts{reg: testRegistry(t), log: lb.logger()})
	wa := connectWorker(t, a, &pb.GetWorkItemsRequest{}, "WDrain")
	wb := connectWorker(t, b, &pb.GetWorkItemsRequest{}, "WDrain")
	a.start(t, "WDrain", "d1", "")
	var holder, other *server
	var hw, ow *scriptWorker
	var it *pb.WorkItem
	var holderLog *logBuffer
	select {
	case it = <-wa.items:
		holder, other, hw, ow, holderLog = a, b, wa, wb, &la
	case it = <-wb.items:
		holder, other, hw, ow, holderLog = b, a, wb, wa, &lb
	case <-time.After(20 * time.Second):
		t.Fatal("no worker got the first step")
	}
	// The activity is out with the holder's worker when the node drains.
	if err := hw.answer(t, "d1", it.GetCompletionToken(), "", scheduleTask(0, "Say", `"d"`)); err != nil {
		t.Fatal(err)
	}
	hw.nextActivity(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { defer close(stopped); holder.srv.Shutdown(ctx) }()
	if err := holder.node.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	<-stopped
	select {
	case <-hw.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the draining node's worker stream did not end")
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(other.node.Held(), "d1") {
		if time.Now().After(deadline) {
			t.Fatal("the other node did not take d1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	act, atok := ow.nextActivity(t)
	if act.GetName() != "Say" || act.GetTaskId() != 0 {
		t.Fatalf("activity on the other node: %v", act)
	}
	if _, err := ow.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "d1", TaskId: 0,
		Result: wrapperspb.String(`"r"`), CompletionToken: atok}); err != nil {
		t.Fatal(err)
	}
	_, tok := ow.nextStep(t)
	if err := ow.answer(t, "d1", tok, "", completeWith(1, `"handed over"`)); err != nil {
		t.Fatal(err)
	}
	if st := other.waitDone(t, "d1"); st.GetOutput().GetValue() != `"handed over"` {
		t.Fatalf("end: %v", st)
	}
	// The drain stopped the run; the shutdown of its server was no failure.
	for _, l := range holderLog.lines() {
		if contains(l, "run failed") {
			t.Fatalf("the draining node logged %s", l)
		}
	}
}

// Suspend and resume a worker-run instance: an event raised while it is
// suspended reaches the worker after the resume, and it finishes.
func TestWorkerSuspendResume(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WSus")
	s.start(t, "WSus", "u1", "")
	_, tok := w.nextStep(t)
	if err := w.answer(t, "u1", tok, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.stub.SuspendInstance(callCtx(t), &pb.SuspendRequest{InstanceId: "u1", Reason: wrapperspb.String("pause")}); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, "u1", pb.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED)
	if _, err := s.stub.RaiseEvent(callCtx(t), &pb.RaiseEventRequest{InstanceId: "u1", Name: "go", Input: wrapperspb.String(`7`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case it := <-w.items:
		t.Fatalf("a work item while suspended: %v", it)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := s.stub.ResumeInstance(callCtx(t), &pb.ResumeRequest{InstanceId: "u1", Reason: wrapperspb.String("go on")}); err != nil {
		t.Fatal(err)
	}
	raised := false
	for !raised {
		req, tok := w.nextStep(t)
		for _, ev := range req.GetNewEvents() {
			raised = raised || ev.GetEventRaised().GetName() == "go" && ev.GetEventRaised().GetInput().GetValue() == "7"
		}
		var acts []*pb.OrchestratorAction
		if raised {
			acts = append(acts, completeWith(0, `7`))
		}
		if err := w.answer(t, "u1", tok, "", acts...); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.waitDone(t, "u1"); st.GetOutput().GetValue() != "7" {
		t.Fatalf("end: %v", st)
	}
}

// A worker that abandons a step and an activity of a worker-run instance
// gets each again, once, and the instance finishes.
func TestWorkerAbandons(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t)})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WAb")
	s.start(t, "WAb", "ab1", "")
	_, tok := w.nextStep(t)
	if _, err := w.stub.AbandonTaskOrchestratorWorkItem(callCtx(t), &pb.AbandonOrchestrationTaskRequest{CompletionToken: tok}); err != nil {
		t.Fatal(err)
	}
	_, tok2 := w.nextStep(t)
	if tok2 == tok {
		t.Fatal("the step came back with the abandoned token")
	}
	if err := w.answer(t, "ab1", tok2, "", scheduleTask(0, "Say", `1`)); err != nil {
		t.Fatal(err)
	}
	_, atok := w.nextActivity(t)
	if _, err := w.stub.AbandonTaskActivityWorkItem(callCtx(t), &pb.AbandonActivityTaskRequest{CompletionToken: atok}); err != nil {
		t.Fatal(err)
	}
	_, atok2 := w.nextActivity(t)
	select {
	case it := <-w.items:
		t.Fatalf("a third dispatch: %v", it)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "ab1", TaskId: 0, Result: wrapperspb.String(`2`), CompletionToken: atok2}); err != nil {
		t.Fatal(err)
	}
	_, tok = w.nextStep(t)
	if err := w.answer(t, "ab1", tok, "", completeWith(1, `2`)); err != nil {
		t.Fatal(err)
	}
	if st := s.waitDone(t, "ab1"); st.GetOutput().GetValue() != "2" {
		t.Fatalf("end: %v", st)
	}
}
