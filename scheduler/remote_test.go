package scheduler_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// fakeRemote serves the orchestrations of a registry of its own while on.
type fakeRemote struct {
	reg    *orchestrator.Registry
	on     atomic.Bool
	drives atomic.Int32
}

func (f *fakeRemote) Serves(name, version string) bool {
	_, ok := f.reg.OrchestratorVersion(name, version)
	return ok && f.on.Load()
}

func (f *fakeRemote) Functions() []string {
	if !f.on.Load() {
		return nil
	}
	return f.reg.Functions()
}

func (f *fakeRemote) Workers() int {
	if !f.on.Load() {
		return 0
	}
	return 2
}

func (f *fakeRemote) Drive(ctx context.Context, exec *orchestrator.Execution, opts orchestrator.RunOptions) (*orchestrator.Driver, error) {
	f.drives.Add(1)
	return f.reg.Drive(ctx, exec, opts)
}

// A node campaigns for an orchestration its Registry lacks once its Remote
// serves it (not before), runs it with the Remote, and lists it in its node
// key.
func TestRemoteServesWhatRegistryLacks(t *testing.T) {
	e := leasetest.Start(t)
	prefix := "/" + t.Name() + "/"
	remote := &fakeRemote{reg: orchestrator.NewRegistry()}
	if err := remote.reg.AddOrchestrator("Remote", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return "remote ran", nil
	}); err != nil {
		t.Fatal(err)
	}
	node, err := scheduler.New(scheduler.Config{
		Etcd: e.Client(), Prefix: prefix, NodeID: "n1", LeaseTTL: 2 * time.Second,
		Registry: orchestrator.NewRegistry(), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.SetRemote(remote); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Drain(context.Background()) })
	if err := node.SetRemote(remote); err == nil {
		t.Fatal("SetRemote after Start: want an error")
	}
	cl := orchestrator.NewClient(e.Client(), orchestrator.ClientConfig{Prefix: prefix})
	if _, err := cl.Start(ctx, "Remote", orchestrator.StartOptions{InstanceID: "r1"}); err != nil {
		t.Fatal(err)
	}
	nodeInfo := func() orchestrator.NodeInfo {
		resp, err := e.Client().Get(ctx, cl.Keys().Node("n1"))
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("node key: %v", err)
		}
		var info orchestrator.NodeInfo
		if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
			t.Fatal(err)
		}
		return info
	}
	nodeFunctions := func() []string { return nodeInfo().Functions }
	time.Sleep(500 * time.Millisecond)
	if st, err := cl.Status(ctx, "r1"); err != nil || st.RuntimeStatus != orchestrator.StatusPending {
		t.Fatalf("before the remote serves it: status %v, %v; want Pending", st, err)
	}
	if info := nodeInfo(); slices.Contains(info.Functions, "Remote") || info.Workers != 0 {
		t.Fatalf("node key lists %v and %d workers before the remote serves Remote", info.Functions, info.Workers)
	}
	remote.on.Store(true)
	node.RemoteChanged()
	st := waitStatus(t, cl, "r1", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `"remote ran"` {
		t.Fatalf("output %s", st.Output)
	}
	if remote.drives.Load() == 0 {
		t.Fatal("the remote drove nothing")
	}
	eventually(t, 5*time.Second, "the node key to list Remote", func() bool { return slices.Contains(nodeFunctions(), "Remote") })
	if w := nodeInfo().Workers; w != 2 {
		t.Fatalf("node key: %d workers, want the remote's 2", w)
	}
}

// A node key that lists "*" runs any orchestration.
func TestNodeInfoRunsAnyFunction(t *testing.T) {
	info := orchestrator.NodeInfo{Functions: []string{orchestrator.AnyFunction}}
	if !info.Runs("Whatever", "v2") {
		t.Fatal(`a node listing "*" should run any orchestration`)
	}
	info.Role = "api"
	if info.Runs("Whatever", "") {
		t.Fatal("an API-only node runs nothing")
	}
}

// An instance the node runs with its Remote is released, about a lease TTL
// after the Remote stops serving it (its worker went), so that a node
// whose worker serves it can take it; nothing of the instance changes. It
// is taken again once the Remote serves it again.
func TestRemoteGoneReleasesInstance(t *testing.T) {
	e := leasetest.Start(t)
	prefix := "/" + t.Name() + "/"
	remote := &fakeRemote{reg: orchestrator.NewRegistry()}
	if err := remote.reg.AddOrchestrator("Waits", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v string
		err := ctx.WaitForExternalEvent("go", 0).Await(&v)
		return v, err
	}); err != nil {
		t.Fatal(err)
	}
	remote.on.Store(true)
	node, err := scheduler.New(scheduler.Config{
		Etcd: e.Client(), Prefix: prefix, NodeID: "n1", LeaseTTL: 2 * time.Second,
		Registry: orchestrator.NewRegistry(), Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.SetRemote(remote); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Drain(context.Background()) })
	cl := orchestrator.NewClient(e.Client(), orchestrator.ClientConfig{Prefix: prefix})
	if _, err := cl.Start(ctx, "Waits", orchestrator.StartOptions{InstanceID: "w1"}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, cl, "w1", orchestrator.StatusRunning, 10*time.Second)
	eventually(t, 5*time.Second, "the node to hold w1", func() bool { return slices.Contains(node.Held(), "w1") })
	first, err := cl.Status(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}

	remote.on.Store(false)
	node.RemoteChanged()
	eventually(t, 10*time.Second, "the node to release w1", func() bool { return !slices.Contains(node.Held(), "w1") })
	resp, err := e.Client().Get(ctx, cl.Keys().Owner("w1"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("owners key after the release: %v %v", resp, err)
	}
	if st, err := cl.Status(ctx, "w1"); err != nil || st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("after the release: %v %v, want Running", st, err)
	}

	remote.on.Store(true)
	node.RemoteChanged()
	eventually(t, 10*time.Second, "the node to take w1 again", func() bool { return slices.Contains(node.Held(), "w1") })
	if err := cl.RaiseEvent(ctx, "w1", "go", json.RawMessage(`"back"`)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, cl, "w1", orchestrator.StatusCompleted, 10*time.Second)
	if string(st.Output) != `"back"` || st.FencingToken <= first.FencingToken {
		t.Fatalf("output %s, fencing token %d (first %d)", st.Output, st.FencingToken, first.FencingToken)
	}
}
