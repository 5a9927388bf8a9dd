package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/soloist-dev/soloist/scheduler"
)

// How serve tells an operator that etcd stopped answering after startup:
//
//   - Every watchInterval the watch looks at what it knows without asking
//     etcd: the state of the client's gRPC connection (a refused or broken
//     connection shows at once), whether the node lost its etcd session
//     (scheduler.ErrNoSession, once the node was ready), and whether an
//     API request found etcd silent since the last look (httpapi's
//     StoreUnreachable). That costs nothing.
//   - Only when one of them says so it asks etcd: a count-only read of one
//     key, bounded by probeTimeout. While that fails it warns, naming the
//     endpoints and what a plain connection to each shows, at once and then
//     every warnEvery; it probes again every watchInterval.
//   - When etcd answers again it logs one info line with how long it was
//     unreachable, and goes quiet again.
const (
	watchInterval = 2500 * time.Millisecond
	probeTimeout  = 2 * time.Second
	warnEvery     = 5 * time.Second
)

// etcdWatch is that watch.
type etcdWatch struct {
	cli       *clientv3.Client
	target    etcdTarget
	key       string
	log       *slog.Logger
	suspected atomic.Bool // a request found etcd silent
}

func newEtcdWatch(cli *clientv3.Client, t etcdTarget, prefix string, log *slog.Logger) *etcdWatch {
	return &etcdWatch{cli: cli, target: t, key: prefix, log: log}
}

// suspect notes that a request found etcd silent; the next look asks etcd.
func (w *etcdWatch) suspect(error) { w.suspected.Store(true) }

// start watches until the returned function is called; ready is the node's
// Ready. The returned function waits for the watch to end.
func (w *etcdWatch) start(ready func() error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.loop(ctx, ready)
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

func (w *etcdWatch) loop(ctx context.Context, ready func() error) {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	var (
		wasReady bool      // the node had a session once: losing it means something
		down     time.Time // when the probes began to fail; zero while etcd answers
		warned   time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := ready()
		if err == nil {
			wasReady = true
		}
		troubled := w.suspected.Swap(false) || !down.IsZero() || w.connBroken() ||
			(wasReady && errors.Is(err, scheduler.ErrNoSession))
		if !troubled {
			continue
		}
		perr := w.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		if perr == nil {
			if !down.IsZero() && !warned.IsZero() {
				w.log.Info("etcd answers again", "endpoints", w.target.cfg.Endpoints,
					"unreachable_for", now.Sub(down).Round(100*time.Millisecond).String())
			}
			down, warned = time.Time{}, time.Time{}
			continue
		}
		if down.IsZero() {
			down = now
		}
		if now.Sub(warned) >= warnEvery {
			w.log.Warn("etcd does not answer; requests that need it fail with 503 until it does",
				"endpoints", w.target.cfg.Endpoints, "error", diagnoseEtcd(w.target.cfg, perr),
				"unreachable_for", now.Sub(down).Round(100*time.Millisecond).String())
			warned = now
		}
	}
}

// connBroken reports whether the client's connection is failing or down.
// Connecting counts: a healthy connection is Ready (or Idle, unused).
func (w *etcdWatch) connBroken() bool {
	conn := w.cli.ActiveConnection()
	if conn == nil {
		return false
	}
	switch conn.GetState() {
	case connectivity.TransientFailure, connectivity.Connecting:
		return true
	}
	return false
}

// probe asks etcd for one key's count, as connectEtcd does: a linearizable
// read, which needs a leader and a quorum.
func (w *etcdWatch) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := w.cli.Get(ctx, w.key, clientv3.WithCountOnly())
	return err
}
