package sidecar

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	pb "github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// Config configures a Server.
type Config struct {
	// Client performs the instance operations. Required.
	Client *orchestrator.Client
	// Node is the node this server is the sidecar of: its readiness gates
	// starts, and (with the work-item side) it campaigns for the
	// orchestrations connected workers serve. May be nil for a server that
	// serves the client RPCs only.
	Node *scheduler.Node
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the server's metrics. Required.
	Registerer prometheus.Registerer
	// MaxPayload limits each input, output, custom status, event and result
	// in a request, in bytes. Defaults to Client.MaxPayload(). A message
	// may carry MessageFactor payloads plus MessageOverhead bytes; a larger
	// one is refused with RESOURCE_EXHAUSTED before it is decoded.
	MaxPayload int
	// APIKeys, if not empty, are required on every RPC, as the gRPC metadata
	// "authorization: Bearer KEY" or "x-functions-key: KEY"; a call without
	// a valid one gets UNAUTHENTICATED. A key must not be empty nor contain
	// white space or control characters.
	APIKeys []string
	// TLS, if set, makes the server speak TLS with these credentials.
	TLS credentials.TransportCredentials
	// TracerProvider makes a server span of every call, continuing the W3C
	// trace context the caller sends (the traceparent metadata); a start
	// without a parentTraceContext passes the call's span on to the
	// instance's runs. Defaults to Client.TracerProvider(); the global
	// provider is never used.
	TracerProvider trace.TracerProvider
	// Ready returns nil while starts may be accepted; defaults to
	// Node.Ready, or always ready without a Node.
	Ready func() error
	// PingInterval is how often a GetWorkItems stream gets a health ping.
	// Defaults to 30s (the SDKs give up on a silent stream after 120s).
	PingInterval time.Duration
}

// MessageFactor and MessageOverhead bound a received message: at most
// MessageFactor x MaxPayload + MessageOverhead bytes (1 MiB + 64 KiB with
// the default 256 KiB payload limit). A worker's step result carries
// several payloads (results, inputs of new tasks, a custom status), hence
// the factor; each payload in it is still checked against MaxPayload.
const (
	MessageFactor   = 4
	MessageOverhead = 64 << 10
)

// Server serves TaskHubSidecarService, the Durable Task SDKs' protocol, on
// top of a Soloist node. Create it with New, run it with Serve, stop it with
// Shutdown.
type Server struct {
	pb.UnimplementedTaskHubSidecarServiceServer

	client *orchestrator.Client
	node   *scheduler.Node
	// start is Client.Start, or with a Node its StartInstance, which runs
	// the instance on this node when it should (start where you land).
	start      func(ctx context.Context, name string, opts orchestrator.StartOptions) (*orchestrator.StartResult, error)
	log        *slog.Logger
	maxPayload int
	keys       [][sha256.Size]byte
	ready      func() error
	metrics    *metrics
	work       *hub // the work-item side (workitems.go)
	grpc       *grpc.Server
	// queueCtx ends the task queue's watch and claims (workitems_queue.go)
	// at Shutdown; startQueue starts them at the first Serve.
	queueCtx   context.Context
	stopQueue  context.CancelFunc
	startQueue sync.Once

	// stopping is closed when Shutdown begins: long waits and streams end.
	stopping chan struct{}
	stopOnce sync.Once
}

// New returns a Server; it serves nothing until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("sidecar: Config.Client is required")
	}
	if cfg.Registerer == nil {
		return nil, errors.New("sidecar: Config.Registerer is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = cfg.Client.MaxPayload()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = cfg.Client.TracerProvider()
	}
	s := &Server{
		client:     cfg.Client,
		node:       cfg.Node,
		log:        cfg.Logger.With("component", "sidecar"),
		maxPayload: cfg.MaxPayload,
		ready:      cfg.Ready,
		stopping:   make(chan struct{}),
	}
	s.start = cfg.Client.Start
	if cfg.Node != nil {
		s.start = cfg.Node.StartInstance
	}
	if s.ready == nil {
		s.ready = func() error { return nil }
		if cfg.Node != nil {
			s.ready = cfg.Node.Ready
		}
	}
	for i, k := range cfg.APIKeys {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("sidecar: API key %d is empty or contains white space or control characters", i+1)
		}
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.work, err = newServerHub(cfg, s.log); err != nil {
		return nil, err
	}
	s.queueCtx, s.stopQueue = context.WithCancel(context.Background())
	if cfg.Node != nil {
		s.work.tq = newTaskQueue(s.work, cfg.Client, cfg.Node, s.log, cfg.MaxPayload)
	}
	opts := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(cfg.TracerProvider),
			otelgrpc.WithPropagators(propagation.TraceContext{}), otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()))),
		grpc.MaxRecvMsgSize(MessageFactor*cfg.MaxPayload + MessageOverhead),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		// Workers hold a stream open for hours; let their keepalive pings
		// through, and find dead peers.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(cfg.TLS))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterTaskHubSidecarServiceServer(s.grpc, s)
	return s, nil
}

// Serve accepts connections on ln until Shutdown; it returns nil after
// Shutdown and the listener's error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	if s.work.tq != nil {
		s.startQueue.Do(func() { s.work.tq.start(s.queueCtx) })
	}
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stopping is closed when Shutdown begins.
func (s *Server) Stopping() <-chan struct{} { return s.stopping }

// Shutdown stops the server: it refuses new calls, ends the waits and
// streams in progress (workers then reconnect, to another node), and waits
// for the other calls in flight until ctx ends, when it closes every
// connection.
func (s *Server) Shutdown(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.stopping)
		s.work.close() // workers reconnect to another node
		s.stopQueue()  // the claims in progress are given back
	})
	if s.work.tq != nil {
		s.work.tq.wait(ctx)
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// unaryInterceptor authenticates a call, turns a panic into INTERNAL and
// counts the call.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	method := methodName(info.FullMethod)
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic while serving a call", "method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error; the details are in the server log")
		}
		s.metrics.observe(method, err)
	}()
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamInterceptor is unaryInterceptor for streams.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	method := methodName(info.FullMethod)
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic while serving a stream", "method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error; the details are in the server log")
		}
		s.metrics.observe(method, err)
	}()
	if err := s.authorize(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// methodName is the last element of a full method name.
func methodName(full string) string {
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[i+1:]
	}
	return full
}

// errUnauthenticated is the answer to a call without a valid key.
var errUnauthenticated = status.Error(codes.Unauthenticated,
	"missing or invalid API key: send it as the gRPC metadata 'authorization: Bearer <key>' or 'x-functions-key: <key>'")

// authorize checks the call's API key, if keys are configured.
func (s *Server) authorize(ctx context.Context) error {
	if len(s.keys) == 0 {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if scheme, token, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") && s.validKey(strings.TrimSpace(token)) {
			return nil
		}
	}
	for _, v := range md.Get("x-functions-key") {
		if s.validKey(v) {
			return nil
		}
	}
	return errUnauthenticated
}

// validKey compares the SHA-256 of k with every key's in constant time.
func (s *Server) validKey(k string) bool {
	if k == "" {
		return false
	}
	sum := sha256.Sum256([]byte(k))
	match := 0
	for i := range s.keys {
		match |= subtle.ConstantTimeCompare(sum[:], s.keys[i][:])
	}
	return match == 1
}
