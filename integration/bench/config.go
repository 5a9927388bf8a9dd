package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// errReported is a command-line error the flag package already printed.
var errReported = errors.New("bad command line")

// phaseNames are the phases in the order they run.
var phaseNames = []string{"etcd", "starts", "lifecycle", "reqs", "grpc", "takeover", "mass", "handoff", "idle", "api"}

// config is the command line.
type config struct {
	short    bool
	nodes    int
	c        int
	phases   []string
	keep     bool
	pprofDir string
	nodeArgs []string
	nodeEnv  []string

	warmup   time.Duration // before every throughput window
	leaseTTL time.Duration // --lease-ttl of the throughput phases

	etcdDuration time.Duration
	etcdConns    int

	startsDuration time.Duration

	lifecycleDuration time.Duration
	lifecycleInflight int
	lifecycleGrace    time.Duration

	grpcDuration time.Duration

	reqsLifecycles  int
	reqsConcurrency int

	takeovers   int
	takeoverTTL time.Duration

	massInstances int
	massTTL       time.Duration

	idleInstances int
	idleSettle    time.Duration
	idleWindow    time.Duration
	idleParkAfter time.Duration
}

// shortDefaults are the -short values of the flags the user did not set.
var shortDefaults = map[string]string{
	"warmup":             "1s",
	"etcd-duration":      "3s",
	"starts-duration":    "5s",
	"lifecycle-duration": "6s",
	"lifecycle-grace":    "15s",
	"reqs-lifecycles":    "40",
	"grpc-duration":      "4s",
	"takeovers":          "3",
	"idle-instances":     "1000",
	"idle-settle":        "3s",
	"idle-window":        "5s",
	"idle-park-after":    "5s",
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var phases, nodeArgs, nodeEnv string
	fs.BoolVar(&cfg.short, "short", false, "CI mode: smaller counts and shorter windows (under 2 minutes on 2 cores); flags you set still win")
	fs.IntVar(&cfg.nodes, "nodes", 3, "soloist `nodes` per cluster")
	fs.IntVar(&cfg.c, "c", 64, "`concurrency` of the etcd, start and lifecycle load")
	fs.StringVar(&phases, "phases", strings.Join(phaseNames, ","), "comma `list` of phases to run: "+strings.Join(phaseNames, ", "))
	fs.BoolVar(&cfg.keep, "keep", false, "keep the run's directory (logs of every process, etcd data) and print its path")
	fs.StringVar(&cfg.pprofDir, "pprof", "", "`directory` for CPU profiles of the nodes during each measured window (PHASE-NODE.pprof)")
	fs.StringVar(&nodeArgs, "node-args", "", "extra `arguments` for every soloist serve, space-separated")
	fs.StringVar(&nodeEnv, "node-env", "", "extra environment `VAR=value` pairs for every soloist serve, space-separated (GOGC=100 turns the node's GC floor off)")

	fs.DurationVar(&cfg.warmup, "warmup", 3*time.Second, "warm-up before each throughput window, not counted (short: "+shortDefaults["warmup"]+")")
	fs.DurationVar(&cfg.leaseTTL, "lease-ttl", 10*time.Second, "--lease-ttl of the nodes in the starts, lifecycle, reqs, grpc, idle and api phases")
	fs.DurationVar(&cfg.etcdDuration, "etcd-duration", 10*time.Second, "etcd: measured window of create-if-absent transactions (short: "+shortDefaults["etcd-duration"]+")")
	fs.IntVar(&cfg.etcdConns, "etcd-conns", 0, "etcd: client connections the load is spread over; 0 means one per node (-nodes)")
	fs.DurationVar(&cfg.startsDuration, "starts-duration", 20*time.Second, "starts, api: measured window of HTTP starts (short: "+shortDefaults["starts-duration"]+")")
	fs.DurationVar(&cfg.lifecycleDuration, "lifecycle-duration", 30*time.Second, "lifecycle: measured window (short: "+shortDefaults["lifecycle-duration"]+")")
	fs.IntVar(&cfg.lifecycleInflight, "lifecycle-inflight", 0, "lifecycle, grpc: HelloCities lifecycles kept in flight; 0 means -c")
	fs.DurationVar(&cfg.lifecycleGrace, "lifecycle-grace", 30*time.Second, "lifecycle, grpc: how long started instances may take to complete after the window (short: "+shortDefaults["lifecycle-grace"]+")")
	fs.DurationVar(&cfg.grpcDuration, "grpc-duration", 30*time.Second, "grpc: measured window of lifecycles run by gRPC workers (short: "+shortDefaults["grpc-duration"]+"); it also runs -reqs-lifecycles of them -reqs-c at a time to count etcd requests")
	fs.IntVar(&cfg.reqsLifecycles, "reqs-lifecycles", 200, "reqs: HelloCities lifecycles K on an otherwise idle cluster (short: "+shortDefaults["reqs-lifecycles"]+")")
	fs.IntVar(&cfg.reqsConcurrency, "reqs-c", 1, "reqs: lifecycles in flight at once")
	fs.IntVar(&cfg.takeovers, "takeovers", 10, "takeover: kill -9 rounds M (short: "+shortDefaults["takeovers"]+")")
	fs.DurationVar(&cfg.takeoverTTL, "takeover-ttl", 2*time.Second, "takeover: --lease-ttl of the nodes")
	fs.IntVar(&cfg.massInstances, "mass-instances", 1000, "mass, handoff: instances held by the node that dies or drains")
	fs.DurationVar(&cfg.massTTL, "mass-ttl", 5*time.Second, "mass, handoff: --lease-ttl of the nodes")
	fs.IntVar(&cfg.idleInstances, "idle-instances", 10000, "idle: Approval instances one node holds (short: "+shortDefaults["idle-instances"]+")")
	fs.DurationVar(&cfg.idleSettle, "idle-settle", 5*time.Second, "idle: wait before reading memory and goroutines, after the node is ready and again after all are held and steady (short: "+shortDefaults["idle-settle"]+")")
	fs.DurationVar(&cfg.idleParkAfter, "idle-park-after", 30*time.Second, "idle: --park-after of the node whose instances park (the product's default is 30s; short: "+shortDefaults["idle-park-after"]+")")
	fs.DurationVar(&cfg.idleWindow, "idle-window", 10*time.Second, "idle: window over which idle etcd requests are counted (short: "+shortDefaults["idle-window"]+")")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errReported
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; the benchmark takes only flags", fs.Arg(0))
	}
	if cfg.short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range shortDefaults {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	var err error
	if cfg.phases, err = parsePhases(phases); err != nil {
		return nil, err
	}
	cfg.nodeArgs = strings.Fields(nodeArgs)
	cfg.nodeEnv = strings.Fields(nodeEnv)
	if cfg.etcdConns == 0 {
		cfg.etcdConns = cfg.nodes
	}
	if cfg.lifecycleInflight == 0 {
		cfg.lifecycleInflight = cfg.c
	}
	return cfg, cfg.validate()
}

func parsePhases(list string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(phaseNames, p) {
			return nil, fmt.Errorf("unknown phase %q in -phases; use a comma list of %s", p, strings.Join(phaseNames, ", "))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-phases is empty; use a comma list of " + strings.Join(phaseNames, ", "))
	}
	// Run in the fixed order: the ratios need etcd's figure first.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(phaseNames, a) - slices.Index(phaseNames, b) })
	return out, nil
}

func (cfg *config) validate() error {
	var errs []error
	positive := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be at least 1, not %d", name, v))
		}
	}
	positive("nodes", cfg.nodes)
	positive("c", cfg.c)
	positive("etcd-conns", cfg.etcdConns)
	positive("lifecycle-inflight", cfg.lifecycleInflight)
	positive("reqs-lifecycles", cfg.reqsLifecycles)
	positive("reqs-c", cfg.reqsConcurrency)
	positive("takeovers", cfg.takeovers)
	positive("mass-instances", cfg.massInstances)
	positive("idle-instances", cfg.idleInstances)
	for name, d := range map[string]time.Duration{
		"etcd-duration": cfg.etcdDuration, "starts-duration": cfg.startsDuration,
		"lifecycle-duration": cfg.lifecycleDuration, "lifecycle-grace": cfg.lifecycleGrace, "grpc-duration": cfg.grpcDuration,
		"idle-window": cfg.idleWindow, "idle-park-after": cfg.idleParkAfter,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, not %s", name, d))
		}
	}
	for name, d := range map[string]time.Duration{"warmup": cfg.warmup, "idle-settle": cfg.idleSettle} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("-%s must not be negative, not %s", name, d))
		}
	}
	for name, d := range map[string]time.Duration{"lease-ttl": cfg.leaseTTL, "takeover-ttl": cfg.takeoverTTL, "mass-ttl": cfg.massTTL} {
		if d < 2*time.Second || d%time.Second != 0 {
			errs = append(errs, fmt.Errorf("-%s %s: soloist takes whole seconds, at least 2s", name, d))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// runs reports whether the phase was selected.
func (cfg *config) runs(phase string) bool { return slices.Contains(cfg.phases, phase) }
