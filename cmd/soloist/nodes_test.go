package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler/sidecar/sidecartest"
)

// soloist nodes shows the node's connected Durable Task workers and what
// they serve, as its node key says: none before a worker connects, one
// serving "*" while it is connected, none again after it hangs up.
func TestNodesShowsWorkers(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	p := startServe(t, "--grpc-listen", addr, "--node-id", "nw1")
	p.waitReady()
	nodes := func() orchestrator.NodeInfo {
		t.Helper()
		out, errOut, code := p.cli(nil, "nodes", "-o", "json")
		if code != 0 {
			t.Fatalf("soloist nodes: exit %d: %s", code, errOut)
		}
		var list []orchestrator.NodeInfo
		if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0].Node != "nw1" {
			t.Fatalf("soloist nodes -o json: %v, %s", err, out)
		}
		return list[0]
	}
	waitFor := func(what string, cond func(orchestrator.NodeInfo) bool) orchestrator.NodeInfo {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			n := nodes()
			if cond(n) {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: node key %+v", what, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := nodes(); n.Workers != 0 || slices.Contains(n.Functions, orchestrator.AnyFunction) {
		t.Fatalf("before a worker: %+v", n)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, err := sidecartest.Connect(context.Background(), conn, sidecartest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor("a worker connected", func(n orchestrator.NodeInfo) bool {
		return n.Workers == 1 && slices.Contains(n.Functions, orchestrator.AnyFunction)
	})
	out, errOut, code := p.cli(nil, "nodes", "-o", "table")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "NODE") {
		t.Fatalf("soloist nodes -o table: exit %d\n%s%s", code, out, errOut)
	}
	if f := strings.Fields(lines[1]); len(f) != 7 || f[0] != "nw1" || f[4] != "up" || f[5] != "1" || f[6] != "*" {
		t.Fatalf("table row %q, want nw1 ... up 1 *", lines[1])
	}

	w.Close()
	waitFor("the worker gone", func(n orchestrator.NodeInfo) bool {
		return n.Workers == 0 && !slices.Contains(n.Functions, orchestrator.AnyFunction)
	})
	if code := p.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
