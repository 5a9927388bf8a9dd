package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// demoFunctions are the orchestrations --demo registers.
var demoFunctions = []string{"HelloCities", "Approval", "Countdown", "FanOut", "Gather", "Chain"}

// registerDemo adds the demo orchestrations and their activities:
//
//   - HelloCities calls activity SayHello for Tokyo, Seattle and London in
//     sequence; output ["Hello Tokyo!","Hello Seattle!","Hello London!"].
//   - Approval (input {"timeoutSeconds": N}) waits for event "approve" or a
//     durable timer of N seconds; output {"approved": true, "by": <event
//     data>} or {"approved": false}.
//   - Countdown (input {"n": N}) runs activity Tick (which returns the ID
//     of the node that ran it), waits a 1 s durable timer and continues as
//     new with n-1 and the ticks so far; at 0 it completes with the ticks.
//   - FanOut (input {"n": N, "bytes": B}) calls activity FanOutItem N
//     times in parallel, each with a B-byte payload that the activity
//     returns, and completes with the sum of the result sizes (N x B). Its
//     payloads together may exceed etcd's request limit (8 x 200 KiB is
//     more than 1.5 MiB): each needs only to fit --max-payload. Every run
//     of FanOutItem logs "demo activity FanOutItem ran" with its instance,
//     task ID and fencing token. Defaults: n 3, bytes 1024.
//   - Gather (input {"events": N, "name": "item"}) waits for N external
//     events of that name (raised before it runs or while it waits) and
//     completes with how many it got. Defaults: events 1, name "item".
//   - Chain (input {"n": N, "ms": M}) calls activity ChainStep N times in
//     sequence, each with the sum so far and its index i, which it adds
//     after M milliseconds; output the sum 0+1+...+(N-1). Every run of
//     ChainStep logs "demo activity ChainStep ran" as it begins, with its
//     instance, task ID and fencing token: a chain of fast local
//     activities, which the node runs in batches (serve --batch-budget).
//     Defaults: n 10, ms 0.
func registerDemo(reg *orchestrator.Registry, nodeID string) error {
	return errors.Join(
		reg.AddActivity("SayHello", orchestrator.Activity(func(ctx context.Context, city string) (string, error) {
			return fmt.Sprintf("Hello %s!", city), nil
		})),
		reg.AddOrchestrator("HelloCities", helloCities),
		reg.AddOrchestrator("Approval", approval),
		reg.AddActivity("Tick", orchestrator.Activity(func(ctx context.Context, _ any) (string, error) {
			return nodeID, nil
		})),
		reg.AddOrchestrator("Countdown", countdown),
		reg.AddActivity("FanOutItem", orchestrator.Activity(fanOutItem)),
		reg.AddOrchestrator("FanOut", fanOut),
		reg.AddOrchestrator("Gather", gather),
		reg.AddActivity("ChainStep", orchestrator.Activity(chainStep)),
		reg.AddOrchestrator("Chain", chain),
	)
}

func helloCities(ctx *orchestrator.OrchestrationContext) (any, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		var s string
		if err := ctx.CallActivity("SayHello", city).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func approval(ctx *orchestrator.OrchestrationContext) (any, error) {
	var in struct {
		TimeoutSeconds int `json:"timeoutSeconds"`
	}
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if in.TimeoutSeconds <= 0 {
		in.TimeoutSeconds = 3600
	}
	_ = ctx.SetCustomStatus("waiting for event 'approve'")
	var by any
	err := ctx.WaitForExternalEvent("approve", time.Duration(in.TimeoutSeconds)*time.Second).Await(&by)
	if errors.Is(err, orchestrator.ErrEventTimeout) {
		return map[string]any{"approved": false}, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"approved": true, "by": by}, nil
}

func countdown(ctx *orchestrator.OrchestrationContext) (any, error) {
	var in struct {
		N     int      `json:"n"`
		Ticks []string `json:"ticks"`
	}
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if in.N <= 0 {
		if in.Ticks == nil {
			in.Ticks = []string{}
		}
		return in.Ticks, nil
	}
	var node string
	if err := ctx.CallActivity("Tick", in.N).Await(&node); err != nil {
		return nil, err
	}
	_ = ctx.SetCustomStatus(map[string]any{"n": in.N, "lastTickBy": node})
	if err := ctx.CreateTimer(time.Second).Await(nil); err != nil {
		return nil, err
	}
	in.Ticks = append(in.Ticks, node)
	in.N--
	ctx.ContinueAsNew(in)
	return nil, nil
}

// fanOutPayload is the input of one FanOutItem.
type fanOutPayload struct {
	I    int    `json:"i"`
	Data string `json:"data"`
}

func fanOut(ctx *orchestrator.OrchestrationContext) (any, error) {
	in := struct {
		N     *int `json:"n"`
		Bytes *int `json:"bytes"`
	}{}
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	n, size := 3, 1024
	if in.N != nil {
		n = *in.N
	}
	if in.Bytes != nil {
		size = *in.Bytes
	}
	if n < 0 || size < 0 {
		return nil, fmt.Errorf("FanOut needs n >= 0 and bytes >= 0, got n %d and bytes %d", n, size)
	}
	tasks := make([]*orchestrator.Task, n)
	for i := range tasks {
		letter := string(rune('a' + i%26))
		tasks[i] = ctx.CallActivity("FanOutItem", fanOutPayload{I: i, Data: strings.Repeat(letter, size)})
	}
	total := 0
	for _, t := range tasks {
		var out string
		if err := t.Await(&out); err != nil {
			return nil, err
		}
		total += len(out)
	}
	return total, nil
}

// fanOutItem returns its payload, so results are as large as inputs.
func fanOutItem(ctx context.Context, in fanOutPayload) (string, error) {
	attrs := []any{"i", in.I, "bytes", len(in.Data)}
	if info, ok := orchestrator.ActivityInfoFrom(ctx); ok {
		attrs = append(attrs, "instance_id", info.InstanceID, "execution_id", info.ExecutionID,
			"task_id", info.TaskID, "fencing_token", info.FencingToken)
	}
	slog.Default().Info("demo activity FanOutItem ran", attrs...)
	return in.Data, nil
}

func gather(ctx *orchestrator.OrchestrationContext) (any, error) {
	in := struct {
		Events *int   `json:"events"`
		Name   string `json:"name"`
	}{}
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	want := 1
	if in.Events != nil {
		want = *in.Events
	}
	if in.Name == "" {
		in.Name = "item"
	}
	if want < 0 {
		return nil, fmt.Errorf("Gather needs events >= 0, got %d", want)
	}
	got := 0
	for got < want {
		if err := ctx.WaitForExternalEvent(in.Name, 0).Await(nil); err != nil {
			return got, err
		}
		got++
		if got%64 == 0 || got == want {
			_ = ctx.SetCustomStatus(map[string]int{"received": got, "of": want})
		}
	}
	return got, nil
}

// chainLink is the input of one ChainStep.
type chainLink struct {
	I   int `json:"i"`
	Sum int `json:"sum"`
	Ms  int `json:"ms"`
}

func chain(ctx *orchestrator.OrchestrationContext) (any, error) {
	in := struct {
		N  *int `json:"n"`
		Ms int  `json:"ms"`
	}{}
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	n := 10
	if in.N != nil {
		n = *in.N
	}
	if n < 0 || in.Ms < 0 {
		return nil, fmt.Errorf("Chain needs n >= 0 and ms >= 0, got n %d and ms %d", n, in.Ms)
	}
	sum := 0
	for i := 0; i < n; i++ {
		if err := ctx.CallActivity("ChainStep", chainLink{I: i, Sum: sum, Ms: in.Ms}).Await(&sum); err != nil {
			return nil, err
		}
	}
	return sum, nil
}

// chainStep logs its run before anything else (the log line is its side
// effect, written even if the node dies during the step), then adds its
// index to the sum after in.Ms milliseconds.
func chainStep(ctx context.Context, in chainLink) (int, error) {
	attrs := []any{"i", in.I}
	if info, ok := orchestrator.ActivityInfoFrom(ctx); ok {
		attrs = append(attrs, "instance_id", info.InstanceID, "execution_id", info.ExecutionID,
			"task_id", info.TaskID, "fencing_token", info.FencingToken)
	}
	slog.Default().Info("demo activity ChainStep ran", attrs...)
	if in.Ms > 0 {
		t := time.NewTimer(time.Duration(in.Ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-t.C:
		}
	}
	return in.Sum + in.I, nil
}
