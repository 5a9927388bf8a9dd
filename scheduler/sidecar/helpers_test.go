package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/sidecar"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// env is an embedded etcd with sidecar servers on top, each on its own
// node.
type env struct {
	t      *testing.T
	e      *leasetest.Etcd
	prefix string
}

func newEnv(t *testing.T) *env {
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
}

// serverOpts tune startServer.
type serverOpts struct {
	keys []string
	node bool // run a scheduler.Node (with an empty registry) under the server
}

// startServer starts a sidecar server on a loopback port and dials it.
func (v *env) startServer(o serverOpts) *server {
	t := v.t
	t.Helper()
	reg := prometheus.NewRegistry()
	client := v.client()
	cfg := sidecar.Config{Client: client, Registerer: reg, APIKeys: o.keys}
	s := &server{reg: reg}
	if o.node {
		node, err := scheduler.New(scheduler.Config{
			Etcd: v.e.Client(), Prefix: v.prefix, NodeID: fmt.Sprintf("node-%d", time.Now().UnixNano()), LeaseTTL: 2 * time.Second,
			Registry: orchestrator.NewRegistry(), Registerer: prometheus.NewRegistry(), Client: client,
		})
		if err != nil {
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
		s.node, cfg.Node = node, node
	}
	srv, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
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
func callCtx(t *testing.T, key ...string) context.Context {
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
