package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// runExample starts an embedded etcd and one node with reg, runs body with
// a client, and shuts everything down.
func runExample(reg *orchestrator.Registry, body func(ctx context.Context, c *orchestrator.Client)) {
	dir, _ := os.MkdirTemp("", "soloist-example")
	defer os.RemoveAll(dir)
	etcd, err := leasetest.StartIn(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	node, err := scheduler.New(scheduler.Config{
		Etcd: etcd.Client(), NodeID: "example", LeaseTTL: 2 * time.Second,
		Registry: reg, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer node.Drain(ctx)
	body(ctx, node.Client())
}

func wait(ctx context.Context, c *orchestrator.Client, id string) *orchestrator.Status {
	for {
		st, err := c.Status(ctx, id)
		if err == nil && st.RuntimeStatus.Terminal() || ctx.Err() != nil {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An orchestration calls activities in sequence; a takeover resumes it
// without running completed activities again.
func Example_activities() {
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("SayHello", orchestrator.Activity(func(ctx context.Context, city string) (string, error) {
		return "Hello " + city + "!", nil
	}))
	_ = reg.AddOrchestrator("HelloCities", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var out []string
		for _, city := range []string{"Tokyo", "Seattle", "London"} {
			var s string
			if err := ctx.CallActivity("SayHello", city).Await(&s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	})
	runExample(reg, func(ctx context.Context, c *orchestrator.Client) {
		if _, err := c.Start(ctx, "HelloCities", orchestrator.StartOptions{InstanceID: "hello"}); err != nil {
			fmt.Println(err)
			return
		}
		// A second start of the same active ID is refused.
		_, err := c.Start(ctx, "HelloCities", orchestrator.StartOptions{InstanceID: "hello"})
		fmt.Println(err)
		st := wait(ctx, c, "hello")
		fmt.Println(st.RuntimeStatus, string(st.Output))
	})
	// Output:
	// An instance with ID 'hello' already exists.
	// Completed ["Hello Tokyo!","Hello Seattle!","Hello London!"]
}

// An orchestration waits for an external event or a durable timer,
// whichever comes first.
func Example_approval() {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Approval", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var by string
		err := ctx.WaitForExternalEvent("approve", 10*time.Second).Await(&by)
		if errors.Is(err, orchestrator.ErrEventTimeout) {
			return map[string]any{"approved": false}, nil
		}
		if err != nil {
			return nil, err
		}
		return map[string]any{"approved": true, "by": by}, nil
	})
	runExample(reg, func(ctx context.Context, c *orchestrator.Client) {
		if _, err := c.Start(ctx, "Approval", orchestrator.StartOptions{InstanceID: "req-1"}); err != nil {
			fmt.Println(err)
			return
		}
		if err := c.RaiseEvent(ctx, "req-1", "approve", json.RawMessage(`"alice"`)); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(string(wait(ctx, c, "req-1").Output))
	})
	// Output:
	// {"approved":true,"by":"alice"}
}

// An eternal orchestration restarts itself with ContinueAsNew, each
// generation with a fresh history.
func Example_continueAsNew() {
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Counter", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var n int
		_ = ctx.GetInput(&n)
		if n == 3 {
			return n, nil
		}
		if err := ctx.CreateTimer(10 * time.Millisecond).Await(nil); err != nil {
			return nil, err
		}
		ctx.ContinueAsNew(n + 1)
		return nil, nil
	})
	runExample(reg, func(ctx context.Context, c *orchestrator.Client) {
		if _, err := c.Start(ctx, "Counter", orchestrator.StartOptions{InstanceID: "counter", Input: json.RawMessage("0")}); err != nil {
			fmt.Println(err)
			return
		}
		st := wait(ctx, c, "counter")
		fmt.Println(st.RuntimeStatus, string(st.Output))
	})
	// Output:
	// Completed 3
}
