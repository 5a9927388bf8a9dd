package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/execfn"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/scheduler"
	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// serveOptions are the flags of soloist serve (SPEC section 4).
type serveOptions struct {
	Listen            string
	EtcdEndpoints     string
	DataDir           string
	EmbeddedClientURL string
	EtcdPrefix        string
	EtcdCAFile        string
	EtcdCertFile      string
	EtcdKeyFile       string
	EtcdUsername      string
	EtcdPassword      string
	EtcdPasswordFile  string
	NodeID            string
	LeaseTTL          time.Duration
	MaxConcurrent     int
	MaxPayload        byteSize
	Config            string
	APIKeysFile       string
	InsecureNoAuth    bool
	LogFormat         string
	LogLevel          string
	ShutdownTimeout   time.Duration
	Demo              bool
}

const serveSynopsis = "soloist serve [flags]"

func newServeFlags(o *serveOptions, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080", "`address` of the HTTP API, health checks and metrics")
	fs.StringVar(&o.EtcdEndpoints, "etcd-endpoints", "", "comma-separated etcd `endpoints`; empty starts an embedded single-node etcd")
	fs.StringVar(&o.DataDir, "data-dir", "./soloist-data", "`directory` of the embedded etcd's data")
	fs.StringVar(&o.EmbeddedClientURL, "embedded-etcd-client-url", "http://127.0.0.1:2379", "`URL` the embedded etcd serves clients at (for etcdctl)")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", "/soloist/", "`prefix` of every key Soloist writes")
	fs.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA `file` to verify etcd's certificate")
	fs.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate `file` for etcd mTLS")
	fs.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "client key `file` for etcd mTLS")
	fs.StringVar(&o.EtcdUsername, "etcd-username", "", "etcd `user` name")
	fs.StringVar(&o.EtcdPassword, "etcd-password", "", "etcd `password` (prefer --etcd-password-file)")
	fs.StringVar(&o.EtcdPasswordFile, "etcd-password-file", "", "`file` holding the etcd password")
	fs.StringVar(&o.NodeID, "node-id", "", "`name` of this node (default hostname plus a random suffix)")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", 10*time.Second, "session lease `TTL`: whole seconds, at least 2s")
	fs.IntVar(&o.MaxConcurrent, "max-concurrent", 0, "most `instances` this node holds at once; 0 means no limit")
	o.MaxPayload = orchestrator.DefaultMaxPayload
	fs.Var(&o.MaxPayload, "max-payload", "largest input, output, custom status or event `size`, e.g. 256KiB")
	fs.StringVar(&o.Config, "config", "", "YAML `file` of functions")
	fs.StringVar(&o.APIKeysFile, "api-keys-file", "", "`file` of API keys, one a line; every route but health checks then needs one")
	fs.BoolVar(&o.InsecureNoAuth, "insecure-no-auth", false, "allow a non-loopback --listen without --api-keys-file")
	fs.StringVar(&o.LogFormat, "log-format", "auto", "`format` of logs: auto (coloured on a terminal, else JSON), text or json")
	fs.StringVar(&o.LogLevel, "log-level", "info", "`level`: debug, info, warn or error")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "drain `budget` on SIGTERM or SIGINT")
	fs.BoolVar(&o.Demo, "demo", false, "register the demo orchestrations "+strings.Join(demoFunctions, ", "))
	setUsage(fs, stderr, serveSynopsis, nil)
	return fs
}

// parseServe reads the flags of soloist serve from the environment and args
// (args win) and validates them.
func parseServe(args []string, e env, stderr io.Writer) (*serveOptions, error) {
	o := &serveOptions{}
	fs := newServeFlags(o, stderr)
	if err := applyEnv(fs, e); err != nil {
		return nil, usagef("serve", "%v", err)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &exitError{code: 2} // the flag package printed the problem
	}
	if len(pos) > 0 {
		return nil, usagef("serve", "unexpected argument %q; serve takes only flags", pos[0])
	}
	if err := o.validate(); err != nil {
		return nil, usagef("serve", "%v", err)
	}
	return o, nil
}

// validate checks the options and fills in defaults that need the system.
func (o *serveOptions) validate() error {
	if o.LeaseTTL < 2*time.Second || o.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("invalid --lease-ttl %s: etcd counts lease TTLs in whole seconds and needs at least 2s; use e.g. 10s", o.LeaseTTL)
	}
	if o.MaxConcurrent < 0 {
		return fmt.Errorf("invalid --max-concurrent %d: use 0 for no limit or a positive number", o.MaxConcurrent)
	}
	if o.MaxPayload <= 0 {
		return fmt.Errorf("invalid --max-payload %s: use a positive size, e.g. 256KiB", &o.MaxPayload)
	}
	if o.ShutdownTimeout <= 0 {
		return fmt.Errorf("invalid --shutdown-timeout %s: use a positive duration, e.g. 25s", o.ShutdownTimeout)
	}
	if strings.TrimSpace(o.EtcdPrefix) == "" {
		return errors.New("--etcd-prefix is empty; use e.g. /soloist/")
	}
	if _, err := newLogger(io.Discard, o.LogFormat, o.LogLevel); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return fmt.Errorf("invalid --listen %q: use HOST:PORT, e.g. 127.0.0.1:8080", o.Listen)
	}
	if o.APIKeysFile == "" && !o.InsecureNoAuth && !isLoopback(o.Listen) {
		return fmt.Errorf("refusing to serve on --listen %s without authentication: anyone who reaches it could start and terminate instances; "+
			"pass --api-keys-file FILE (one key a line), listen on 127.0.0.1, or pass --insecure-no-auth if something in front of soloist authenticates", o.Listen)
	}
	if (o.EtcdCertFile == "") != (o.EtcdKeyFile == "") {
		return errors.New("--etcd-certfile and --etcd-keyfile go together; give both for mTLS, or neither")
	}
	if o.EtcdPassword != "" && o.EtcdPasswordFile != "" {
		return errors.New("give --etcd-password or --etcd-password-file, not both")
	}
	if o.EtcdUsername == "" && (o.EtcdPassword != "" || o.EtcdPasswordFile != "") {
		return errors.New("an etcd password needs --etcd-username")
	}
	if len(o.endpoints()) == 0 {
		if o.EtcdCAFile != "" || o.EtcdCertFile != "" || o.EtcdUsername != "" {
			return errors.New("--etcd-cafile, --etcd-certfile, --etcd-keyfile and --etcd-username are for an external etcd; " +
				"set --etcd-endpoints, or drop them to use the embedded etcd")
		}
		if o.DataDir == "" {
			return errors.New("--data-dir is empty; the embedded etcd needs a directory for its data")
		}
	}
	if o.NodeID == "" {
		o.NodeID = defaultNodeID()
	}
	if err := validateNodeID(o.NodeID); err != nil {
		return err
	}
	return nil
}

func (o *serveOptions) endpoints() []string {
	var eps []string
	for _, ep := range strings.Split(o.EtcdEndpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	return eps
}

// isLoopback reports whether a listen address only accepts local
// connections. An empty host (":8080") listens on every interface.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "soloist"
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

func validateNodeID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("invalid --node-id %q: use 1 to 128 characters", id)
	}
	for _, r := range id {
		if r <= ' ' || r == '/' || r == 0x7f {
			return fmt.Errorf("invalid --node-id %q: no spaces, control characters or '/'", id)
		}
	}
	return nil
}

// etcdConfig builds the client configuration for an external etcd.
func (o *serveOptions) etcdConfig() (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   o.endpoints(),
		DialTimeout: 5 * time.Second,
		Username:    o.EtcdUsername,
		Password:    o.EtcdPassword,
	}
	if o.EtcdPasswordFile != "" {
		b, err := os.ReadFile(o.EtcdPasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("read --etcd-password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if o.EtcdCAFile != "" || o.EtcdCertFile != "" {
		info := transport.TLSInfo{TrustedCAFile: o.EtcdCAFile, CertFile: o.EtcdCertFile, KeyFile: o.EtcdKeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return cfg, fmt.Errorf("etcd TLS (--etcd-cafile, --etcd-certfile, --etcd-keyfile): %w", err)
		}
		cfg.TLS = tc
	} else {
		for _, ep := range cfg.Endpoints {
			if strings.HasPrefix(ep, "https://") {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12} // system roots
				break
			}
		}
	}
	return cfg, nil
}

// buildRegistry registers the config file's functions and the demo, and
// returns the config file's schedules.
func buildRegistry(o *serveOptions, log *slog.Logger) (*orchestrator.Registry, []scheduler.Schedule, error) {
	reg := orchestrator.NewRegistry()
	var cfg *fileConfig
	if o.Config != "" {
		var err error
		if cfg, err = loadConfig(o.Config); err != nil {
			return nil, nil, err
		}
		for _, f := range cfg.Functions {
			var fn orchestrator.OrchestratorFunc
			if f.HTTP != nil {
				var err error
				fn, err = httpfn.New(*f.HTTP, httpfn.Options{
					Timeout: f.Timeout,
					Retry:   httpfn.Retry{MaxAttempts: f.Retry.MaxAttempts, Backoff: f.Retry.Backoff},
					Logger:  log.With("function", f.Name),
				})
				if err != nil {
					return nil, nil, fmt.Errorf("config %s, line %d: %w", o.Config, f.Line, err)
				}
			} else {
				fn = execfn.New(f.Exec, execfn.Options{
					Timeout: f.Timeout,
					Retry:   execfn.Retry{MaxAttempts: f.Retry.MaxAttempts, Backoff: f.Retry.Backoff},
					Logger:  log.With("function", f.Name),
					// The program's whole process tree dies with the node.
					Supervisor: execSupervisor(),
				})
			}
			if err := reg.AddOrchestrator(f.Name, fn); err != nil {
				return nil, nil, fmt.Errorf("config %s, line %d: %w", o.Config, f.Line, err)
			}
		}
	}
	if o.Demo {
		if err := registerDemo(reg, o.NodeID); err != nil {
			return nil, nil, fmt.Errorf("--demo registers %s, and the config file defines a function of the same name; rename it: %w",
				strings.Join(demoFunctions, ", "), err)
		}
	}
	if cfg == nil {
		return reg, nil, nil
	}
	scheds := make([]scheduler.Schedule, 0, len(cfg.Schedules))
	for _, sc := range cfg.Schedules {
		if _, ok := reg.Orchestrator(sc.Function); !ok {
			return nil, nil, &configError{file: o.Config, line: sc.FunctionLine, msg: fmt.Sprintf(
				"schedule %q: function %q is a demo function; pass --demo, or define it under functions:", sc.Name, sc.Function)}
		}
		if len(sc.Input) > int(o.MaxPayload) {
			return nil, nil, &configError{file: o.Config, line: sc.InputLine, msg: fmt.Sprintf(
				"schedule %q: input is %d bytes as JSON, more than --max-payload %s; make it smaller or raise --max-payload",
				sc.Name, len(sc.Input), &o.MaxPayload)}
		}
		scheds = append(scheds, scheduler.Schedule{
			Name: sc.Name, Spec: sc.Cron, Function: sc.Function, Input: sc.Input,
			InstanceID: sc.InstanceID, Location: sc.Location,
		})
	}
	return reg, scheds, nil
}

// newMetricsRegistry returns the node's registry with the process
// collectors and soloist_build_info.
func newMetricsRegistry(bi buildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "soloist_build_info",
		Help: "Always 1; the labels say which build runs.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(bi.Version, bi.GoVersion).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), info)
	return reg
}

func runServe(ctx context.Context, args []string, e env, _, stderr io.Writer) error {
	o, err := parseServe(args, e, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, o.LogFormat, o.LogLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	lvl, _ := parseLevel(o.LogLevel)

	// Signals: the first starts the drain, a second one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal received; draining", "signal", s.String(), "shutdown_timeout", o.ShutdownTimeout.String())
			stop(fmt.Errorf("received %s", s))
		case <-ctx.Done():
			return
		}
		if s, ok := <-sigs; ok {
			log.Error("second signal received; exiting without finishing the drain", "signal", s.String())
			os.Exit(1)
		}
	}()

	return serve(ctx, o, log, lvl)
}

// serve runs the node until ctx is cancelled, then drains and shuts down.
func serve(ctx context.Context, o *serveOptions, log *slog.Logger, lvl slog.Level) error {
	bi := readBuildInfo()
	log.Info("soloist starting", "version", bi.Version, "commit", bi.Commit, "go_version", bi.GoVersion,
		"node", o.NodeID, "pid", os.Getpid())

	reg, schedules, err := buildRegistry(o, log)
	if err != nil {
		return err
	}
	var apiKeys []string
	if o.APIKeysFile != "" {
		if apiKeys, err = loadAPIKeys(o.APIKeysFile); err != nil {
			return err
		}
	} else if o.InsecureNoAuth && !isLoopback(o.Listen) {
		log.Warn("serving without authentication on a non-loopback address (--insecure-no-auth)", "listen", o.Listen)
	}

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on --listen %s: %w", o.Listen, err)
	}
	defer ln.Close()

	etcdLevel := zapcore.WarnLevel
	if lvl <= slog.LevelDebug {
		etcdLevel = zapcore.InfoLevel
	}
	var emb *embeddedEtcd
	var ecfg clientv3.Config
	if eps := o.endpoints(); len(eps) > 0 {
		if ecfg, err = o.etcdConfig(); err != nil {
			return err
		}
		log.Info("using etcd", "endpoints", eps, "prefix", o.EtcdPrefix, "tls", ecfg.TLS != nil, "auth", ecfg.Username != "")
	} else {
		log.Info("starting embedded etcd", "client_url", o.EmbeddedClientURL, "data_dir", o.DataDir)
		if emb, err = startEmbeddedEtcd(ctx, o.DataDir, o.EmbeddedClientURL, log); err != nil {
			return err
		}
		defer emb.Close() // after the client's Close, deferred below
		ecfg = clientv3.Config{Endpoints: []string{emb.clientURL}, DialTimeout: 5 * time.Second}
		log.Info("embedded etcd ready", "client_url", emb.clientURL, "data_dir", o.DataDir, "prefix", o.EtcdPrefix,
			"note", "single node: for production run 3 or 5 etcd members and pass --etcd-endpoints")
	}
	zl, silence := zapLogger(log.With("component", "etcd-client"), etcdLevel)
	ecfg.Logger = zl
	cli, err := clientv3.New(ecfg)
	if err != nil {
		return fmt.Errorf("connect to etcd %v: %w", ecfg.Endpoints, err)
	}
	defer func() {
		silence()
		_ = cli.Close()
	}()

	client := orchestrator.NewClient(cli, orchestrator.ClientConfig{
		Prefix: o.EtcdPrefix, MaxPayload: int(o.MaxPayload), Logger: log,
	})
	metrics := newMetricsRegistry(bi)
	node, err := scheduler.New(scheduler.Config{
		Etcd:          cli,
		Prefix:        o.EtcdPrefix,
		NodeID:        o.NodeID,
		Address:       advertiseAddress(ln.Addr().String()),
		Version:       bi.Version,
		LeaseTTL:      o.LeaseTTL,
		MaxConcurrent: o.MaxConcurrent,
		Registry:      reg,
		Client:        client,
		Logger:        log,
		Registerer:    metrics,
		Schedules:     schedules,
	})
	if err != nil {
		return fmt.Errorf("configure node: %w", err)
	}
	api, err := httpapi.New(httpapi.Config{
		Client: client,
		HasFunction: func(name string) bool {
			_, ok := reg.Orchestrator(name)
			return ok
		},
		Ready:      node.Ready,
		Gatherer:   metrics,
		Registerer: metrics,
		APIKeys:    apiKeys,
		MaxPayload: int(o.MaxPayload),
		Logger:     log,
	})
	if err != nil {
		return fmt.Errorf("configure HTTP API: %w", err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	names := reg.Names()
	if len(names) == 0 {
		log.Warn("no functions registered: every start gets 404; pass --config FILE or --demo")
	}
	log.Info("serving HTTP API", "listen", ln.Addr().String(), "auth", len(apiKeys) > 0, "functions", names)
	for _, s := range schedules {
		log.Info("schedule configured", "schedule", s.Name, "cron", s.Spec, "time_zone", s.Location.String(),
			"function", s.Function, "instance_id", s.InstanceID)
	}

	startErr := make(chan error, 1)
	go func() { startErr <- node.Start(ctx) }()
	var runErr error
	select {
	case err := <-startErr:
		if err != nil && ctx.Err() == nil {
			runErr = fmt.Errorf("start node: %w", err)
			break
		}
		select {
		case <-ctx.Done():
		case err := <-srvErr:
			runErr = fmt.Errorf("HTTP server: %w", err)
		}
	case err := <-srvErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	case <-ctx.Done():
	}

	// Shut down within --shutdown-timeout: drain first (readyz turns 503,
	// leases are handed off), then stop serving HTTP.
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	drainErr := node.Drain(shCtx)
	if drainErr != nil {
		log.Error("drain did not finish; peers take over this node's instances after the lease TTL", "error", drainErr, "lease_ttl", o.LeaseTTL.String())
	}
	if err := srv.Shutdown(shCtx); err != nil {
		_ = srv.Close()
	}
	log.Info("stopped", "node", o.NodeID, "shutdown", time.Since(start).Round(time.Millisecond).String())
	if runErr != nil {
		return runErr
	}
	if drainErr != nil {
		return fmt.Errorf("drain: %w", drainErr)
	}
	return nil
}

// advertiseAddress is the HTTP address stored in the node key: the listen
// address, with the host name instead of an unspecified IP.
func advertiseAddress(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}
