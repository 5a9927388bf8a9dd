// Package leasetest starts a real single-node etcd for tests: embedded in
// the test process, in its own temporary data directory, on free loopback
// ports, so packages tested in parallel never collide.
package leasetest

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd.
type Etcd struct {
	Server    *embed.Etcd
	Endpoints []string
	t         testing.TB

	mu      sync.Mutex
	clients []*clientv3.Client
}

// Start starts an embedded etcd that is closed when the test ends, after
// every client made by Client (an open client makes Close wait ~7 s).
func Start(t testing.TB) *Etcd {
	t.Helper()
	return StartWith(t, nil)
}

// StartWith is Start with configure applied to the embedded etcd's
// configuration before it starts (for example a small QuotaBackendBytes).
func StartWith(t testing.TB, configure func(*embed.Config)) *Etcd {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		e, err := start(t.TempDir(), configure)
		if err == nil {
			e.t = t
			t.Cleanup(e.Close)
			return e
		}
		lastErr = err
	}
	t.Fatalf("leasetest: start embedded etcd: %v", lastErr)
	return nil
}

// StartIn starts an embedded etcd with its data in dir, for examples and
// programs without a testing.TB; the caller calls Close.
func StartIn(dir string) (*Etcd, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		e, err := start(dir, nil)
		if err == nil {
			return e, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("leasetest: start embedded etcd: %w", lastErr)
}

func start(dir string, configure func(*embed.Config)) (*Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	cu, err := freeURL()
	if err != nil {
		return nil, err
	}
	pu, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if configure != nil {
		configure(cfg)
	}
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		srv.Close()
		return nil, fmt.Errorf("etcd not ready after 30s")
	}
	return &Etcd{Server: srv, Endpoints: []string{cu.String()}}, nil
}

// Close closes every client made by Client, then the server.
func (e *Etcd) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.clients {
		_ = c.Close()
	}
	e.Server.Close()
}

// Client returns a new client of the etcd, closed when the test ends.
func (e *Etcd) Client() *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		if e.t == nil {
			panic(fmt.Sprintf("leasetest: client: %v", err))
		}
		e.t.Fatalf("leasetest: client: %v", err)
	}
	e.mu.Lock()
	e.clients = append(e.clients, c)
	e.mu.Unlock()
	return c
}

func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.Parse("http://" + addr)
}
