package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// hubService serves a hub's work-item RPCs alone, for the hub's tests.
type hubService struct {
	protos.UnimplementedTaskHubSidecarServiceServer
	h *hub
}

func (s *hubService) GetWorkItems(req *protos.GetWorkItemsRequest, srv protos.TaskHubSidecarService_GetWorkItemsServer) error {
	return s.h.GetWorkItems(req, srv)
}
func (s *hubService) CompleteOrchestratorTask(ctx context.Context, r *protos.OrchestratorResponse) (*protos.CompleteTaskResponse, error) {
	return s.h.CompleteOrchestratorTask(ctx, r)
}
func (s *hubService) CompleteActivityTask(ctx context.Context, r *protos.ActivityResponse) (*protos.CompleteTaskResponse, error) {
	return s.h.CompleteActivityTask(ctx, r)
}
func (s *hubService) AbandonTaskOrchestratorWorkItem(ctx context.Context, r *protos.AbandonOrchestrationTaskRequest) (*protos.AbandonOrchestrationTaskResponse, error) {
	return s.h.AbandonTaskOrchestratorWorkItem(ctx, r)
}
func (s *hubService) AbandonTaskActivityWorkItem(ctx context.Context, r *protos.AbandonActivityTaskRequest) (*protos.AbandonActivityTaskResponse, error) {
	return s.h.AbandonTaskActivityWorkItem(ctx, r)
}

type hubFixture struct {
	t   *testing.T
	h   *hub
	m   *wiMetrics
	cli protos.TaskHubSidecarServiceClient
}

func newHubFixture(t *testing.T, ping time.Duration) *hubFixture {
	t.Helper()
	m, err := newWIMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(slog.New(slog.DiscardHandler), m, ping, func(name, _ string) bool { return name == "Native" })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protos.RegisterTaskHubSidecarServiceServer(srv, &hubService{h: h})
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		h.close()
		srv.Stop()
	})
	return &hubFixture{t: t, h: h, m: m, cli: protos.NewTaskHubSidecarServiceClient(conn)}
}

// testWorker is one GetWorkItems stream whose items arrive on items.
type testWorker struct {
	items  chan *protos.WorkItem
	cancel context.CancelFunc
	ended  chan error
}

func (f *hubFixture) connect(req *protos.GetWorkItemsRequest) *testWorker {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.cli.GetWorkItems(ctx, req)
	if err != nil {
		cancel()
		f.t.Fatal(err)
	}
	w := &testWorker{items: make(chan *protos.WorkItem, 16), cancel: cancel, ended: make(chan error, 1)}
	go func() {
		for {
			it, err := stream.Recv()
			if err != nil {
				w.ended <- err
				return
			}
			w.items <- it
		}
	}()
	f.t.Cleanup(cancel)
	before := f.h.Workers()
	_ = before
	return w
}

// next returns the worker's next item that is not a health ping.
func (w *testWorker) next(t *testing.T) *protos.WorkItem {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case it := <-w.items:
			if it.GetHealthPing() != nil {
				continue
			}
			return it
		case err := <-w.ended:
			t.Fatalf("stream ended: %v", err)
		case <-timeout:
			t.Fatal("no work item within 5s")
		}
	}
}

// none asserts the worker gets no item (but pings) for d.
func (w *testWorker) none(t *testing.T, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case it := <-w.items:
			if it.GetHealthPing() == nil {
				t.Fatalf("unexpected work item %v", it)
			}
		case <-timeout:
			return
		}
	}
}

func waitWorkers(t *testing.T, h *hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Workers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers connected, want %d", h.Workers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func orchDispatch(id string) *dispatch {
	return &dispatch{kind: kindOrchestration, name: "Flow", instanceID: id, executionID: "e1", fence: 7,
		orch: &protos.OrchestratorRequest{InstanceId: id}}
}

// runAsync runs a dispatch whose answers are accepted when accept says so.
func (f *hubFixture) runAsync(d *dispatch, accept func(answer) (error, bool)) chan error {
	done := make(chan error, 1)
	go func() { done <- f.h.run(context.Background(), d, accept) }()
	return done
}

func acceptAll(answer) (error, bool) { return nil, true }

func waitRun(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the dispatch did not end within 5s")
		return nil
	}
}

func TestWorkItemCompletedOnce(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	w := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 1)
	done := f.runAsync(orchDispatch("i1"), acceptAll)
	it := w.next(t)
	if it.GetOrchestratorRequest().GetInstanceId() != "i1" || it.GetCompletionToken() == "" {
		t.Fatalf("item %v", it)
	}
	ctx := context.Background()
	if _, err := f.cli.CompleteOrchestratorTask(ctx, &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken()}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	// The same answer again: the token is spent.
	_, err := f.cli.CompleteOrchestratorTask(ctx, &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second completion: %v, want FAILED_PRECONDITION", err)
	}
	if got := testutil.ToFloat64(f.m.items.WithLabelValues(kindOrchestration, "stale")); got != 1 {
		t.Fatalf("stale = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.m.items.WithLabelValues(kindOrchestration, "completed")); got != 1 {
		t.Fatalf("completed = %v, want 1", got)
	}
}

// A worker that disconnects with an item in flight: the item goes to the
// other worker, once, and the first worker's late answer is refused.
func TestWorkItemLostWithItsWorker(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	a := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 1)
	var got []answer
	done := f.runAsync(orchDispatch("i1"), func(a answer) (error, bool) { got = append(got, a); return nil, true })
	first := a.next(t)
	b := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 2)
	b.none(t, 100*time.Millisecond) // in flight with a: not sent twice
	a.cancel()
	second := b.next(t)
	if second.GetCompletionToken() == first.GetCompletionToken() {
		t.Fatal("a dispatch again has the same token")
	}
	b.none(t, 200*time.Millisecond)
	ctx := context.Background()
	_, err := f.cli.CompleteOrchestratorTask(ctx, &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: first.GetCompletionToken()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("late answer of the lost worker: %v, want FAILED_PRECONDITION", err)
	}
	if _, err := f.cli.CompleteOrchestratorTask(ctx, &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: second.GetCompletionToken()}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d answers accepted, want 1", len(got))
	}
	for outcome, want := range map[string]float64{"dispatched": 2, "lost": 1, "completed": 1, "stale": 1} {
		if got := testutil.ToFloat64(f.m.items.WithLabelValues(kindOrchestration, outcome)); got != want {
			t.Errorf("%s = %v, want %v", outcome, got, want)
		}
	}
}

// An abandoned item is dispatched again, once; abandoning with a spent
// token is refused.
func TestWorkItemAbandoned(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	w := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 1)
	d := &dispatch{kind: kindActivity, name: "Say", instanceID: "i1", executionID: "e1", taskID: 3, fence: 7,
		act: &protos.ActivityRequest{Name: "Say", TaskId: 3}}
	var result string
	done := f.runAsync(d, func(a answer) (error, bool) { result = a.act.GetResult().GetValue(); return nil, true })
	first := w.next(t)
	ctx := context.Background()
	if _, err := f.cli.AbandonTaskActivityWorkItem(ctx, &protos.AbandonActivityTaskRequest{CompletionToken: first.GetCompletionToken()}); err != nil {
		t.Fatal(err)
	}
	second := w.next(t)
	if second.GetActivityRequest().GetTaskId() != 3 {
		t.Fatalf("item %v", second)
	}
	w.none(t, 200*time.Millisecond)
	_, err := f.cli.AbandonTaskActivityWorkItem(ctx, &protos.AbandonActivityTaskRequest{CompletionToken: first.GetCompletionToken()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("abandon with a spent token: %v", err)
	}
	_, err = f.cli.AbandonTaskActivityWorkItem(ctx, &protos.AbandonActivityTaskRequest{CompletionToken: "not a token!"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("abandon with garbage: %v", err)
	}
	// The Go SDK's form: no token, the instance and task ID.
	if _, err := f.cli.CompleteActivityTask(ctx, &protos.ActivityResponse{InstanceId: "i1", TaskId: 3, Result: wrap(`"hi"`)}); err != nil {
		t.Fatal(err)
	}
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	if result != `"hi"` {
		t.Fatalf("result %q", result)
	}
	if got := testutil.ToFloat64(f.m.items.WithLabelValues(kindActivity, "abandoned")); got != 1 {
		t.Fatalf("abandoned = %v, want 1", got)
	}
}

// A refused answer reaches the worker as the waiter's error; an answer
// that ends the wait with an error ends it.
func TestWorkItemRefusedAnswer(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	w := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 1)
	bad := status.Error(codes.InvalidArgument, "action 3 is not one Soloist knows")
	done := f.runAsync(orchDispatch("i1"), func(answer) (error, bool) { return bad, true })
	it := w.next(t)
	_, err := f.cli.CompleteOrchestratorTask(context.Background(), &protos.OrchestratorResponse{InstanceId: "i1", CompletionToken: it.GetCompletionToken()})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "action 3 is not one Soloist knows" {
		t.Fatalf("worker told %v", err)
	}
	if err := waitRun(t, done); !errors.Is(err, bad) {
		t.Fatalf("run: %v", err)
	}
}

// Health pings come every ping interval; a worker with filters gets only
// what it serves; a drain ends the streams and the waits.
func TestWorkItemPingsFiltersAndDrain(t *testing.T) {
	f := newHubFixture(t, 30*time.Millisecond)
	changed := make(chan struct{}, 16)
	f.h.changed = func() { changed <- struct{}{} }
	filtered := f.connect(&protos.GetWorkItemsRequest{WorkItemFilters: &protos.WorkItemFilters{
		Orchestrations: []*protos.OrchestrationFilter{{Name: "Other"}},
	}})
	waitWorkers(t, f.h, 1)
	select {
	case it := <-filtered.items:
		if it.GetHealthPing() == nil {
			t.Fatalf("first item %v, want a health ping", it)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no health ping")
	}
	if !f.h.Serves("Other", "") || f.h.Serves("Flow", "") || f.h.Serves("Native", "") {
		t.Fatal("Serves: want Other only")
	}
	done := f.runAsync(orchDispatch("i1"), acceptAll)
	filtered.none(t, 150*time.Millisecond)
	any := f.connect(&protos.GetWorkItemsRequest{})
	waitWorkers(t, f.h, 2)
	if !f.h.Serves("Flow", "") || f.h.Serves("Native", "") {
		t.Fatal("Serves: a worker without filters serves any non-native orchestration")
	}
	if fns := f.h.Functions(); len(fns) != 2 || fns[0] != "*" || fns[1] != "Other" {
		t.Fatalf("Functions %v", fns)
	}
	if got := any.next(t); got.GetOrchestratorRequest().GetInstanceId() != "i1" {
		t.Fatalf("item %v", got)
	}
	f.h.close()
	if err := waitRun(t, done); !errors.Is(err, errHubClosed) {
		t.Fatalf("run after close: %v", err)
	}
	for _, w := range []*testWorker{filtered, any} {
		select {
		case err := <-w.ended:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the stream did not end on drain")
		}
	}
	if _, err := f.cli.GetWorkItems(context.Background(), &protos.GetWorkItemsRequest{}); err != nil {
		t.Fatal(err)
	}
	if len(changed) == 0 {
		t.Fatal("changed was never called")
	}
}

func wrap(s string) *wrapperspb.StringValue { return wrapperspb.String(s) }

// A worker never has more items of a kind than it asked for; the next goes
// out when one is answered.
func TestWorkItemConcurrencyLimit(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	w := f.connect(&protos.GetWorkItemsRequest{MaxConcurrentActivityWorkItems: 1})
	waitWorkers(t, f.h, 1)
	act := func(task int32) *dispatch {
		return &dispatch{kind: kindActivity, name: "Say", instanceID: "i1", executionID: "e1", taskID: task, fence: 7,
			act: &protos.ActivityRequest{Name: "Say", TaskId: task}}
	}
	done1 := f.runAsync(act(1), acceptAll)
	done2 := f.runAsync(act(2), acceptAll)
	first := w.next(t)
	w.none(t, 200*time.Millisecond)
	ctx := context.Background()
	if _, err := f.cli.CompleteActivityTask(ctx, &protos.ActivityResponse{InstanceId: "i1", TaskId: first.GetActivityRequest().GetTaskId(),
		CompletionToken: first.GetCompletionToken(), Result: wrap("1")}); err != nil {
		t.Fatal(err)
	}
	second := w.next(t)
	if second.GetActivityRequest().GetTaskId() == first.GetActivityRequest().GetTaskId() {
		t.Fatal("the same task was sent twice")
	}
	// The task ID in the answer must be the token's.
	_, err := f.cli.CompleteActivityTask(ctx, &protos.ActivityResponse{InstanceId: "i1", TaskId: 42, CompletionToken: second.GetCompletionToken()})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("mismatched task ID: %v", err)
	}
	if _, err := f.cli.CompleteActivityTask(ctx, &protos.ActivityResponse{InstanceId: "i1", TaskId: second.GetActivityRequest().GetTaskId(),
		CompletionToken: second.GetCompletionToken(), Result: wrap("2")}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []chan error{done1, done2} {
		if err := waitRun(t, d); err != nil {
			t.Fatal(err)
		}
	}
}

// One orchestration work item per instance: a second is refused while the
// first waits.
func TestWorkItemOnePerInstance(t *testing.T) {
	f := newHubFixture(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.h.run(ctx, orchDispatch("i1"), acceptAll) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.h.mu.Lock()
		queued := f.h.orchs["i1"] != nil
		f.h.mu.Unlock()
		if queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first item was not queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := f.h.run(context.Background(), orchDispatch("i1"), acceptAll)
	if err == nil || !strings.Contains(err.Error(), "already has an orchestration work item in flight") {
		t.Fatalf("second item: %v", err)
	}
	cancel()
	if err := waitRun(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("first item after cancel: %v", err)
	}
	// Its wait ended: another may go.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := f.h.run(ctx2, orchDispatch("i1"), acceptAll); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third item (no worker, short wait): %v", err)
	}
}
