package sidecartest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// Orchestration is the orchestration the worker runs; Activity the
// activity it calls.
const (
	Orchestration = "HelloCities"
	Activity      = "SayHello"
)

// Cities are HelloCities' activity inputs, in order.
var Cities = []string{"Tokyo", "Seattle", "London"}

// Output is HelloCities' output, as the node stores it.
const Output = `["Hello Tokyo!","Hello Seattle!","Hello London!"]`

// ActivityCall is one activity work item.
type ActivityCall struct {
	InstanceID string
	Name       string
	TaskID     int32
	Input      string // JSON
}

// Options configure a worker.
type Options struct {
	// Activity runs an activity and returns its JSON result. Defaults to
	// SayHello: a JSON string "city" gives "Hello city!". ctx ends when
	// the worker closes.
	Activity func(ctx context.Context, call ActivityCall) (string, error)
}

// Worker is one connected worker: a GetWorkItems stream whose items are
// answered each in a goroutine of its own.
type Worker struct {
	stub   pb.TaskHubSidecarServiceClient
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ended  chan struct{}

	steps, activities atomic.Int64
	mu                sync.Mutex
	err               error // the first failed answer, before Close
}

// Connect opens a worker's stream on conn and answers its work items until
// ctx ends, Close, or the stream ends. It returns once the stream is open;
// the node registers the worker right after.
func Connect(ctx context.Context, conn grpc.ClientConnInterface, opts Options) (*Worker, error) {
	if opts.Activity == nil {
		opts.Activity = SayHello
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Worker{stub: pb.NewTaskHubSidecarServiceClient(conn), opts: opts, ctx: wctx, cancel: cancel, ended: make(chan struct{})}
	stream, err := w.stub.GetWorkItems(wctx, &pb.GetWorkItemsRequest{})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("sidecartest: GetWorkItems: %w", err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(w.ended)
		for {
			it, err := stream.Recv()
			if err != nil {
				return
			}
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				w.handle(it)
			}()
		}
	}()
	return w, nil
}

// Close hangs up the stream and waits for the answers in progress.
func (w *Worker) Close() {
	w.cancel()
	w.wg.Wait()
}

// Ended is closed when the stream has ended (the node went, drained, or
// Close).
func (w *Worker) Ended() <-chan struct{} { return w.ended }

// Err is the first answer the node refused or that failed, nil if none.
// Answers cut off by Close do not count.
func (w *Worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Steps is how many orchestration steps the worker has received.
func (w *Worker) Steps() int64 { return w.steps.Load() }

// Activities is how many activity work items the worker has received.
func (w *Worker) Activities() int64 { return w.activities.Load() }

func (w *Worker) fail(err error) {
	if err == nil || w.ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *Worker) handle(it *pb.WorkItem) {
	switch {
	case it.GetOrchestratorRequest() != nil:
		w.steps.Add(1)
		res := step(it.GetOrchestratorRequest(), it.GetCompletionToken())
		if _, err := w.stub.CompleteOrchestratorTask(w.ctx, res); err != nil {
			w.fail(fmt.Errorf("sidecartest: CompleteOrchestratorTask %s: %w", res.GetInstanceId(), err))
		}
	case it.GetActivityRequest() != nil:
		w.activities.Add(1)
		a := it.GetActivityRequest()
		call := ActivityCall{InstanceID: a.GetOrchestrationInstance().GetInstanceId(), Name: a.GetName(),
			TaskID: a.GetTaskId(), Input: a.GetInput().GetValue()}
		res := &pb.ActivityResponse{InstanceId: call.InstanceID, TaskId: call.TaskID, CompletionToken: it.GetCompletionToken()}
		out, err := w.opts.Activity(w.ctx, call)
		if w.ctx.Err() != nil {
			return
		}
		if err != nil {
			res.FailureDetails = &pb.TaskFailureDetails{ErrorType: "ActivityError", ErrorMessage: err.Error()}
		} else {
			res.Result = wrapperspb.String(out)
		}
		if _, err := w.stub.CompleteActivityTask(w.ctx, res); err != nil {
			w.fail(fmt.Errorf("sidecartest: CompleteActivityTask %s/%d: %w", call.InstanceID, call.TaskID, err))
		}
	}
}

// SayHello is the demo's SayHello, the worker's default activity.
func SayHello(_ context.Context, call ActivityCall) (string, error) {
	if call.Name != Activity {
		return "", fmt.Errorf("sidecartest: no activity %q", call.Name)
	}
	var city string
	if err := json.Unmarshal([]byte(call.Input), &city); err != nil {
		return "", fmt.Errorf("sidecartest: SayHello input %s: %w", call.Input, err)
	}
	b, _ := json.Marshal("Hello " + city + "!")
	return string(b), nil
}

// step is HelloCities as a worker runs it: from the history, schedule the
// next city's SayHello, or complete with the greetings.
func step(req *pb.OrchestratorRequest, tok string) *pb.OrchestratorResponse {
	res := &pb.OrchestratorResponse{InstanceId: req.GetInstanceId(), CompletionToken: tok}
	name := ""
	var results []string
	scheduled, failed := 0, ""
	for _, evs := range [][]*pb.HistoryEvent{req.GetPastEvents(), req.GetNewEvents()} {
		for _, ev := range evs {
			switch {
			case ev.GetExecutionStarted() != nil:
				name = ev.GetExecutionStarted().GetName()
			case ev.GetTaskScheduled() != nil:
				scheduled++
			case ev.GetTaskCompleted() != nil:
				results = append(results, ev.GetTaskCompleted().GetResult().GetValue())
			case ev.GetTaskFailed() != nil:
				failed = ev.GetTaskFailed().GetFailureDetails().GetErrorMessage()
			}
		}
	}
	next := int32(scheduled)
	switch n := len(results); {
	case name != Orchestration:
		res.Actions = []*pb.OrchestratorAction{end(next, pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED,
			errors.New("sidecartest: the worker runs only "+Orchestration+", not "+name))}
	case failed != "":
		res.Actions = []*pb.OrchestratorAction{end(next, pb.OrchestrationStatus_ORCHESTRATION_STATUS_FAILED, errors.New(failed))}
	case n < scheduled: // waits for the task in flight
	case n < len(Cities):
		in, _ := json.Marshal(Cities[n])
		res.Actions = []*pb.OrchestratorAction{{Id: next, OrchestratorActionType: &pb.OrchestratorAction_ScheduleTask{
			ScheduleTask: &pb.ScheduleTaskAction{Name: Activity, Input: wrapperspb.String(string(in))}}}}
	default:
		done := end(next, pb.OrchestrationStatus_ORCHESTRATION_STATUS_COMPLETED, nil)
		done.GetCompleteOrchestration().Result = wrapperspb.String("[" + strings.Join(results, ",") + "]")
		res.Actions = []*pb.OrchestratorAction{done}
	}
	return res
}

func end(id int32, st pb.OrchestrationStatus, err error) *pb.OrchestratorAction {
	c := &pb.CompleteOrchestrationAction{OrchestrationStatus: st}
	if err != nil {
		c.FailureDetails = &pb.TaskFailureDetails{ErrorType: "HelloCitiesError", ErrorMessage: err.Error()}
	}
	return &pb.OrchestratorAction{Id: id, OrchestratorActionType: &pb.OrchestratorAction_CompleteOrchestration{CompleteOrchestration: c}}
}
