package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/soloist-dev/soloist/orchestrator"
)

// embeddedReadyTimeout bounds how long a node waits for its embedded etcd.
const embeddedReadyTimeout = 60 * time.Second

// Defaults of the embedded etcd.
const (
	// defaultEmbeddedQuota is etcd's own default --quota-backend-bytes.
	defaultEmbeddedQuota = 2 << 30
	// defaultEmbeddedRevisions is how many revisions of history the
	// embedded etcd keeps (revision-based auto-compaction, every 5 minutes).
	//
	// Compacting by revision bounds the old versions etcd keeps by a number
	// of writes rather than a time: the last 10000 writes, plus those of the
	// 5 minutes between two compactions. Hourly periodic compaction keeps
	// every version of the last hour instead, which under load (a step is a
	// few revisions; 1000 steps a second make millions of revisions an
	// hour, payloads included) fills the quota and stops every write. The
	// nodes need little history: each has one watch, which lists again when
	// it finds its revision compacted. 10000 revisions let a watch that
	// broke for a moment resume without listing again at moderate write
	// rates; most of them are control records of a few hundred bytes.
	defaultEmbeddedRevisions = 10000
)

// embeddedSettings are what serve's flags say of the embedded etcd.
type embeddedSettings struct {
	DataDir   string
	ClientURL string
	Limits    orchestrator.Limits // etcd's --max-request-bytes and --max-txn-ops
	Quota     int64               // --quota-backend-bytes
	Revisions int64               // --auto-compaction-retention, in revisions
}

func (o *serveOptions) embeddedSettings() embeddedSettings {
	return embeddedSettings{
		DataDir: o.DataDir, ClientURL: o.EmbeddedClientURL, Limits: o.limits(),
		Quota: int64(o.EmbeddedQuota), Revisions: o.EmbeddedRevisions,
	}
}

// embedConfig is the configuration of the embedded etcd: one member named
// soloist in es.DataDir, clients at cu and its peer URL at pu, with the
// request limits Soloist cuts its transactions to, revision-based
// auto-compaction and an explicit quota.
func embedConfig(es embeddedSettings, cu, pu *url.URL) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "soloist"
	cfg.Dir = es.DataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.MaxRequestBytes = uint(es.Limits.RequestBytes)
	cfg.MaxTxnOps = uint(es.Limits.TxnOps)
	cfg.QuotaBackendBytes = es.Quota
	// Compact history, or the data grows until the quota stops all writes.
	cfg.AutoCompactionMode = embed.CompactorModeRevision
	cfg.AutoCompactionRetention = strconv.FormatInt(es.Revisions, 10)
	return cfg
}

// embeddedEtcd is the single-node etcd that soloist serve runs when no
// --etcd-endpoints are given.
type embeddedEtcd struct {
	srv       *embed.Etcd
	clientURL string
	silence   func()
	lock      *os.File
}

// startEmbeddedEtcd starts a single-member etcd with its data in
// es.DataDir, serving clients at es.ClientURL (so etcdctl works) and peers
// on the next port (or a free loopback port). It returns once etcd serves,
// or an error.
func startEmbeddedEtcd(ctx context.Context, es embeddedSettings, log *slog.Logger) (*embeddedEtcd, error) {
	dataDir, clientURL := es.DataDir, es.ClientURL
	cu, err := url.Parse(clientURL)
	if err != nil || cu.Scheme != "http" || cu.Port() == "" {
		return nil, fmt.Errorf("invalid --embedded-etcd-client-url %q: use http://HOST:PORT, e.g. http://127.0.0.1:2379", clientURL)
	}
	if ip := net.ParseIP(cu.Hostname()); (ip == nil || !ip.IsLoopback()) && cu.Hostname() != "localhost" {
		log.Warn("the embedded etcd listens beyond loopback without TLS or auth; anyone who reaches it can change every instance",
			"client_url", clientURL)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}
	// etcd waits forever for the lock of a database another process has
	// open; take our own lock first so that a second node on the same data
	// dir fails at once.
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return nil, err
	}
	pu, err := peerURL(cu)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}

	cfg := embedConfig(es, cu, pu)
	elog := log.With("component", "etcd")
	zl, silence := zapLogger(elog, zapcore.WarnLevel)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)

	t := time.NewTimer(embeddedReadyTimeout)
	defer t.Stop()
	type started struct {
		srv *embed.Etcd
		err error
	}
	startc := make(chan started, 1)
	go func() {
		srv, err := embed.StartEtcd(cfg)
		startc <- started{srv, err}
	}()
	var srv *embed.Etcd
	select {
	case s := <-startc:
		if s.err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("start embedded etcd in %s at %s: %w", dataDir, clientURL, s.err)
		}
		srv = s.srv
	case <-t.C:
		return nil, fmt.Errorf("embedded etcd in %s did not start within %s", dataDir, embeddedReadyTimeout)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	e := &embeddedEtcd{srv: srv, clientURL: cu.String(), silence: silence, lock: lock}
	select {
	case <-srv.Server.ReadyNotify():
		return e, nil
	case err := <-srv.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s was not ready within %s", dataDir, embeddedReadyTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, context.Cause(ctx)
	}
}

// Close stops etcd. Close every client first: with a client still open,
// Close waits seconds for its streams.
func (e *embeddedEtcd) Close() {
	e.silence()
	e.srv.Close()
	_ = e.lock.Close()
}

// lockDataDir takes an exclusive lock on dataDir/soloist.lock, held until
// the returned file is closed (or the process ends).
func lockDataDir(dataDir string) (*os.File, error) {
	path := filepath.Join(dataDir, "soloist.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock --data-dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--data-dir %s is in use by another soloist serve; give each node its own --data-dir, "+
				"or run several nodes on one shared etcd with --etcd-endpoints", dataDir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// peerURL picks the peer URL on loopback (a single member has no peers):
// the client port plus one (2380 for 2379, as etcd has it) when that is
// free, else a free port.
func peerURL(cu *url.URL) (*url.URL, error) {
	host := "127.0.0.1"
	if ip := net.ParseIP(cu.Hostname()); ip != nil && ip.To4() == nil && ip.IsLoopback() {
		host = cu.Hostname()
	}
	if p, err := strconv.Atoi(cu.Port()); err == nil && p > 0 && p < 65535 {
		addr := net.JoinHostPort(host, strconv.Itoa(p+1))
		if l, err := net.Listen("tcp", addr); err == nil {
			_ = l.Close()
			return &url.URL{Scheme: "http", Host: addr}, nil
		}
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("find a free port for the embedded etcd's peer URL: %w", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
