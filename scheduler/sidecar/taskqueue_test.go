package sidecar_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// filtered is a GetWorkItems request of a worker that serves only these
// orchestrations and activities.
func filtered(orchs, acts []string) *pb.GetWorkItemsRequest {
	f := &pb.WorkItemFilters{}
	for _, o := range orchs {
		f.Orchestrations = append(f.Orchestrations, &pb.OrchestrationFilter{Name: o})
	}
	for _, a := range acts {
		f.Activities = append(f.Activities, &pb.ActivityFilter{Name: a})
	}
	return &pb.GetWorkItemsRequest{WorkItemFilters: f}
}

// connectActivityWorker opens the stream of a worker that serves
// activities only and waits until the server counts it.
func connectActivityWorker(t *testing.T, s *server, acts ...string) *scriptWorker {
	t.Helper()
	before := s.srv.Remote().Workers()
	w := openWorker(t, s, filtered(nil, acts))
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.Remote().Workers() <= before {
		if time.Now().After(deadline) {
			t.Fatal("the server does not count the activity worker")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// itemCount is the server's soloist_sidecar_work_items_total of an
// activity outcome.
func itemCount(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "soloist_sidecar_work_items_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kind, out string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "kind":
					kind = l.GetValue()
				case "outcome":
					out = l.GetValue()
				}
			}
			if kind == "activity" && out == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// queueLen is how many keys (tasks and claims) the task queue holds.
func queueLen(t *testing.T, v *env) int64 {
	t.Helper()
	resp, err := v.e.Client().Get(context.Background(), v.prefix+"v1/tasks/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// completeActivity answers an activity work item with a result.
func completeActivity(t *testing.T, w *scriptWorker, id string, taskID int32, tok, result string) error {
	t.Helper()
	_, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: id, TaskId: taskID,
		Result: wrapperspb.String(result), CompletionToken: tok})
	return err
}

// taskResults counts the TaskCompleted and TaskFailed events of task id in
// the instance's history.
func taskResults(t *testing.T, v *env, id string, taskID int) int {
	t.Helper()
	h, err := v.client().History(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range h {
		if (ev.EventType == orchestrator.EventTaskCompleted || ev.EventType == orchestrator.EventTaskFailed) && ev.TaskID == taskID {
			n++
		}
	}
	return n
}

// The node holding an instance has no worker for its activity; another
// node has one. The activity goes through etcd's task queue to the other
// node's worker, its result comes back through the instance's inbox, and
// the holder's worker gets it in the next step. Afterwards the queue is
// empty.
func TestActivityOnAnotherNode(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var la, lb logBuffer
	a := v.startServer(serverOpts{reg: testRegistry(t), log: la.logger()})
	b := v.startServer(serverOpts{reg: testRegistry(t), log: lb.logger()})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, nil), "XOrch")
	wb := connectActivityWorker(t, b, "XAct")
	a.start(t, "XOrch", "x1", `"in"`)

	_, tok := wa.nextStep(t)
	if err := wa.answer(t, "x1", tok, "", scheduleTask(0, "XAct", `"in"`)); err != nil {
		t.Fatal(err)
	}
	act, atok := wb.nextActivity(t)
	if act.GetName() != "XAct" || act.GetTaskId() != 0 || act.GetInput().GetValue() != `"in"` ||
		act.GetOrchestrationInstance().GetInstanceId() != "x1" || act.GetOrchestrationInstance().GetExecutionId().GetValue() == "" {
		t.Fatalf("activity on node b: %v", act)
	}
	if err := completeActivity(t, wb, "x1", 0, atok, `"out"`); err != nil {
		t.Fatal(err)
	}
	req, tok := wa.nextStep(t)
	got := false
	for _, ev := range req.GetNewEvents() {
		c := ev.GetTaskCompleted()
		got = got || c != nil && c.GetTaskScheduledId() == 0 && c.GetResult().GetValue() == `"out"`
	}
	if !got {
		t.Fatalf("the step after the activity has no TaskCompleted with its result: %v", req.GetNewEvents())
	}
	if err := wa.answer(t, "x1", tok, "", completeWith(1, `"done"`)); err != nil {
		t.Fatal(err)
	}
	if st := a.waitDone(t, "x1"); st.GetOutput().GetValue() != `"done"` {
		t.Fatalf("end: %v", st)
	}
	if n := taskResults(t, v, "x1", 0); n != 1 {
		t.Fatalf("history has %d results of task 0, want 1", n)
	}
	if q, c := itemCount(t, a.reg, "queued"), itemCount(t, b.reg, "claimed"); q != 1 || c != 1 {
		t.Fatalf("node a queued %v, node b claimed %v; want 1 and 1", q, c)
	}
	if n := itemCount(t, a.reg, "claimed"); n != 0 {
		t.Fatalf("node a (no activity worker) claimed %v tasks", n)
	}
	if n := queueLen(t, v); n != 0 {
		t.Fatalf("the task queue holds %d keys after the run", n)
	}
}

// The worker that has a queued activity hangs up and its node has no
// other worker for it: the node gives the claim back, and a worker that
// connects to another node then gets the task and finishes it; the result
// is in the history once.
func TestQueuedActivityGivenBack(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var lb logBuffer
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	b := v.startServer(serverOpts{reg: testRegistry(t), log: lb.logger()})
	c := v.startServer(serverOpts{reg: testRegistry(t)})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, nil), "XOrch")
	wb := connectActivityWorker(t, b, "XAct")
	a.start(t, "XOrch", "x2", `"in"`)
	_, tok := wa.nextStep(t)
	if err := wa.answer(t, "x2", tok, "", scheduleTask(0, "XAct", `"in"`)); err != nil {
		t.Fatal(err)
	}
	_, lateTok := wb.nextActivity(t)
	wb.close()

	wc := connectActivityWorker(t, c, "XAct")
	act, atok := wc.nextActivity(t)
	if act.GetName() != "XAct" || act.GetOrchestrationInstance().GetInstanceId() != "x2" {
		t.Fatalf("activity on node c: %v", act)
	}
	if err := completeActivity(t, wc, "x2", 0, atok, `"from c"`); err != nil {
		t.Fatal(err)
	}
	// The gone worker's answer is refused (its stream ended).
	if err := completeActivity(t, wb, "x2", 0, lateTok, `"from b"`); err == nil {
		t.Fatal("the answer of the worker that hung up was taken")
	}
	req, tok := wa.nextStep(t)
	if err := wa.answer(t, "x2", tok, "", completeWith(1, `"done"`)); err != nil {
		t.Fatal(err)
	}
	a.waitDone(t, "x2")
	h, err := v.client().History(context.Background(), "x2", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range h {
		if ev.EventType == orchestrator.EventTaskCompleted && string(ev.Result) != `"from c"` {
			t.Fatalf("history has another result: %+v (step events %v)", ev, req.GetNewEvents())
		}
	}
	if n := taskResults(t, v, "x2", 0); n != 1 {
		t.Fatalf("history has %d results of task 0, want 1", n)
	}
	gaveBack := false
	for _, l := range lb.lines() {
		gaveBack = gaveBack || contains(l, `"msg":"gave a queued activity back"`) && contains(l, `"instance_id":"x2"`)
	}
	if !gaveBack {
		t.Fatalf("node b did not log giving the activity back:\n%v", lb.lines())
	}
	if n := queueLen(t, v); n != 0 {
		t.Fatalf("the task queue holds %d keys after the run", n)
	}
}

// The node that claimed a queued activity is cut from etcd (a crash, as
// far as etcd can tell) with the activity out: its claim ends with its
// session's lease, and another node's worker gets the task.
func TestQueuedActivityClaimerCrash(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	b := v.startServer(serverOpts{reg: testRegistry(t)})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, nil), "XOrch")
	wb := connectActivityWorker(t, b, "XAct")
	a.start(t, "XOrch", "x3", `"in"`)
	_, tok := wa.nextStep(t)
	if err := wa.answer(t, "x3", tok, "", scheduleTask(0, "XAct", `"in"`)); err != nil {
		t.Fatal(err)
	}
	wb.nextActivity(t)
	// The task is node b's: its claim names b (node c, connected now,
	// cannot claim it while the claim lasts).
	resp, err := v.e.Client().Get(context.Background(), v.prefix+"v1/tasks/x3/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	claimedBy := ""
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "/claim") {
			claimedBy = string(kv.Value)
		}
	}
	if claimedBy != b.node.ID() {
		t.Fatalf("the task's claim names %q, want node b %q", claimedBy, b.node.ID())
	}
	c := v.startServer(serverOpts{reg: testRegistry(t)})
	wc := connectActivityWorker(t, c, "XAct")
	cut := time.Now()
	_ = b.etcd.Close()
	_, atok := wc.nextActivity(t)
	t.Logf("node c got the task %v after node b was cut (lease TTL 2s)", time.Since(cut).Round(time.Millisecond))
	if err := completeActivity(t, wc, "x3", 0, atok, `"from c"`); err != nil {
		t.Fatal(err)
	}
	_, tok = wa.nextStep(t)
	if err := wa.answer(t, "x3", tok, "", completeWith(1, `"done"`)); err != nil {
		t.Fatal(err)
	}
	a.waitDone(t, "x3")
	if n := taskResults(t, v, "x3", 0); n != 1 {
		t.Fatalf("history has %d results of task 0, want 1", n)
	}
}

// An instance that ends (terminated) while its activity waits in the queue
// leaves nothing in the queue.
func TestQueuedTaskLeavesWithItsExecution(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, nil), "XOrch")
	a.start(t, "XOrch", "x4", `"in"`)
	_, tok := wa.nextStep(t)
	if err := wa.answer(t, "x4", tok, "", scheduleTask(0, "XAct", `"in"`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for queueLen(t, v) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the task queue holds %d keys, want the task", queueLen(t, v))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := v.client().Terminate(context.Background(), "x4", "enough"); err != nil {
		t.Fatal(err)
	}
	if n := queueLen(t, v); n != 0 {
		t.Fatalf("the task queue holds %d keys after the terminate", n)
	}
}

// The holder of an instance is cut from etcd while its queued activity is
// out with another node's worker: the node that takes the instance over
// finds the task in the queue and does not send it again, not even to a
// worker of its own that serves it; the first worker's answer reaches the
// new holder through the inbox.
func TestQueuedActivityOutlivesHolder(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t)})
	c := v.startServer(serverOpts{reg: testRegistry(t)})
	b := v.startServer(serverOpts{reg: testRegistry(t)})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, nil), "XOrch")
	wc := connectWorker(t, c, filtered([]string{"XOrch"}, nil), "XOrch")
	wb := connectActivityWorker(t, b, "XAct")
	a.start(t, "XOrch", "x5", `"in"`)

	var holder, other *server
	var ow *scriptWorker
	var it *pb.WorkItem
	select {
	case it = <-wa.items:
		holder, other, ow = a, c, wc
		if err := wa.answer(t, "x5", it.GetCompletionToken(), "", scheduleTask(0, "XAct", `"in"`)); err != nil {
			t.Fatal(err)
		}
	case it = <-wc.items:
		holder, other, ow = c, a, wa
		if err := wc.answer(t, "x5", it.GetCompletionToken(), "", scheduleTask(0, "XAct", `"in"`)); err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no worker got the first step")
	}
	_, atok := wb.nextActivity(t)
	// The node that will take over gets a worker for the activity too: it
	// would run the task itself if it did not find it in the queue.
	wx := connectActivityWorker(t, other, "XAct")
	_ = holder.etcd.Close() // a crash, as far as etcd can tell

	deadline := time.Now().Add(15 * time.Second)
	for !slices.Contains(other.node.Held(), "x5") {
		if time.Now().After(deadline) {
			t.Fatal("the other node did not take x5 over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An event makes the new holder's run send a step: by then it has
	// gone through the history's open tasks and left the queued one where
	// it is.
	if _, err := other.stub.RaiseEvent(callCtx(t), &pb.RaiseEventRequest{InstanceId: "x5", Name: "poke"}); err != nil {
		t.Fatal(err)
	}
	req, tok := ow.nextStep(t)
	if len(req.GetNewEvents()) == 0 || req.GetNewEvents()[len(req.GetNewEvents())-1].GetEventRaised().GetName() != "poke" {
		t.Fatalf("the new holder's first step: %v, want the event", req.GetNewEvents())
	}
	if err := ow.answer(t, "x5", tok, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case it := <-wb.items:
		t.Fatalf("the activity was sent again after the takeover: %v", it)
	case it := <-wx.items:
		t.Fatalf("the new holder ran the queued activity itself: %v", it)
	default:
	}
	if err := completeActivity(t, wb, "x5", 0, atok, `"out"`); err != nil {
		t.Fatal(err)
	}
	req, tok = ow.nextStep(t)
	got := false
	for _, ev := range req.GetNewEvents() {
		got = got || ev.GetTaskCompleted().GetResult().GetValue() == `"out"`
	}
	if !got {
		t.Fatalf("the new holder's step has no TaskCompleted: %v", req.GetNewEvents())
	}
	if err := ow.answer(t, "x5", tok, "", completeWith(1, `"done"`)); err != nil {
		t.Fatal(err)
	}
	other.waitDone(t, "x5")
	if n := taskResults(t, v, "x5", 0); n != 1 {
		t.Fatalf("history has %d results of task 0, want 1", n)
	}
	if n := itemCount(t, b.reg, "claimed"); n != 1 {
		t.Fatalf("node b claimed the task %v times, want 1", n)
	}
	if n := len(wx.items); n != 0 {
		t.Fatalf("the new holder's own activity worker got %d work items", n)
	}
}

// A start that carries a trace context: ExecutionStarted carries it to the
// worker (the parent of the SDK's orchestration span), and the worker's ActivityRequest has
// the run's span as its parentTraceContext (the SDKs make the activity's
// span its child), whether the activity runs on the holder's node or goes
// through the task queue to another node.
func TestActivityTraceContext(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	a := v.startServer(serverOpts{reg: testRegistry(t), tp: tp})
	b := v.startServer(serverOpts{reg: testRegistry(t), tp: tp})
	wa := connectWorker(t, a, filtered([]string{"XOrch"}, []string{"Local"}), "XOrch")
	wb := connectActivityWorker(t, b, "Remote")
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	if _, err := a.stub.StartInstance(ctx, &pb.CreateInstanceRequest{Name: "XOrch", InstanceId: "x6", Input: wrapperspb.String(`1`)}); err != nil {
		t.Fatal(err)
	}
	req, tok := wa.nextStep(t)
	started := false
	for _, ev := range req.GetNewEvents() {
		if es := ev.GetExecutionStarted(); es != nil {
			started = strings.HasPrefix(es.GetParentTraceContext().GetTraceParent(), "00-"+traceID+"-")
		}
	}
	if !started {
		t.Fatalf("ExecutionStarted carries no parentTraceContext of trace %s: %v", traceID, req.GetNewEvents())
	}
	if err := wa.answer(t, "x6", tok, "", scheduleTask(0, "Local", `1`), scheduleTask(1, "Remote", `2`)); err != nil {
		t.Fatal(err)
	}
	local, _ := wa.nextActivity(t)
	remote, _ := wb.nextActivity(t)
	for _, act := range []*pb.ActivityRequest{local, remote} {
		tp := act.GetParentTraceContext().GetTraceParent()
		if !strings.HasPrefix(tp, "00-"+traceID+"-") || strings.Contains(tp, "b7ad6b7169203331") {
			t.Fatalf("activity %s: parentTraceContext %q, want the run's span in trace %s", act.GetName(), tp, traceID)
		}
	}
	if l, r := local.GetParentTraceContext().GetTraceParent(), remote.GetParentTraceContext().GetTraceParent(); l != r {
		t.Fatalf("the two activities of one run have different parents: %s and %s", l, r)
	}
}
