package lease_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/lease/leasetest"
)

// quiet drops the sessions' logs: the tests assert on errors, not on logs.
var quiet = slog.New(slog.DiscardHandler)

// ttl is the shortest TTL etcd accepts; the timing tests use it so that
// expiries happen within a few seconds.
const ttl = 2 * time.Second

// prefix is a key prefix of its own for each test.
func prefix(t testing.TB) string {
	return "/lease-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newSession opens a session with the given TTL on cli and closes it when
// the test ends (before the etcd it talks to).
func newSession(t testing.TB, cli *clientv3.Client, ttl time.Duration) *lease.Session {
	t.Helper()
	return newSessionCfg(t, cli, lease.Config{TTL: ttl})
}

func newSessionCfg(t testing.TB, cli *clientv3.Client, cfg lease.Config) *lease.Session {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.Prefix == "" {
		cfg.Prefix = prefix(t)
	}
	s, err := lease.NewSession(ctxT(t), cli, cfg)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func acquire(t testing.TB, s *lease.Session, claim lease.Claim) *lease.Holding {
	t.Helper()
	h, err := s.Acquire(ctxT(t), claim)
	if err != nil {
		t.Fatalf("Acquire %s: %v", claim.Key, err)
	}
	return h
}

// waitClosed waits for ch to close and returns when it was seen closed.
func waitClosed(t testing.TB, ch <-chan struct{}, timeout time.Duration, what string) time.Time {
	t.Helper()
	select {
	case <-ch:
		return time.Now()
	case <-time.After(timeout):
		t.Fatalf("%s: not closed within %v", what, timeout)
		return time.Time{}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t testing.TB, cli *clientv3.Client, key string) *mvccKV {
	t.Helper()
	resp, err := cli.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	kv := resp.Kvs[0]
	return &mvccKV{Value: string(kv.Value), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: clientv3.LeaseID(kv.Lease)}
}

type mvccKV struct {
	Value                       string
	CreateRevision, ModRevision int64
	Lease                       clientv3.LeaseID
}

// watchDeletion reports when key is deleted, as seen by cli from fromRev on.
func watchDeletion(t testing.TB, cli *clientv3.Client, key string, fromRev int64) <-chan time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wch := cli.Watch(ctx, key, clientv3.WithRev(fromRev), clientv3.WithFilterPut())
	out := make(chan time.Time, 1)
	go func() {
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					out <- time.Now()
					return
				}
			}
		}
	}()
	return out
}

// proxiedClient is a client of e whose every byte goes through a proxy the
// test controls. It is closed before the proxy and the etcd.
func proxiedClient(t testing.TB, e *leasetest.Etcd) (*clientv3.Client, *leasetest.Proxy) {
	t.Helper()
	p := leasetest.NewProxy(t, e.Endpoints[0])
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.URL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("proxied client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli, p
}

func wantErr(t testing.TB, got, want error, what string) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: err = %v, want %v", what, got, want)
	}
}
