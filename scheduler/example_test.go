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

// wait waits for the instance to end, with the client's watch-driven wait.
func wait(ctx context.Context, c *orchestrator.Client, id string) *orchestrator.Status {
	st, err := c.WaitForOrchestrationCompletion(ctx, id)
	if err != nil {
		fmt.Println(err)
		return &orchestrator.Status{}
	}
	return st
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

// A parent orchestration fans out to sub-orchestrations, each an ordinary
// instance with its own lease (it may run on another node), and gathers
// their results.
func Example_subOrchestration() {
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Price", orchestrator.Activity(func(ctx context.Context, item string) (int, error) {
		return len(item) * 10, nil
	}))
	_ = reg.AddOrchestrator("Quote", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var item string
		_ = ctx.GetInput(&item)
		var price int
		err := ctx.CallActivity("Price", item).Await(&price)
		return price, err
	})
	_ = reg.AddOrchestrator("Basket", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var items []string
		_ = ctx.GetInput(&items)
		var quotes []*orchestrator.Task
		for _, item := range items {
			quotes = append(quotes, ctx.CallSubOrchestrator("Quote", orchestrator.WithSubOrchestratorInput(item)))
		}
		total := 0
		for _, q := range quotes {
			var p int
			if err := q.Await(&p); err != nil {
				return nil, err
			}
			total += p
		}
		return total, nil
	})
	runExample(reg, func(ctx context.Context, c *orchestrator.Client) {
		if _, err := c.Start(ctx, "Basket", orchestrator.StartOptions{InstanceID: "basket", Input: json.RawMessage(`["tea","milk"]`)}); err != nil {
			fmt.Println(err)
			return
		}
		st := wait(ctx, c, "basket")
		child, _ := c.Status(ctx, "basket:0000")
		fmt.Println(st.RuntimeStatus, string(st.Output), "- first child", child.InstanceID, "of", child.ParentInstanceID)
	})
	// Output:
	// Completed 70 - first child basket:0000 of basket
}

// Failures carry their details: the orchestration tells an activity's
// failure apart by its type, and a Failed instance's status shows them.
func Example_failureDetails() {
	reg := orchestrator.NewRegistry()
	_ = reg.AddActivity("Reserve", orchestrator.Activity(func(ctx context.Context, n int) (any, error) {
		return nil, &orchestrator.ApplicationError{Type: "OutOfStock", Message: fmt.Sprintf("only 2 left, %d asked", n), NonRetriable: true}
	}))
	_ = reg.AddOrchestrator("Order", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		err := ctx.CallActivity("Reserve", 5, orchestrator.WithRetry(orchestrator.RetryPolicy{MaxAttempts: 3})).Await(nil)
		var tf *orchestrator.TaskFailedError
		if errors.As(err, &tf) && tf.Details != nil && tf.Details.ErrorType == "OutOfStock" {
			// Not retried (NonRetriable); fail the order with a cause.
			return nil, &orchestrator.ApplicationError{Type: "OrderRejected", Message: "cannot reserve the items", Cause: err}
		}
		return "ordered", err
	})
	runExample(reg, func(ctx context.Context, c *orchestrator.Client) {
		if _, err := c.Start(ctx, "Order", orchestrator.StartOptions{InstanceID: "order-7"}); err != nil {
			fmt.Println(err)
			return
		}
		st := wait(ctx, c, "order-7")
		fd := st.FailureDetails
		fmt.Println(st.RuntimeStatus, fd.ErrorType, "-", fd.ErrorMessage)
		fmt.Println("caused by:", fd.InnerFailure.ErrorType, "-", fd.InnerFailure.InnerFailure.ErrorType, fd.InnerFailure.InnerFailure.ErrorMessage)
	})
	// Output:
	// Failed OrderRejected - cannot reserve the items
	// caused by: TaskFailed - OutOfStock only 2 left, 5 asked
}
