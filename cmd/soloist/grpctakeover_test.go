package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/soloist-dev/soloist/scheduler/sidecar/sidecartest"
)

// Two soloist serve processes on one etcd, each with a Durable Task worker
// connected over gRPC. An instance runs on one of them; while the worker
// of that node holds its second activity, the node is killed with
// SIGKILL. The other node takes the instance over, sends the open
// activity to its own worker and finishes the orchestration: Completed
// with the whole output within the lease TTL + 2 s of the kill.
func TestServeGRPCWorkerTakeover(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	const ttl = 2 * time.Second
	endpoint := startEtcd(t, t.TempDir(), nil)
	ids := []string{"gk-a", "gk-b"}
	var procs []*serveProc
	var conns []*grpc.ClientConn
	for _, id := range ids {
		addr := freeAddr(t)
		p := startServe(t, "--etcd-endpoints", endpoint, "--node-id", id, "--grpc-listen", addr, "--lease-ttl", ttl.String())
		procs = append(procs, p)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	for _, p := range procs {
		p.waitReady()
	}

	// Each worker answers SayHello, but holds "Seattle" (the second
	// activity) until the kill, and says whose node holds the instance.
	var killed atomic.Bool
	holder := make(chan int, 2)
	var workers []*sidecartest.Worker
	for i, conn := range conns {
		w, err := sidecartest.Connect(context.Background(), conn, sidecartest.Options{
			Activity: func(ctx context.Context, call sidecartest.ActivityCall) (string, error) {
				if call.Input == `"Seattle"` && !killed.Load() {
					holder <- i
					<-ctx.Done()
					return "", ctx.Err()
				}
				return sidecartest.SayHello(ctx, call)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		workers = append(workers, w)
	}
	for i, p := range procs { // both workers registered in their node keys
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _, code := p.cli(nil, "nodes", "-o", "json")
			if code == 0 && strings.Count(out, `"workers": 1`) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: the node keys do not list both workers: %s", ids[i], out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sidecartest.Start(ctx, conns[0], sidecartest.Orchestration, "gk1", ""); err != nil {
		t.Fatal(err)
	}
	var h int
	select {
	case h = <-holder:
	case <-ctx.Done():
		t.Fatal("no worker got the Seattle activity within 60s")
	}
	other := 1 - h
	killed.Store(true)
	t0 := time.Now()
	if err := procs[h].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-procs[h].exited
	st, err := sidecartest.WaitForCompletion(ctx, conns[other], "gk1")
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of %s (holder) to Completed, finished by %s's worker: %s (lease TTL %s)", ids[h], ids[other], took.Round(time.Millisecond), ttl)
	if st.Status != "COMPLETED" || st.Output != sidecartest.Output {
		t.Fatalf("after the takeover: %+v, want COMPLETED with %s", st, sidecartest.Output)
	}
	if took > ttl+2*time.Second {
		t.Errorf("finished %s after the kill, want within the lease TTL + 2s (%s)", took, ttl+2*time.Second)
	}
	if n := workers[other].Activities(); n < 2 {
		t.Errorf("%s's worker ran %d activities, want Seattle (sent again) and London", ids[other], n)
	}
	if err := workers[other].Err(); err != nil {
		t.Errorf("%s's worker: %v", ids[other], err)
	}
	// The survivor logs the run's end right after its final write, which
	// the client may see first.
	ended := func() bool {
		for _, l := range procs[other].logLines() {
			if strings.Contains(l, `"msg":"run ended"`) && strings.Contains(l, "gk1") && strings.Contains(l, `"runtime_status":"Completed"`) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !ended(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no 'run ended' of gk1 with runtime_status Completed", ids[other])
		}
	}
	for i, p := range procs {
		for _, l := range p.logLines() {
			if strings.Contains(l, "gk1") {
				t.Logf("%s: %s", ids[i], l)
			}
		}
	}
	if code := procs[other].stop(30 * time.Second); code != 0 {
		t.Fatalf("%s exit code %d", ids[other], code)
	}
}
