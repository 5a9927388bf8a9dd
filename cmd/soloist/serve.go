package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/execfn"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/scheduler"
)

// serveOptions are the flags of soloist serve (docs/contract.md section 4).
type serveOptions struct {
	Listen            string
	MetricsListen     string
	PublicURL         string
	NoCodeInURLs      bool
	RequestTimeout    time.Duration
	MaxConnections    int
	EtcdEndpoints     string
	EtcdDialTimeout   time.Duration
	EtcdMaxRequest    byteSize
	EtcdMaxTxnOps     int
	DataDir           string
	EmbeddedClientURL string
	EmbeddedQuota     byteSize
	EmbeddedRevisions int64
	EtcdPrefix        string
	EtcdCAFile        string
	EtcdCertFile      string
	EtcdKeyFile       string
	EtcdUsername      string
	EtcdPassword      string
	EtcdPasswordFile  string
	NodeID            string
	Role              string
	LeaseTTL          time.Duration
	Retention         time.Duration
	ParkAfter         time.Duration
	BatchBudget       time.Duration
	MaxConcurrent     int
	MaxPayload        byteSize
	Config            string
	APIKeysFile       string
	InsecureNoAuth    bool
	LogFormat         string
	LogLevel          string
	ShutdownTimeout   time.Duration
	Pprof             bool
	Demo              bool
	grpcOptions
	UI         bool
	UIReadOnly bool
}

// addServeFlags defines the flags of soloist serve on fs, each reading its
// SOLOIST_ variable.
func addServeFlags(fs *pflag.FlagSet, o *serveOptions) {
	fs.SortFlags = false
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080", "`address` of the HTTP API, health checks and metrics")
	fs.StringVar(&o.MetricsListen, "metrics-listen", "", "`address` of a second listener that serves /metrics without API keys, e.g. 0.0.0.0:9090")
	fs.StringVar(&o.PublicURL, "public-url", "", "base `URL` of the absolute URLs in answers (Location, statusQueryGetUri, ...), e.g. https://soloist.example.com; empty uses the request's Host")
	fs.BoolVar(&o.NoCodeInURLs, "no-code-in-urls", false, "do not echo a ?code= API key into the URLs of answers (Durable Functions echoes it)")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", 30*time.Second, "a request's headers and body must arrive within this `duration`; its answer gets twice that")
	fs.IntVar(&o.MaxConnections, "max-connections", 1024, "most HTTP `connections` at once, beyond a reserve kept for health checks; 0 means no limit")
	fs.StringVar(&o.EtcdEndpoints, "etcd-endpoints", "", "comma-separated etcd `endpoints`; empty starts an embedded single-node etcd")
	fs.DurationVar(&o.EtcdDialTimeout, "etcd-dial-timeout", 20*time.Second, "give up starting if etcd does not answer and grant the node's session within this `duration`")
	o.EtcdMaxRequest = orchestrator.DefaultRequestBytes
	fs.Var(&o.EtcdMaxRequest, "etcd-max-request-bytes", "etcd's --max-request-bytes as the etcd server has it (the embedded etcd gets it): every transaction is cut to fit this `size`")
	fs.IntVar(&o.EtcdMaxTxnOps, "etcd-max-txn-ops", orchestrator.DefaultTxnOps, "etcd's --max-txn-ops as the etcd server has it (the embedded etcd gets it): most `operations` in one transaction")
	fs.StringVar(&o.DataDir, "data-dir", "./soloist-data", "`directory` of the embedded etcd's data")
	fs.StringVar(&o.EmbeddedClientURL, "embedded-etcd-client-url", "http://127.0.0.1:2379", "`URL` the embedded etcd serves clients at (for etcdctl)")
	o.EmbeddedQuota = defaultEmbeddedQuota
	fs.Var(&o.EmbeddedQuota, "embedded-etcd-quota", "the embedded etcd's backend quota (its --quota-backend-bytes): past this `size` it refuses every write (NOSPACE)")
	fs.Int64Var(&o.EmbeddedRevisions, "embedded-etcd-compaction-revisions", defaultEmbeddedRevisions, "the embedded etcd keeps this many `revisions` of history; older ones are compacted every 5 minutes")
	fs.StringVar(&o.EtcdPrefix, "etcd-prefix", "/soloist/", "`prefix` of every key Soloist writes")
	fs.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA `file` to verify etcd's certificate (https:// endpoints)")
	fs.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate `file` for etcd mTLS")
	fs.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "client key `file` for etcd mTLS")
	fs.StringVar(&o.EtcdUsername, "etcd-username", "", "etcd `user` name")
	fs.StringVar(&o.EtcdPassword, "etcd-password", "", "etcd `password` (prefer --etcd-password-file)")
	fs.StringVar(&o.EtcdPasswordFile, "etcd-password-file", "", "`file` holding the etcd password")
	fs.StringVar(&o.NodeID, "node-id", "", "`name` of this node; empty means the hostname plus a random suffix")
	fs.StringVar(&o.Role, "role", string(scheduler.RoleAll), "`role` of this node: all (serve the API and run instances), api (serve the API, run nothing) or runner (run instances; serve health checks and metrics only)")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", 10*time.Second, "session lease `TTL`: whole seconds, at least 2s")
	fs.DurationVar(&o.Retention, "retention", 168*time.Hour, "purge finished instances, with their history, this `duration` after they finished; 0 keeps them forever")
	fs.DurationVar(&o.BatchBudget, "batch-budget", orchestrator.DefaultBatchBudget, "let the activities that run on this node commit together, with a commit at least every `duration` while they run (fewer etcd transactions; after a crash the batch's activities run again), and likewise a gRPC worker's steps that only schedule activities; 0 commits every step before its activities start")
	fs.DurationVar(&o.ParkAfter, "park-after", 30*time.Second, "park a held orchestration that has waited this `duration` with nothing in flight (no goroutine or history kept; it is read again from etcd when an event or its timer comes); 0 never parks. Before that, a run waiting for 1s is unloaded: no goroutine, its history kept in memory")
	fs.IntVar(&o.MaxConcurrent, "max-concurrent", 0, "most `instances` this node holds at once; 0 means no limit")
	o.MaxPayload = orchestrator.DefaultMaxPayload
	fs.Var(&o.MaxPayload, "max-payload", "largest input, output, custom status or event `size`: bytes, KiB, MiB (or KB, MB: powers of 1000)")
	fs.StringVar(&o.Config, "config", "", "YAML `file` of functions and schedules")
	fs.StringVar(&o.APIKeysFile, "api-keys-file", "", "`file` of API keys, one a line; every route but health checks then needs one")
	fs.BoolVar(&o.InsecureNoAuth, "insecure-no-auth", false, "allow a non-loopback --listen without --api-keys-file")
	fs.StringVar(&o.LogFormat, "log-format", "auto", "`format` of logs: auto (coloured on a terminal, else JSON), text or json")
	fs.StringVar(&o.LogLevel, "log-level", "info", "`level`: debug, info, warn or error")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "drain `budget` on SIGTERM or SIGINT")
	fs.BoolVar(&o.UI, "ui", true, "serve the dashboard at /ui/ on --listen, behind the API keys (--ui=false turns it off)")
	fs.BoolVar(&o.UIReadOnly, "ui-read-only", false, "the dashboard offers no action (terminate, purge, ...) and its action routes answer 403")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve Go's profiler (net/http/pprof) at /debug/pprof/ on --metrics-listen, never on --listen")
	fs.BoolVar(&o.Demo, "demo", false, "register the demo orchestrations "+strings.Join(demoFunctions, ", "))
	addGRPCFlags(fs, &o.grpcOptions)
	withEnv(fs)
}

func newServeCommand() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "run a Soloist node",
		Long: `Run a Soloist node: the HTTP API, health checks and metrics on --listen, and
the orchestrations it holds. Without --etcd-endpoints it starts an embedded
single-node etcd in --data-dir.

Every flag also reads SOLOIST_<FLAG> (upper case, - to _); a flag beats its
variable. On SIGTERM or SIGINT the node drains within --shutdown-timeout.`,
		Args: exactArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return usagef("serve", "%v", err)
			}
			return runServe(cmd.Context(), o, cmd.ErrOrStderr())
		},
	}
	addServeFlags(cmd.Flags(), o)
	return cmd
}

// parseServe reads the flags of soloist serve from the environment and args
// (args win) and validates them, as the command does.
func parseServe(args []string, e env) (*serveOptions, error) {
	o := &serveOptions{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addServeFlags(fs, o)
	if err := fs.Parse(args); err != nil {
		return nil, usagef("serve", "%v", err)
	}
	if err := bindEnv(fs, e); err != nil {
		return nil, usagef("serve", "%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("serve", "unexpected argument %q; usage: soloist serve [flags]", fs.Arg(0))
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
	if o.EtcdMaxRequest <= 0 {
		return fmt.Errorf("invalid --etcd-max-request-bytes %s: use the --max-request-bytes of the etcd server (etcd's default is 1.5MiB)", &o.EtcdMaxRequest)
	}
	if o.EtcdMaxTxnOps <= 0 {
		return fmt.Errorf("invalid --etcd-max-txn-ops %d: use the --max-txn-ops of the etcd server (etcd's default is 128)", o.EtcdMaxTxnOps)
	}
	if err := orchestrator.CheckLimits(int(o.MaxPayload), o.limits()); err != nil {
		return err
	}
	if o.EmbeddedQuota <= 0 {
		return fmt.Errorf("invalid --embedded-etcd-quota %s: use a positive size, e.g. 2GiB (etcd's default; it suggests at most 8GiB)", &o.EmbeddedQuota)
	}
	if o.EmbeddedRevisions < 1 {
		return fmt.Errorf("invalid --embedded-etcd-compaction-revisions %d: keep at least 1 revision, e.g. 10000 (without compaction the data grows until the quota stops every write)", o.EmbeddedRevisions)
	}
	if _, err := scheduler.ParseRole(o.Role); err != nil || o.Role == "" {
		return fmt.Errorf("invalid --role %q: use all (serve the API and run instances), api (serve the API only) or runner (run instances only)", o.Role)
	}
	if o.Retention < 0 {
		return fmt.Errorf("invalid --retention %s: use a duration such as 168h, or 0 to keep finished instances forever", o.Retention)
	}
	if o.BatchBudget < 0 {
		return fmt.Errorf("invalid --batch-budget %s: use a duration such as 1s, or 0 to commit every step", o.BatchBudget)
	}
	if o.ParkAfter < 0 {
		return fmt.Errorf("invalid --park-after %s: use a duration such as 30s, or 0 to keep every run in memory", o.ParkAfter)
	}
	if o.ShutdownTimeout <= 0 {
		return fmt.Errorf("invalid --shutdown-timeout %s: use a positive duration, e.g. 25s", o.ShutdownTimeout)
	}
	if o.RequestTimeout <= 0 {
		return fmt.Errorf("invalid --request-timeout %s: use a positive duration, e.g. 30s", o.RequestTimeout)
	}
	if o.EtcdDialTimeout <= 0 {
		return fmt.Errorf("invalid --etcd-dial-timeout %s: use a positive duration, e.g. 20s", o.EtcdDialTimeout)
	}
	if o.MaxConnections < 0 {
		return fmt.Errorf("invalid --max-connections %d: use 0 for no limit or a positive number, e.g. 1024", o.MaxConnections)
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
	if o.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(o.MetricsListen); err != nil {
			return fmt.Errorf("invalid --metrics-listen %q: use HOST:PORT, e.g. 0.0.0.0:9090", o.MetricsListen)
		}
		if o.MetricsListen == o.Listen {
			return fmt.Errorf("--metrics-listen %s is --listen too; give the metrics listener its own port, e.g. :9090", o.MetricsListen)
		}
	} else if o.Pprof {
		return errors.New("--pprof serves /debug/pprof/ on --metrics-listen only, never on --listen; give --metrics-listen too, e.g. 127.0.0.1:9090")
	}
	if o.PublicURL != "" {
		u, err := url.Parse(o.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("invalid --public-url %q: use the URL clients reach this node at, scheme and host (and a path prefix if a proxy adds one), e.g. https://soloist.example.com", o.PublicURL)
		}
	}
	if o.APIKeysFile == "" && !o.InsecureNoAuth && !isLoopback(o.Listen) {
		return fmt.Errorf("refusing to serve on --listen %s without authentication: anyone who reaches it could start and terminate instances; "+
			"pass --api-keys-file FILE (one key a line), listen on 127.0.0.1, or pass --insecure-no-auth if something in front of soloist authenticates", o.Listen)
	}
	if err := o.validateGRPC(); err != nil {
		return err
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
	} else if err := o.checkEndpointSchemes(); err != nil {
		return err
	}
	if o.NodeID == "" {
		o.NodeID = defaultNodeID()
	}
	if err := validateNodeID(o.NodeID); err != nil {
		return err
	}
	return nil
}

// limits are etcd's request limits as the flags give them.
func (o *serveOptions) limits() orchestrator.Limits {
	return orchestrator.Limits{RequestBytes: int(o.EtcdMaxRequest), TxnOps: o.EtcdMaxTxnOps}
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
					Logger:  log, // httpfn adds the function to every line
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
		Help: "Always 1; the labels say which build runs: version, revision (the VCS commit, or unknown) and goversion.",
	}, []string{"version", "revision", "goversion"})
	info.WithLabelValues(bi.Version, bi.Commit, bi.GoVersion).Set(1)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), info)
	return reg
}

// runServe sets up logging and signals and serves until the first signal.
func runServe(ctx context.Context, o *serveOptions, stderr io.Writer) error {
	log, err := newLogger(stderr, o.LogFormat, o.LogLevel)
	if err != nil {
		return err
	}
	// Every line of the node says which node it is.
	log = log.With("node", o.NodeID)
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
		"role", o.Role, "pid", os.Getpid())

	reg, schedules, err := buildRegistry(o, log)
	if err != nil {
		return err
	}
	tr, err := setupTracing(ctx, o.NodeID, bi.Version, log)
	if err != nil {
		return usagef("serve", "%v", err)
	}
	defer tr.shutdown(context.WithoutCancel(ctx), log) // on the early returns; after the drain it has nothing left
	var apiKeys []string
	if o.APIKeysFile != "" {
		if apiKeys, err = loadAPIKeys(o.APIKeysFile); err != nil {
			return err
		}
	} else if o.InsecureNoAuth && !isLoopback(o.Listen) {
		log.Warn("serving without authentication on a non-loopback address (--insecure-no-auth)", "listen", o.Listen)
	}

	lns, err := listen(o)
	if err != nil {
		return err
	}
	defer lns.Close()
	gln, err := listenGRPC(o)
	if err != nil {
		return err
	}
	defer gln.shutdown(context.WithoutCancel(ctx)) // on the early returns; after the drain it has nothing left
	// Serve from now on: /livez answers, and the rest 503 until the API is
	// wired to etcd.
	metrics := newMetricsRegistry(bi)
	srv := newServers(o, lns, metrics, log)
	defer srv.close()
	srvErr := srv.serve()
	defer startWatchdog(log, livezProbe(lns.api.Addr()))()

	var emb *embeddedEtcd
	var ecfg etcdTarget
	if len(o.endpoints()) > 0 {
		if ecfg, err = o.etcdConfig(); err != nil {
			return err
		}
	} else {
		es := o.embeddedSettings()
		log.Info("starting embedded etcd", "client_url", es.ClientURL, "data_dir", es.DataDir, "max_request_bytes", es.Limits.RequestBytes,
			"max_txn_ops", es.Limits.TxnOps, "quota_backend_bytes", es.Quota, "compaction_revisions", es.Revisions)
		if emb, err = startEmbeddedEtcd(ctx, es, log); err != nil {
			return err
		}
		defer emb.Close() // after the client's Close, deferred below
		ecfg = embeddedTarget(emb, o.EtcdDialTimeout, o.limits())
		log.Info("embedded etcd ready", "client_url", emb.clientURL, "data_dir", o.DataDir, "prefix", o.EtcdPrefix,
			"note", "single node: for production run 3 or 5 etcd members and pass --etcd-endpoints")
	}
	// etcd's first answer and the node's first session, within
	// --etcd-dial-timeout.
	startCtx, cancelStart := context.WithTimeoutCause(ctx, o.EtcdDialTimeout, errDialTimeout)
	defer cancelStart()
	cli, silence, err := connectEtcd(startCtx, ecfg, o.EtcdPrefix, log, lvl)
	if err != nil {
		return err
	}
	defer func() {
		silence()
		_ = cli.Close()
	}()

	// After startup, a warning names the endpoints while etcd does not
	// answer; stopped before the client closes.
	watch := newEtcdWatch(cli, ecfg, o.EtcdPrefix, log)
	node, api, err := wire(o, parts{
		etcd: cli, registry: reg, schedules: schedules, metrics: metrics, apiKeys: apiKeys,
		address: advertiseAddress(lns.api.Addr().String()), version: bi.Version, log: log,
		endpoints: ecfg.cfg.Endpoints, unreachable: watch.suspect, tracer: tr.provider, stopping: ctx.Done(),
		workers: gln.workers(),
	})
	if err != nil {
		return err
	}
	defer watch.start(node.Ready)()
	srv.setAPI(api)
	var grpcErr <-chan error
	if gln != nil {
		if grpcErr, err = gln.start(o, node, node.Client(), metrics, apiKeys, log); err != nil {
			return err
		}
	}
	names := reg.Names()
	switch {
	case len(names) > 0:
	case o.Role == string(scheduler.RoleRunner):
		log.Warn("no functions registered: this node can run no instance; pass --config FILE or --demo")
	default:
		log.Warn("no functions registered: every start gets 404; pass --config FILE or --demo")
	}
	if o.Role == string(scheduler.RoleRunner) {
		log.Info("serving health checks and metrics only (--role runner): the API is on the nodes of role all or api",
			"listen", lns.api.Addr().String(), "functions", names)
	} else {
		log.Info("serving HTTP API", "listen", lns.api.Addr().String(), "auth", len(apiKeys) > 0, "functions", names,
			"max_connections", o.MaxConnections, "request_timeout", o.RequestTimeout.String())
	}
	if lns.metrics != nil {
		log.Info("serving metrics", "metrics_listen", lns.metrics.Addr().String(), "path", "/metrics", "pprof", o.Pprof)
	}
	for _, s := range schedules {
		log.Info("schedule configured", "schedule", s.Name, "cron", s.Spec, "time_zone", s.Location.String(),
			"function", s.Function, "instance_id", s.InstanceID)
	}

	startErr := make(chan error, 1)
	go func() { startErr <- node.Start(startCtx) }()
	memCtx, memStop := context.WithCancel(ctx)
	memDone := make(chan struct{})
	release := defaultMemRelease
	floorOn := os.Getenv("GOGC") == ""
	if floorOn {
		release.headroom = defaultGCFloor.floor
	}
	go func() { defer close(memDone); release.run(memCtx, log) }()
	floorDone := make(chan struct{})
	if floorOn {
		go func() { defer close(floorDone); defaultGCFloor.run(memCtx, log) }()
	} else {
		close(floorDone)
	}
	defer func() { memStop(); <-memDone; <-floorDone }()
	var runErr error
	select {
	case err := <-startErr:
		if err != nil && ctx.Err() == nil {
			runErr = startFailure(err, startCtx, ecfg)
			break
		}
		cancelStart()
		notifyReady(log)
		select {
		case <-ctx.Done():
		case err := <-srvErr:
			runErr = fmt.Errorf("HTTP server: %w", err)
		case err := <-grpcErr:
			runErr = fmt.Errorf("gRPC server: %w", err)
		}
	case err := <-srvErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	case err := <-grpcErr:
		runErr = fmt.Errorf("gRPC server: %w", err)
	case <-ctx.Done():
	}

	// Shut down within --shutdown-timeout: drain first (readyz turns 503,
	// leases are handed off), then stop serving HTTP.
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	notifyStopping(log)
	// The gRPC streams end as the drain begins, so that workers reconnect
	// to another node while this one hands its instances over.
	grpcDone := make(chan struct{})
	go func() { defer close(grpcDone); gln.shutdown(shCtx) }()
	drainErr := node.Drain(shCtx)
	<-grpcDone
	if drainErr != nil {
		log.Error("drain did not finish; peers take over this node's instances after the lease TTL", "error", drainErr, "lease_ttl", o.LeaseTTL.String())
	}
	srv.shutdown(shCtx)
	// The drain ended the runs' spans and the HTTP shutdown the requests':
	// flush them last.
	tr.shutdown(shCtx, log)
	log.Info("stopped", "shutdown", time.Since(start).Round(time.Millisecond).String())
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
