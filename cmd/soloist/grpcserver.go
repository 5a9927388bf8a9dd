package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/dashboard"
	"github.com/soloist-dev/soloist/scheduler/sidecar"
)

// The Durable Task sidecar listener (--grpc-listen): the gRPC service the
// Durable Task SDKs speak (package scheduler/sidecar).

// defaultGRPCListen is the SDKs' default sidecar address, served when the
// node runs the embedded etcd and --grpc-listen is not given.
const defaultGRPCListen = "127.0.0.1:4001"

// grpcOptions are the flags of the sidecar listener.
type grpcOptions struct {
	GRPCListen       string
	GRPCCertFile     string
	GRPCKeyFile      string
	GRPCClientCAFile string
}

// addGRPCFlags defines the sidecar listener's flags on fs.
func addGRPCFlags(fs *pflag.FlagSet, o *grpcOptions) {
	fs.StringVar(&o.GRPCListen, "grpc-listen", "", "`address` of the Durable Task sidecar gRPC service for the Durable Task SDKs; "+
		"empty means "+defaultGRPCListen+" with the embedded etcd and off with --etcd-endpoints; off turns it off")
	fs.StringVar(&o.GRPCCertFile, "grpc-certfile", "", "certificate `file` (PEM) of the gRPC listener: it then speaks TLS only")
	fs.StringVar(&o.GRPCKeyFile, "grpc-keyfile", "", "key `file` (PEM) of --grpc-certfile")
	fs.StringVar(&o.GRPCClientCAFile, "grpc-client-cafile", "", "CA `file` (PEM): the gRPC listener then requires client certificates it signed (mTLS)")
}

// grpcAddress is the address the sidecar listener serves at, "" if off.
func (o *serveOptions) grpcAddress() string {
	switch strings.TrimSpace(o.GRPCListen) {
	case "off":
		return ""
	case "":
		if len(o.endpoints()) == 0 {
			return defaultGRPCListen
		}
		return ""
	}
	return strings.TrimSpace(o.GRPCListen)
}

// validateGRPC checks the sidecar listener's flags.
func (o *serveOptions) validateGRPC() error {
	addr := o.grpcAddress()
	if (o.GRPCCertFile == "") != (o.GRPCKeyFile == "") {
		return errors.New("--grpc-certfile and --grpc-keyfile go together; give both for TLS, or neither")
	}
	if o.GRPCClientCAFile != "" && o.GRPCCertFile == "" {
		return errors.New("--grpc-client-cafile needs --grpc-certfile and --grpc-keyfile: client certificates are checked over TLS only")
	}
	if addr == "" {
		if o.GRPCCertFile != "" || o.GRPCClientCAFile != "" {
			return errors.New("--grpc-certfile, --grpc-keyfile and --grpc-client-cafile configure the gRPC listener, which is off; give --grpc-listen ADDR")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("invalid --grpc-listen %q: use HOST:PORT, e.g. %s, or off", o.GRPCListen, defaultGRPCListen)
	}
	if addr == o.Listen || (o.MetricsListen != "" && addr == o.MetricsListen) {
		return fmt.Errorf("--grpc-listen %s is also --listen or --metrics-listen; give the gRPC listener its own port, e.g. %s", addr, defaultGRPCListen)
	}
	if o.APIKeysFile == "" && !o.InsecureNoAuth && !isLoopback(addr) {
		return fmt.Errorf("refusing to serve on --grpc-listen %s without authentication: anyone who reaches it could start and terminate instances; "+
			"pass --api-keys-file FILE (one key a line), listen on 127.0.0.1, or pass --insecure-no-auth if something in front of soloist authenticates", addr)
	}
	return nil
}

// grpcTLS loads the listener's TLS credentials, nil without --grpc-certfile.
func (o *serveOptions) grpcTLS() (credentials.TransportCredentials, error) {
	if o.GRPCCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.GRPCCertFile, o.GRPCKeyFile)
	if err != nil {
		return nil, fmt.Errorf("gRPC TLS (--grpc-certfile, --grpc-keyfile): %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.GRPCClientCAFile != "" {
		pem, err := os.ReadFile(o.GRPCClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("gRPC TLS (--grpc-client-cafile): %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gRPC TLS (--grpc-client-cafile): %s holds no PEM certificate", o.GRPCClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

// grpcListener is the sidecar listener and its server, once wired.
type grpcListener struct {
	ln  net.Listener
	srv *sidecar.Server
	// live is srv for the dashboard's reads, set once it is wired; wired
	// is closed then.
	live  atomic.Pointer[sidecar.Server]
	wired chan struct{}
}

// WorkersChanged is closed when the connected workers next change (or
// when the server is wired), for the dashboard (dashboard.Workers).
func (g *grpcListener) WorkersChanged() <-chan struct{} {
	if srv := g.live.Load(); srv != nil {
		return srv.WorkersChanged()
	}
	return g.wired
}

// workers is what the dashboard reads the connected workers from: nil
// (no gRPC listener) when g is nil.
func (g *grpcListener) workers() dashboard.Workers {
	if g == nil {
		return nil
	}
	return g
}

// ConnectedWorkers lists the workers connected to the sidecar, for the
// dashboard (dashboard.Workers); none before the server is wired.
func (g *grpcListener) ConnectedWorkers() []dashboard.Worker {
	srv := g.live.Load()
	if srv == nil {
		return nil
	}
	ws := srv.Workers()
	out := make([]dashboard.Worker, 0, len(ws))
	for _, w := range ws {
		out = append(out, dashboard.Worker{
			ID: w.ID, Peer: w.Peer, Connected: w.Connected, Orchestrations: w.Orchestrations, Activities: w.Activities,
			InFlightOrchestrations: w.InFlightOrchestrations, InFlightActivities: w.InFlightActivities,
			MaxOrchestrations: w.MaxOrchestrations, MaxActivities: w.MaxActivities,
		})
	}
	return out
}

// listenGRPC opens --grpc-listen; nil when it is off.
func listenGRPC(o *serveOptions) (*grpcListener, error) {
	addr := o.grpcAddress()
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --grpc-listen %s: %w (give another address, or --grpc-listen off)", addr, err)
	}
	return &grpcListener{ln: ln, wired: make(chan struct{})}, nil
}

// start wires the sidecar server to the node (before node.Start: the node
// runs what the server's workers serve) and serves; the channel gets the
// server's error.
func (g *grpcListener) start(o *serveOptions, node *scheduler.Node, client *orchestrator.Client, reg prometheus.Registerer, apiKeys []string, log *slog.Logger) (<-chan error, error) {
	creds, err := o.grpcTLS()
	if err != nil {
		return nil, err
	}
	srv, err := sidecar.New(sidecar.Config{
		Client: client, Node: node, Logger: log, Registerer: reg,
		MaxPayload: int(o.MaxPayload), APIKeys: apiKeys, TLS: creds,
	})
	if err != nil {
		return nil, fmt.Errorf("configure the gRPC listener: %w", err)
	}
	// The node campaigns for the orchestrations the connected workers
	// serve and runs them through the server (before node.Start).
	if err := node.SetRemote(srv.Remote()); err != nil {
		return nil, fmt.Errorf("configure the gRPC listener: %w", err)
	}
	g.srv = srv
	g.live.Store(srv)
	close(g.wired)
	errc := make(chan error, 1)
	go func() {
		if err := srv.Serve(g.ln); err != nil {
			errc <- err
		}
	}()
	log.Info("serving the Durable Task sidecar gRPC service", "grpc_listen", g.ln.Addr().String(), "tls", creds != nil,
		"auth", len(apiKeys) > 0, "max_payload", int(o.MaxPayload))
	return errc, nil
}

// shutdown stops the server (its streams end, so workers reconnect to
// another node) or, if it never started, closes the listener.
func (g *grpcListener) shutdown(ctx context.Context) {
	if g == nil {
		return
	}
	if g.srv != nil {
		g.srv.Shutdown(ctx)
		return
	}
	_ = g.ln.Close()
}
