package sidecar_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// TestWorkerHelloCitiesTransactions counts the etcd write transactions of
// one HelloCities lifecycle (three activities in a chain) that a worker
// runs: the start, which takes the instance in the same transaction (the
// node that receives it has the worker: start where you land), and one
// commit per step (the first marks the record Running with
// ExecutionStarted and the first schedule; each activity's result is a new
// event of the next step, with no inbox write of its own; the last is the
// final write) - 5, against 9 when every result went through the inbox and
// the start did not land. The history holds each completion once.
func TestWorkerHelloCitiesTransactions(t *testing.T) {
	t.Parallel()
	helloCitiesTransactions(t, 0, 5)
}

// With a batch budget (soloist serve's --batch-budget, 1s by default), the
// steps that only schedule activities are answered without a commit and
// committed with the final write: the lifecycle is the start (with the
// acquire) and the final write, as a Go orchestration's.
func TestWorkerHelloCitiesBatched(t *testing.T) {
	t.Parallel()
	helloCitiesTransactions(t, time.Second, 2)
}

// helloCitiesTransactions runs HelloCities with a scripted worker on a
// node with that batch budget and wants that many write transactions.
func helloCitiesTransactions(t *testing.T, batch time.Duration, want int) {
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: testRegistry(t), batch: batch})
	w := connectWorker(t, s, &pb.GetWorkItemsRequest{}, "WCities")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r0, err := s.etcd.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	s.start(t, "WCities", "hc", "")
	cities := []string{"Tokyo", "Seattle", "London"}
	var out []string
	for i := 0; i <= len(cities); i++ {
		req, tok := w.nextStep(t)
		if i > 0 {
			n := 0
			for _, ev := range req.GetNewEvents() {
				if c := ev.GetTaskCompleted(); c != nil {
					n++
					if c.GetTaskScheduledId() != int32(i-1) {
						t.Fatalf("step %d: TaskCompleted of task %d", i, c.GetTaskScheduledId())
					}
				}
			}
			if n != 1 {
				t.Fatalf("step %d: %d TaskCompleted events in %v, want 1", i, n, req.GetNewEvents())
			}
			// The past holds everything answered before, committed or
			// not: the start, tasks 0..i-1 scheduled, 0..i-2 completed.
			var sched, done int
			for _, ev := range req.GetPastEvents() {
				if ev.GetTaskScheduled() != nil {
					sched++
				}
				if ev.GetTaskCompleted() != nil {
					done++
				}
			}
			startedWith(t, req.GetPastEvents(), "WCities", "null")
			if sched != i || done != i-1 {
				t.Fatalf("step %d: past has %d TaskScheduled and %d TaskCompleted, want %d and %d", i, sched, done, i, i-1)
			}
		}
		if i == len(cities) {
			if err := w.answer(t, "hc", tok, "", completeWith(int32(i), `"`+strings.Join(out, ",")+`"`)); err != nil {
				t.Fatal(err)
			}
			break
		}
		if err := w.answer(t, "hc", tok, "", scheduleTask(int32(i), "Say", `"`+cities[i]+`"`)); err != nil {
			t.Fatal(err)
		}
		act, atok := w.nextActivity(t)
		if act.GetTaskId() != int32(i) {
			t.Fatalf("activity %v, want task %d", act, i)
		}
		res := "Hello " + cities[i]
		out = append(out, res)
		if _, err := w.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "hc", TaskId: int32(i),
			Result: wrapperspb.String(`"` + res + `"`), CompletionToken: atok}); err != nil {
			t.Fatal(err)
		}
	}
	st := s.waitDone(t, "hc")
	if st.GetOrchestrationStatus() != pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED ||
		st.GetOutput().GetValue() != `"Hello Tokyo,Hello Seattle,Hello London"` {
		t.Fatalf("end: %v %v", st.GetOrchestrationStatus(), st.GetOutput())
	}
	r1, err := s.etcd.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	w1 := instanceWrites(ctx, t, s.etcd, v.prefix, "hc", r0.Header.Revision, r1.Header.Revision)
	if len(w1) != want {
		t.Fatalf("%d write transactions for the lifecycle, want %d (the start with the acquire, then the steps' commits): %q", len(w1), want, w1)
	}
	if !strings.Contains(w1[0], "owners/hc") || !strings.Contains(w1[0], "instances/hc") {
		t.Fatalf("the start did not take the instance in its own transaction: %q", w1[0])
	}
	for _, w := range w1 {
		if strings.Contains(w, "inbox/") {
			t.Fatalf("an inbox write in the lifecycle: %q", w1)
		}
	}
	hist, err := v.client().History(ctx, "hc", st.GetExecutionId().GetValue())
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range hist {
		types = append(types, string(ev.EventType))
	}
	wantHist := "ExecutionStarted TaskScheduled TaskCompleted TaskScheduled TaskCompleted TaskScheduled TaskCompleted ExecutionCompleted"
	if got := strings.Join(types, " "); got != wantHist {
		t.Fatalf("history %s, want %s", got, wantHist)
	}
}

// instanceWrites lists the write transactions (revisions) in (from, to]
// that touched a key of instance id under prefix, each as its keys.
func instanceWrites(ctx context.Context, t *testing.T, ec *clientv3.Client, prefix, id string, from, to int64) []string {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	revs := map[int64][]string{}
	var order []int64
	for wr := range ec.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(from+1)) {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			k := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			if ev.Kv.ModRevision > to || !strings.Contains(k, "/"+id) {
				continue
			}
			if _, ok := revs[ev.Kv.ModRevision]; !ok {
				order = append(order, ev.Kv.ModRevision)
			}
			revs[ev.Kv.ModRevision] = append(revs[ev.Kv.ModRevision], fmt.Sprintf("%s %s", ev.Type, k))
		}
		if wr.Header.Revision >= to {
			break
		}
	}
	var out []string
	for _, r := range order {
		out = append(out, strings.Join(revs[r], " "))
	}
	return out
}

// TestWorkerDrainKeepsResult: an activity's result that the holder has
// (in memory, for a step its worker has not answered yet) when the node
// drains is stored by the drain's checkpoint, so the node that takes over
// sends the step with it and does not run the activity again; the history
// holds the completion once.
func TestWorkerDrainKeepsResult(t *testing.T) {
	t.Parallel()
	drainKeepsResult(t, 0)
}

// TestWorkerDrainKeepsResultBatched: the same with a batch budget, so the
// first step waits uncommitted when the node drains. The drain commits
// what the worker answered (the start and the schedule), not the step it
// has not answered: the next holder sends that step, with the result.
func TestWorkerDrainKeepsResultBatched(t *testing.T) {
	t.Parallel()
	drainKeepsResult(t, 30*time.Second)
}

func drainKeepsResult(t *testing.T, batch time.Duration) {
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t), batch: batch})
	b := v.startServer(serverOpts{reg: testRegistry(t), batch: batch})
	wa := connectWorker(t, a, &pb.GetWorkItemsRequest{}, "WKeep")
	wb := connectWorker(t, b, &pb.GetWorkItemsRequest{}, "WKeep")
	a.start(t, "WKeep", "k1", "")
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
	if err := hw.answer(t, "k1", it.GetCompletionToken(), "", scheduleTask(0, "Say", `"k"`)); err != nil {
		t.Fatal(err)
	}
	_, atok := hw.nextActivity(t)
	if _, err := hw.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "k1", TaskId: 0,
		Result: wrapperspb.String(`"kept"`), CompletionToken: atok}); err != nil {
		t.Fatal(err)
	}
	hw.nextStep(t) // the step with the result: left unanswered
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { defer close(stopped); holder.srv.Shutdown(ctx) }()
	if err := holder.node.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	<-stopped
	req, tok := ow.nextStep(t) // a step first: no ActivityRequest again
	var done int
	for _, ev := range append(req.GetPastEvents(), req.GetNewEvents()...) {
		if c := ev.GetTaskCompleted(); c != nil && c.GetTaskScheduledId() == 0 && c.GetResult().GetValue() == `"kept"` {
			done++
		}
	}
	if done != 1 {
		t.Fatalf("the step on the node that took over has %d TaskCompleted of task 0: past %v new %v", done, req.GetPastEvents(), req.GetNewEvents())
	}
	if err := ow.answer(t, "k1", tok, "", completeWith(1, `"kept"`)); err != nil {
		t.Fatal(err)
	}
	st := other.waitDone(t, "k1")
	if st.GetOutput().GetValue() != `"kept"` {
		t.Fatalf("end: %v", st)
	}
	hist, err := v.client().History(ctx, "k1", st.GetExecutionId().GetValue())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range hist {
		if ev.EventType == orchestrator.EventTaskCompleted {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d TaskCompleted events in the history, want 1: %+v", n, hist)
	}
}

// The holder of a worker-run instance is cut from etcd mid-batch: two
// steps answered and not committed (a 30s budget). The node that takes it
// over has only the start in etcd, so its worker gets the first step
// again and the batch's activities run again (what the batch's doc says a
// crash repeats); the instance completes with each task's result once.
func TestWorkerTakeoverMidBatch(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	a := v.startServer(serverOpts{reg: testRegistry(t), batch: 30 * time.Second})
	b := v.startServer(serverOpts{reg: testRegistry(t), batch: 30 * time.Second})
	wa := connectWorker(t, a, &pb.GetWorkItemsRequest{}, "WBatch")
	wb := connectWorker(t, b, &pb.GetWorkItemsRequest{}, "WBatch")
	a.start(t, "WBatch", "mb", `"x"`)
	var holder *server
	var hw, ow *scriptWorker
	var it *pb.WorkItem
	select {
	case it = <-wa.items:
		holder, hw, ow = a, wa, wb
	case it = <-wb.items:
		holder, hw, ow = b, wb, wa
	case <-time.After(20 * time.Second):
		t.Fatal("no worker got the first step")
	}
	// Two steps of the batch: schedule 0, its result, schedule 1.
	if err := hw.answer(t, "mb", it.GetCompletionToken(), "", scheduleTask(0, "Say", `"a"`)); err != nil {
		t.Fatal(err)
	}
	_, atok := hw.nextActivity(t)
	if _, err := hw.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "mb", TaskId: 0,
		Result: wrapperspb.String(`"A"`), CompletionToken: atok}); err != nil {
		t.Fatal(err)
	}
	_, tok := hw.nextStep(t)
	if err := hw.answer(t, "mb", tok, "", scheduleTask(1, "Say", `"b"`)); err != nil {
		t.Fatal(err)
	}
	hw.nextActivity(t)
	if h, err := v.client().History(context.Background(), "mb", ""); err != nil || len(h) != 0 {
		t.Fatalf("history in etcd mid-batch: %d events (%v), want none", len(h), err)
	}
	_ = holder.etcd.Close() // a crash, as far as etcd can tell

	req, tok := ow.nextStep(t)
	if len(req.GetPastEvents()) != 0 {
		t.Fatalf("the new holder's first step has past events %v, want none (the batch was not committed)", req.GetPastEvents())
	}
	startedWith(t, req.GetNewEvents(), "WBatch", `"x"`)
	if err := ow.answer(t, "mb", tok, "", scheduleTask(0, "Say", `"a"`)); err != nil {
		t.Fatal(err)
	}
	for i, res := range []string{`"A2"`, `"B2"`} {
		act, atok := ow.nextActivity(t)
		if act.GetTaskId() != int32(i) {
			t.Fatalf("activity %v, want task %d", act, i)
		}
		if _, err := ow.stub.CompleteActivityTask(callCtx(t), &pb.ActivityResponse{InstanceId: "mb", TaskId: int32(i),
			Result: wrapperspb.String(res), CompletionToken: atok}); err != nil {
			t.Fatal(err)
		}
		_, tok = ow.nextStep(t)
		if i == 0 {
			if err := ow.answer(t, "mb", tok, "", scheduleTask(1, "Say", `"b"`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ow.answer(t, "mb", tok, "", completeWith(2, `"done"`)); err != nil {
		t.Fatal(err)
	}
	other := a
	if holder == a {
		other = b
	}
	if st := other.waitDone(t, "mb"); st.GetOutput().GetValue() != `"done"` {
		t.Fatalf("end: %v", st)
	}
	h, err := v.client().History(context.Background(), "mb", "")
	if err != nil {
		t.Fatal(err)
	}
	results := map[int]string{}
	for _, ev := range h {
		if ev.EventType == orchestrator.EventTaskCompleted {
			if _, dup := results[ev.TaskID]; dup {
				t.Fatalf("task %d completed twice in the history", ev.TaskID)
			}
			results[ev.TaskID] = string(ev.Result)
		}
	}
	if results[0] != `"A2"` || results[1] != `"B2"` || len(results) != 2 {
		t.Fatalf("results in the history: %v, want the new holder's", results)
	}
}
