package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/soloist-dev/soloist/orchestrator"
)

// errDialTimeout is the cause of the start context once
// --etcd-dial-timeout has passed.
var errDialTimeout = errors.New("--etcd-dial-timeout passed")

// connectLogEvery is how often connectEtcd logs the last error while it
// waits for etcd.
const connectLogEvery = 5 * time.Second

// etcdTarget is an etcd to connect to.
type etcdTarget struct {
	cfg     clientv3.Config
	timeout time.Duration // --etcd-dial-timeout, for messages
}

func (t etcdTarget) endpoints() string { return strings.Join(t.cfg.Endpoints, ",") }

// grpcOverhead is what etcd's gRPC server accepts beyond
// --max-request-bytes (its grpcOverheadBytes): a client that may send that
// much more never refuses a request etcd would take, and etcd's own error
// (request is too large) names the limit when a request does not fit.
const grpcOverhead = 512 << 10

// sendLimit is the etcd client's MaxCallSendMsgSize for etcd's limits; the
// client's default (2 MiB) would refuse requests that an etcd with a raised
// --max-request-bytes accepts.
func sendLimit(l orchestrator.Limits) int { return l.RequestBytes + grpcOverhead }

// embeddedTarget is the embedded etcd of serve.
func embeddedTarget(emb *embeddedEtcd, timeout time.Duration, l orchestrator.Limits) etcdTarget {
	return etcdTarget{cfg: clientv3.Config{Endpoints: []string{emb.clientURL}, MaxCallSendMsgSize: sendLimit(l)}, timeout: timeout}
}

// checkEndpointSchemes refuses endpoints whose scheme contradicts the TLS
// flags: the etcd client would talk plaintext to an http:// endpoint
// whatever the TLS flags say, and it uses the first endpoint's scheme for
// them all.
func (o *serveOptions) checkEndpointSchemes() error {
	tlsFlags := o.EtcdCAFile != "" || o.EtcdCertFile != ""
	var plain, secure []string
	for _, ep := range o.endpoints() {
		scheme, _, ok := strings.Cut(ep, "://")
		switch {
		case !ok: // host:port follows the TLS flags, as with etcdctl
		case scheme == "http" || scheme == "unix":
			plain = append(plain, ep)
		case scheme == "https" || scheme == "unixs":
			secure = append(secure, ep)
		default:
			return fmt.Errorf("invalid --etcd-endpoints %q: use http://HOST:PORT or https://HOST:PORT", ep)
		}
	}
	switch {
	case tlsFlags && len(plain) > 0:
		return fmt.Errorf("--etcd-cafile, --etcd-certfile and --etcd-keyfile are TLS settings, but --etcd-endpoints %s is plain http://, "+
			"which the etcd client would use without TLS; use https:// endpoints (or host:port), or drop the TLS flags", strings.Join(plain, ","))
	case len(plain) > 0 && len(secure) > 0:
		return fmt.Errorf("--etcd-endpoints mixes http:// (%s) and https:// (%s); the etcd client uses one for all, so give every endpoint the same scheme",
			strings.Join(plain, ","), strings.Join(secure, ","))
	}
	return nil
}

// etcdConfig builds the client configuration for an external etcd.
func (o *serveOptions) etcdConfig() (etcdTarget, error) {
	cfg := clientv3.Config{
		Endpoints:          o.endpoints(),
		Username:           o.EtcdUsername,
		Password:           o.EtcdPassword,
		MaxCallSendMsgSize: sendLimit(o.limits()),
	}
	t := etcdTarget{timeout: o.EtcdDialTimeout}
	if o.EtcdPasswordFile != "" {
		b, err := os.ReadFile(o.EtcdPasswordFile)
		if err != nil {
			return t, fmt.Errorf("read --etcd-password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if o.EtcdCAFile != "" || o.EtcdCertFile != "" {
		info := transport.TLSInfo{TrustedCAFile: o.EtcdCAFile, CertFile: o.EtcdCertFile, KeyFile: o.EtcdKeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return t, fmt.Errorf("etcd TLS (--etcd-cafile, --etcd-certfile, --etcd-keyfile): %w", err)
		}
		cfg.TLS = tc
	} else {
		for _, ep := range cfg.Endpoints {
			if strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12} // system roots
				break
			}
		}
	}
	t.cfg = cfg
	return t, nil
}

// connectEtcd makes the etcd client and waits until etcd answers a read of
// prefix, or ctx ends (--etcd-dial-timeout). While it waits it logs why,
// every few seconds. The returned function silences the client's logs, for
// the shutdown.
func connectEtcd(ctx context.Context, t etcdTarget, prefix string, log *slog.Logger, lvl slog.Level) (*clientv3.Client, func(), error) {
	etcdLevel := zapcore.WarnLevel
	if lvl <= slog.LevelDebug {
		etcdLevel = zapcore.InfoLevel
	}
	zl, silence := zapLogger(log.With("component", "etcd-client"), etcdLevel)
	cfg := t.cfg
	cfg.Logger = zl
	cfg.DialTimeout = 5 * time.Second // bounds the authentication in clientv3.New
	// gRPC pings a connection that carries nothing for this long, and drops
	// it if the ping gets no answer, so that a connection into a network
	// partition (a blackholed endpoint) is replaced rather than trusted.
	// etcd refuses pings more often than every 5s (--grpc-keepalive-min-time).
	cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout = 10*time.Second, 5*time.Second
	log.Info("connecting to etcd", "endpoints", cfg.Endpoints, "prefix", prefix, "tls", cfg.TLS != nil, "auth", cfg.Username != "",
		"etcd_dial_timeout", t.timeout.String())

	start := time.Now()
	var cli *clientv3.Client
	var last error
	lastLogged, lastErr := time.Time{}, ""
	b := &backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: time.Second}
	b.Reset()
	for {
		err := ctx.Err()
		if err == nil && cli == nil {
			if cli, err = clientv3.New(cfg); err != nil && cfg.Username != "" {
				err = fmt.Errorf("authenticate as %q: %w", cfg.Username, err)
			}
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = cli.Get(actx, prefix, clientv3.WithCountOnly())
			cancel()
			if err == nil {
				if last != nil {
					log.Info("etcd answers", "endpoints", cfg.Endpoints, "waited", time.Since(start).Round(time.Millisecond).String())
				}
				return cli, silence, nil
			}
		}
		if ctx.Err() != nil {
			if cli != nil {
				_ = cli.Close()
			}
			silence()
			if !errors.Is(context.Cause(ctx), errDialTimeout) {
				return nil, nil, context.Cause(ctx)
			}
			if last == nil {
				last = err
			}
			return nil, nil, &unreachableError{msg: fmt.Sprintf("cannot connect to etcd at %s within --etcd-dial-timeout %s: %s",
				t.endpoints(), t.timeout, diagnoseEtcd(t.cfg, last))}
		}
		if last == nil || !errors.Is(err, context.DeadlineExceeded) {
			last = err // a timeout says less than what etcd said before it
		}
		// The client says "context deadline exceeded" for most failures:
		// say why at the first, then every few seconds.
		if e := err.Error(); e != lastErr || time.Since(lastLogged) >= connectLogEvery {
			log.Warn("cannot connect to etcd yet; retrying", "endpoints", cfg.Endpoints, "error", diagnoseEtcd(t.cfg, err),
				"waited", time.Since(start).Round(time.Millisecond).String(), "etcd_dial_timeout", t.timeout.String())
			lastLogged, lastErr = time.Now(), e
		}
		select {
		case <-ctx.Done():
		case <-time.After(b.NextBackOff()):
		}
	}
}

// startFailure is the error of a node whose first session failed.
func startFailure(err error, startCtx context.Context, t etcdTarget) error {
	if errors.Is(orchestrator.ClassifyError(err), orchestrator.ErrNoSpace) {
		return &unreachableError{msg: fmt.Sprintf("etcd at %s is out of space (NOSPACE alarm) and refused the node's session lease for --etcd-dial-timeout %s: %s",
			t.endpoints(), t.timeout, orchestrator.NoSpaceHelp)}
	}
	if errors.Is(context.Cause(startCtx), errDialTimeout) {
		return &unreachableError{msg: fmt.Sprintf("etcd at %s did not grant the node's session lease within --etcd-dial-timeout %s: %s",
			t.endpoints(), t.timeout, diagnoseEtcd(t.cfg, err))}
	}
	return fmt.Errorf("start node: %w", err)
}

// diagnoseEtcd says why etcd did not answer: err itself when etcd said
// (authentication, permissions), else what a plain connection to each
// endpoint shows (connection refused, TLS failures). The etcd client only
// reports "context deadline exceeded" for those.
func diagnoseEtcd(cfg clientv3.Config, err error) string {
	switch {
	case err == nil:
		return "no answer"
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return fmt.Sprintf("authentication failed: etcd refused user %q with that password; check --etcd-username and --etcd-password or --etcd-password-file", cfg.Username)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return fmt.Sprintf("permission denied: etcd user %q may not read the keys; grant it a role with readwrite on --etcd-prefix", cfg.Username)
	case errors.Is(err, rpctypes.ErrAuthNotEnabled), errors.Is(err, rpctypes.ErrUserEmpty):
		return err.Error()
	}
	var problems []string
	for _, ep := range cfg.Endpoints {
		if p := probeEndpoint(ep, cfg.TLS); p != "" {
			problems = append(problems, ep+": "+p)
		}
	}
	if len(problems) == 0 {
		return fmt.Sprintf("the endpoints accept connections but etcd did not answer (%v); is the etcd cluster healthy (etcdctl endpoint health)?", err)
	}
	return strings.Join(problems, "; ")
}

// probeEndpoint connects to one endpoint as the etcd client would and says
// what goes wrong, or "" if nothing does.
func probeEndpoint(ep string, tc *tls.Config) string {
	scheme, hostPort, ok := strings.Cut(ep, "://")
	if !ok {
		hostPort = ep
		scheme = "http"
		if tc != nil {
			scheme = "https"
		}
	}
	network := "tcp"
	if scheme == "unix" || scheme == "unixs" {
		network = "unix"
	} else if u, err := url.Parse(scheme + "://" + hostPort); err == nil {
		hostPort = u.Host
	}
	conn, err := net.DialTimeout(network, hostPort, 2*time.Second)
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return "no answer to a TCP connection within 2s (a firewall, or the wrong address?)"
		case errors.As(err, &dnsErr):
			return fmt.Sprintf("host name %q does not resolve", dnsErr.Name)
		case strings.Contains(err.Error(), "connection refused"):
			return "connection refused: nothing listens there; check --etcd-endpoints and that etcd runs"
		}
		return err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if scheme == "http" || scheme == "unix" {
		// etcd answers GET /health in plain HTTP; a TLS listener does not.
		_, _ = fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostPort)
		line, rerr := bufio.NewReader(conn).ReadString('\n')
		if strings.HasPrefix(line, "HTTP/") && !strings.HasPrefix(line, "HTTP/1.0 400") {
			return ""
		}
		if line == "" && errors.Is(rerr, os.ErrDeadlineExceeded) {
			return "the endpoint accepts connections but sends nothing back within 2s: etcd hangs, or the network drops its answers"
		}
		if speaksTLS(network, hostPort) {
			return "etcd expects TLS there; use https:// endpoints with --etcd-cafile (and --etcd-certfile, --etcd-keyfile for client certificates)"
		}
		if line == "" {
			return fmt.Sprintf("the endpoint closed the connection without an answer (%v); is it etcd's client URL?", rerr)
		}
		return ""
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tc != nil {
		cfg = tc.Clone()
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(hostPort)
		if err != nil {
			host = hostPort
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"h2"}
	tconn := tls.Client(conn, cfg)
	if err := tconn.Handshake(); err != nil {
		return describeTLSError(err)
	}
	// With TLS 1.3 the server checks the client's certificate after the
	// client's handshake is done, and says so in an alert on the next read.
	_ = tconn.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	if _, err := tconn.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return describeTLSError(err)
	}
	return ""
}

// speaksTLS reports whether a TLS handshake with hostPort succeeds. It
// only tells a TLS listener from a plain one, so it checks no certificate
// and sends nothing.
func speaksTLS(network, hostPort string) bool {
	conn, err := net.DialTimeout(network, hostPort, 2*time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	return tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake() == nil //nolint:gosec // detection only
}

// describeTLSError names the cause of a TLS failure and the flag to fix.
func describeTLSError(err error) string {
	s := err.Error()
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return "TLS: etcd's certificate is not signed by a CA in --etcd-cafile (unknown authority); pass the CA that signed etcd's server certificate (" + s + ")"
	case errors.As(err, &host):
		return "TLS: etcd's certificate does not name the host of the endpoint; use the host name or IP its certificate was issued for (" + s + ")"
	case strings.Contains(s, "certificate required"):
		return "TLS: etcd requires a client certificate (certificate required); pass --etcd-certfile and --etcd-keyfile"
	case strings.Contains(s, "unknown certificate authority"), strings.Contains(s, "bad certificate"), strings.Contains(s, "unknown certificate"):
		return "TLS: etcd refused the client certificate (bad certificate): --etcd-certfile must be signed by a CA that etcd trusts (its --trusted-ca-file) (" + s + ")"
	case strings.Contains(s, "expired"):
		return "TLS: a certificate has expired or is not valid yet (" + s + ")"
	case strings.Contains(s, "first record does not look like a TLS handshake"):
		return "etcd does not speak TLS there; use http:// endpoints, or turn on TLS in etcd"
	}
	return "TLS: " + s
}
