// Command durabletask-go-probe is a Durable Task worker and client written
// with the Go SDK (github.com/microsoft/durabletask-go) and nothing of
// Soloist, a module of its own. Given a gRPC address it serves an
// orchestration and an activity, starts the orchestration, raises the
// event it waits for, waits for its end, then races starts of another ID,
// and prints the final state and the race's count as JSON. TestServeDurableTaskGoSDK runs it against soloist serve.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/microsoft/durabletask-go/api"
	"github.com/microsoft/durabletask-go/backend"
	"github.com/microsoft/durabletask-go/client"
	"github.com/microsoft/durabletask-go/task"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:4001", "gRPC address")
	id := flag.String("id", "sdk-1", "instance ID")
	flag.Parse()
	if err := run(*addr, *id); err != nil {
		fmt.Fprintln(os.Stderr, "durabletask-go-probe:", err)
		os.Exit(1)
	}
}

func run(addr, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	r := task.NewTaskRegistry()
	if err := r.AddOrchestratorN("SdkGreet", greet); err != nil {
		return err
	}
	if err := r.AddActivityN("SdkSayHello", sayHello); err != nil {
		return err
	}
	c := client.NewTaskHubGrpcClient(conn, backend.DefaultLogger())
	if err := c.StartWorkItemListener(ctx, r); err != nil {
		return fmt.Errorf("work item listener: %w", err)
	}
	if _, err := c.ScheduleNewOrchestration(ctx, "SdkGreet", api.WithInstanceID(api.InstanceID(id)), api.WithInput([]string{"Tokyo", "London"})); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	if _, err := c.WaitForOrchestrationStart(ctx, api.InstanceID(id)); err != nil {
		return fmt.Errorf("wait for start: %w", err)
	}
	if err := c.RaiseEvent(ctx, api.InstanceID(id), "approve", api.WithEventPayload("ops")); err != nil {
		return fmt.Errorf("raise: %w", err)
	}
	md, err := c.WaitForOrchestrationCompletion(ctx, api.InstanceID(id), api.WithFetchPayloads(true))
	if err != nil {
		return fmt.Errorf("wait for completion: %w", err)
	}
	out := map[string]any{
		"status": md.RuntimeStatus.String(), "output": md.SerializedOutput, "input": md.SerializedInput,
		"customStatus": md.SerializedCustomStatus, "name": md.Name,
	}
	if md.FailureDetails != nil {
		out["failure"] = md.FailureDetails.GetErrorMessage()
	}
	// The singleton race: racing starts of one ID, each a plain
	// ScheduleNewOrchestration as an SDK user writes it.
	won, refused := 0, 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ScheduleNewOrchestration(ctx, "SdkGreet", api.WithInstanceID(api.InstanceID(id+"-race")), api.WithInput([]string{"Oslo"}))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else if status.Code(err) == codes.AlreadyExists {
				refused++
			}
		}()
	}
	wg.Wait()
	out["raceWon"], out["raceRefused"] = won, refused
	return json.NewEncoder(os.Stdout).Encode(out)
}

// racers is how many starts of one ID race.
const racers = 20

func greet(ctx *task.OrchestrationContext) (any, error) {
	var cities []string
	if err := ctx.GetInput(&cities); err != nil {
		return nil, err
	}
	var by string
	if err := ctx.WaitForSingleEvent("approve", 30*time.Second).Await(&by); err != nil {
		return nil, err
	}
	ctx.SetCustomStatus("approved by " + by)
	var out []string
	for _, city := range cities {
		var s string
		if err := ctx.CallActivity("SdkSayHello", task.WithActivityInput(city)).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if err := ctx.CreateTimer(10 * time.Millisecond).Await(nil); err != nil {
		return nil, err
	}
	return out, nil
}

func sayHello(ctx task.ActivityContext) (any, error) {
	var city string
	if err := ctx.GetInput(&city); err != nil {
		return nil, err
	}
	return "Hello, " + city + "!", nil
}
