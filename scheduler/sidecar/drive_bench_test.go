package sidecar_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soloist-dev/soloist/orchestrator"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

var benchCities = []string{"Tokyo", "Seattle", "London"}

// BenchmarkHelloCities runs HelloCities lifecycles (three activities in a
// row, then the output) started and awaited through the sidecar, 16 in
// flight, on one node over an embedded etcd: natively (the orchestration
// and activity in the node's Go registry) and through a scripted worker
// of our own over gRPC. It reports lifecycles/s.
//
//	go test -run - -bench HelloCities -benchtime 200x ./scheduler/sidecar/
func BenchmarkHelloCities(b *testing.B) {
	b.Run("native", func(b *testing.B) { benchHelloCities(b, false) })
	b.Run("worker", func(b *testing.B) { benchHelloCities(b, true) })
}

func benchHelloCities(b *testing.B, viaWorker bool) {
	v := newEnv(b)
	reg := orchestrator.NewRegistry()
	if !viaWorker {
		if err := reg.AddActivity("Hello", orchestrator.Activity(func(_ context.Context, city string) (string, error) {
			return "Hello " + city, nil
		})); err != nil {
			b.Fatal(err)
		}
		if err := reg.AddOrchestrator("HelloCities", func(ctx *orchestrator.OrchestrationContext) (any, error) {
			var out []string
			for _, c := range benchCities {
				var s string
				if err := ctx.CallActivity("Hello", c).Await(&s); err != nil {
					return nil, err
				}
				out = append(out, s)
			}
			return out, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	s := v.startServer(serverOpts{reg: reg})
	if viaWorker {
		autoWorker(b, s)
	}
	const inflight = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	began := time.Now()
	for range inflight {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				id := fmt.Sprintf("hc-%d", i)
				_, err := s.stub.StartInstance(ctx, &pb.CreateInstanceRequest{Name: "HelloCities", InstanceId: id})
				var res *pb.GetInstanceResponse
				if err == nil {
					res, err = s.stub.WaitForInstanceCompletion(ctx, &pb.GetInstanceRequest{InstanceId: id, GetInputsAndOutputs: true})
				}
				cancel()
				if err != nil {
					b.Error(err)
					return
				}
				if out := res.GetOrchestrationState().GetOutput().GetValue(); out != `["Hello Tokyo","Hello Seattle","Hello London"]` {
					b.Errorf("%s: output %s", id, out)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "lifecycles/s")
}

// autoWorker connects a worker that runs HelloCities and Hello until the
// benchmark ends, answering each item in a goroutine of its own.
func autoWorker(b *testing.B, s *server) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.stub.GetWorkItems(ctx, &pb.GetWorkItemsRequest{})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		for {
			it, err := stream.Recv()
			if err != nil {
				return
			}
			wg.Go(func() {
				var err error
				switch {
				case it.GetOrchestratorRequest() != nil:
					_, err = s.stub.CompleteOrchestratorTask(ctx, helloCitiesStep(it.GetOrchestratorRequest(), it.GetCompletionToken()))
				case it.GetActivityRequest() != nil:
					a := it.GetActivityRequest()
					_, err = s.stub.CompleteActivityTask(ctx, &pb.ActivityResponse{InstanceId: a.GetOrchestrationInstance().GetInstanceId(),
						TaskId: a.GetTaskId(), CompletionToken: it.GetCompletionToken(),
						Result: wrapperspb.String(`"Hello ` + strings.Trim(a.GetInput().GetValue(), `"`) + `"`)})
				}
				if err != nil && ctx.Err() == nil {
					b.Error(err)
				}
			})
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !s.srv.Remote().Serves("HelloCities", "") {
		if time.Now().After(deadline) {
			b.Fatal("the worker did not register")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// helloCitiesStep is HelloCities as a worker runs it: from the history,
// schedule the next city's Hello, or complete with the three greetings.
func helloCitiesStep(req *pb.OrchestratorRequest, tok string) *pb.OrchestratorResponse {
	var results []string
	scheduled := 0
	for _, evs := range [][]*pb.HistoryEvent{req.GetPastEvents(), req.GetNewEvents()} {
		for _, ev := range evs {
			if ev.GetTaskScheduled() != nil {
				scheduled++
			}
			if c := ev.GetTaskCompleted(); c != nil {
				results = append(results, c.GetResult().GetValue())
			}
		}
	}
	res := &pb.OrchestratorResponse{InstanceId: req.GetInstanceId(), CompletionToken: tok}
	switch n := len(results); {
	case n < scheduled: // waits for the task in flight
	case n < len(benchCities):
		res.Actions = []*pb.OrchestratorAction{scheduleTask(int32(n), "Hello", `"`+benchCities[n]+`"`)}
	default:
		res.Actions = []*pb.OrchestratorAction{completeWith(int32(n), "["+strings.Join(results, ",")+"]")}
	}
	return res
}
