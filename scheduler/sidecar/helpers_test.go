package sidecar_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/sidecar"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// env is an embedded etcd with sidecar servers on top, each on its own
// node.
type env struct {
	t      testing.TB
	e      *leasetest.Etcd
	prefix string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return &env{t: t, e: leasetest.Start(t), prefix: "/" + t.Name() + "/"}
}

// client is an orchestrator client on the env's etcd.
func (v *env) client() *orchestrator.Client {
	return orchestrator.NewClient(v.e.Client(), orchestrator.ClientConfig{Prefix: v.prefix, MaxPayload: 16 << 10})
}

// server is one sidecar server and a gRPC connection to it.
type server struct {
	srv  *sidecar.Server
	node *scheduler.Node
	conn *grpc.ClientConn
	stub pb.TaskHubSidecarServiceClient
	reg  *prometheus.Registry
	addr string
	etcd *clientv3.Client
}

// serverOpts tune startServer.
type serverOpts struct {
	keys []string
	// reg, if set, is the registry of a scheduler.Node run under the
	// server, which runs the instances of its functions.
	reg *orchestrator.Registry
	// tp, if set, is the server's tracer provider.
	tp trace.TracerProvider
	// log, if set, gets the server's and its node's lines.
	log *slog.Logger
	// parkAfter is the node's ParkAfter (0: its default).
	parkAfter time.Duration
	// batch is the node's BatchBudget (0: every step commits).
	batch time.Duration
}

// startServer starts a sidecar server on a loopback port and dials it.
func (v *env) startServer(o serverOpts) *server {
	t := v.t
	t.Helper()
	reg := prometheus.NewRegistry()
	ec := v.e.Client() // the server's and its node's: closing it cuts them from etcd, as a crash would
	client := orchestrator.NewClient(ec, orchestrator.ClientConfig{Prefix: v.prefix, MaxPayload: 16 << 10, TracerProvider: o.tp})
	logger := o.log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := sidecar.Config{Client: client, Registerer: reg, APIKeys: o.keys, Logger: logger, TracerProvider: o.tp}
	s := &server{reg: reg, etcd: ec}
	var node *scheduler.Node
	if o.reg != nil {
		var err error
		node, err = scheduler.New(scheduler.Config{
			Etcd: ec, Prefix: v.prefix, NodeID: fmt.Sprintf("node-%d", time.Now().UnixNano()), LeaseTTL: 2 * time.Second,
			Logger: logger, Registry: o.reg, PreferenceDelay: 20 * time.Millisecond, Registerer: prometheus.NewRegistry(), Client: client,
			ParkAfter: o.parkAfter, BatchBudget: o.batch,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.node, cfg.Node = node, node
	}
	srv, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if node != nil {
		// As serve does: the node runs what the server's workers serve.
		if err := node.SetRemote(srv.Remote()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := node.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = node.Drain(ctx)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	s.srv, s.conn, s.stub, s.addr = srv, conn, pb.NewTaskHubSidecarServiceClient(conn), ln.Addr().String()
	return s
}

// ctx is a call context with a deadline, and the key if given.
func callCtx(t testing.TB, key ...string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if len(key) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key[0])
	}
	return ctx
}

// wantCode fails unless err is a gRPC status with code c whose message
// contains every one of parts.
func wantCode(t *testing.T, err error, c codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != c {
		t.Fatalf("got %v, want code %s", err, c)
	}
	for _, p := range parts {
		if !contains(st.Message(), p) {
			t.Fatalf("message %q does not contain %q", st.Message(), p)
		}
	}
}

func contains(s, sub string) bool {
	return strings.Contains(s, sub)
}

// testRegistry has the orchestrations the tests start through the sidecar
// (run by the node in Go; the work-item side is not needed for them):
//
//   - Hello(name) calls the activity Hello and returns "Hello name".
//   - Wait waits for the event "go" and returns its data.
//   - Fail fails with "boom".
//   - Parent starts Wait as the sub-orchestration ID+"-child" and returns its output.
//   - Flaky calls the activity Flaky, which fails on its first call.
func testRegistry(t *testing.T) *orchestrator.Registry {
	t.Helper()
	reg := orchestrator.NewRegistry()
	var flaky atomic.Int32
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.AddActivity("Hello", orchestrator.Activity(func(_ context.Context, name string) (string, error) {
		return "Hello " + name, nil
	})))
	must(reg.AddActivity("Flaky", orchestrator.Activity(func(_ context.Context, _ any) (string, error) {
		if flaky.Add(1) == 1 {
			return "", errors.New("flaky: first call fails")
		}
		return "fine", nil
	})))
	must(reg.AddOrchestrator("Hello", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var name, out string
		if err := ctx.GetInput(&name); err != nil {
			return nil, err
		}
		err := ctx.CallActivity("Hello", name).Await(&out)
		return out, err
	}))
	must(reg.AddOrchestrator("Wait", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v any
		err := ctx.WaitForExternalEvent("go", 0).Await(&v)
		return v, err
	}))
	must(reg.AddOrchestrator("Fail", func(*orchestrator.OrchestrationContext) (any, error) {
		return nil, errors.New("boom")
	}))
	must(reg.AddOrchestrator("Parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v any
		err := ctx.CallSubOrchestrator("Wait", orchestrator.WithSubOrchestrationInstanceID(ctx.InstanceID()+"-child")).Await(&v)
		return v, err
	}))
	must(reg.AddOrchestrator("Flaky", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var out string
		err := ctx.CallActivity("Flaky", nil).Await(&out)
		return out, err
	}))
	return reg
}

// get reads an instance through the sidecar, inputs and outputs included.
func (s *server) get(t *testing.T, id string) *pb.OrchestrationState {
	t.Helper()
	resp, err := s.stub.GetInstance(callCtx(t), &pb.GetInstanceRequest{InstanceId: id, GetInputsAndOutputs: true})
	if err != nil {
		t.Fatalf("GetInstance %s: %v", id, err)
	}
	if !resp.GetExists() {
		return nil
	}
	return resp.GetOrchestrationState()
}

// waitDone waits for an instance to end, through the sidecar.
func (s *server) waitDone(t *testing.T, id string) *pb.OrchestrationState {
	t.Helper()
	resp, err := s.stub.WaitForInstanceCompletion(callCtx(t), &pb.GetInstanceRequest{InstanceId: id, GetInputsAndOutputs: true})
	if err != nil {
		t.Fatalf("WaitForInstanceCompletion %s: %v", id, err)
	}
	if !resp.GetExists() {
		t.Fatalf("WaitForInstanceCompletion %s: it does not exist", id)
	}
	return resp.GetOrchestrationState()
}

// start starts name as id through the sidecar, with input as JSON text.
func (s *server) start(t *testing.T, name, id, input string) {
	t.Helper()
	req := &pb.CreateInstanceRequest{Name: name, InstanceId: id}
	if input != "" {
		req.Input = wrapperspb.String(input)
	}
	if _, err := s.stub.StartInstance(callCtx(t), req); err != nil {
		t.Fatalf("StartInstance %s %s: %v", name, id, err)
	}
}

// waitStatus polls an instance until it has status want.
func (s *server) waitStatus(t *testing.T, id string, want pb.OrchestrationStatus) *pb.OrchestrationState {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.get(t, id)
		if st != nil && st.GetOrchestrationStatus() == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %v, want %v", id, st.GetOrchestrationStatus(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawMessage is a message sent as raw bytes (rawCodec).
type rawMessage []byte

// rawCodec sends and receives rawMessage bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawMessage) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// logBuffer collects log lines (JSON) for a test to look at.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// lines are the lines written so far.
func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}
