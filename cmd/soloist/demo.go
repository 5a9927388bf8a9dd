package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// demoFunctions are the orchestrations --demo registers.
var demoFunctions = []string{"HelloCities", "Approval", "Countdown"}

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
