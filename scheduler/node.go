package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// Role says what a node does.
type Role string

// Roles, as Temporal splits frontends from workers.
const (
	// RoleAll serves starts and runs instances.
	RoleAll Role = "all"
	// RoleAPI serves the API only: it keeps a session (so it is ready and
	// visible in the node keys) but watches nothing and campaigns for
	// nothing, and claims no schedule ticks.
	RoleAPI Role = "api"
	// RoleRunner campaigns for and runs instances; its HTTP side serves
	// health and metrics only (that is the caller's to wire).
	RoleRunner Role = "runner"
)

// ParseRole accepts "all", "api" or "runner"; empty means RoleAll.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case "":
		return RoleAll, nil
	case RoleAll, RoleAPI, RoleRunner:
		return r, nil
	}
	return "", fmt.Errorf("scheduler: role %q: use all (serve starts and run instances), api (serve the API only) or runner (run instances only)", s)
}

// Runs reports whether nodes of this role campaign for and run instances.
func (r Role) Runs() bool { return r != RoleAPI }

// Config configures a Node.
type Config struct {
	// Etcd is the connection the node uses; the caller closes it after Drain.
	Etcd *clientv3.Client
	// Prefix is the root of every key. Defaults to "/soloist/".
	Prefix string
	// NodeID names the node in owners and node keys. Required.
	NodeID string
	// Address is the node's advertised HTTP address, stored in its node key.
	Address string
	// Version is stored in the node key.
	Version string
	// Role is what the node does. Defaults to RoleAll.
	Role Role
	// LeaseTTL is the session lease TTL: whole seconds, at least 2s.
	// Defaults to 10s.
	LeaseTTL time.Duration
	// MaxConcurrent caps the instances this node holds at once; 0 means no limit.
	MaxConcurrent int
	// Campaigns caps the campaigns in flight at once. Defaults to 256.
	Campaigns int
	// Registry holds the orchestrations this node can run. Required.
	Registry *orchestrator.Registry
	// Client is the orchestrator client. Defaults to one on Etcd with Prefix.
	Client *orchestrator.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the node's metrics. Defaults to a fresh registry.
	Registerer prometheus.Registerer
	// PreferenceDelay is how long a node waits per rank below an instance's
	// preferred node before it campaigns. Defaults to 200ms.
	PreferenceDelay time.Duration
	// Schedules start functions at cron ticks (see Schedule). Give every
	// node the same schedules; each tick is claimed once across them.
	Schedules []Schedule
	// Retention, if above zero, purges terminal instances that finished
	// longer ago than it, with their history and inbox; one node at a time
	// does it, in a sweep every min(Retention/2, 1 minute). 0 keeps them.
	Retention time.Duration
	// AlarmInterval is how often the node asks etcd for its alarms (a
	// NOSPACE alarm makes it unready). Defaults to 5s.
	AlarmInterval time.Duration
	// ParkAfter is how long a held orchestration may wait with nothing in
	// flight (only events and durable timers awaited, everything
	// committed) before its run is parked: the node drops its history and
	// keeps only the holding, and drives it again from etcd (one read, a
	// replay) when an event comes or its timer fires. As Durable Functions
	// unloads an orchestration after its extended session's idle timeout.
	// Defaults to 30s; a negative value never parks. Before that, after 1s
	// of waiting, a run of an orchestration of the Registry with a small
	// history (64 events, 16 KiB of payloads) is unloaded: its goroutine
	// ends and the node keeps the history in memory, to replay it without a
	// read.
	ParkAfter time.Duration
	// BatchBudget lets the activities a run executes on this node commit
	// together, a commit at least every BatchBudget
	// (orchestrator.RunOptions.BatchBudget); 0 commits every step before
	// its activities start. serve's --batch-budget defaults to 1s.
	BatchBudget time.Duration
}

// ErrDraining means the node is shutting down and takes no new work.
var ErrDraining = errors.New("scheduler: node is draining; send the request to another node")

// ErrNoSession means the node has no live etcd session.
var ErrNoSession = errors.New("scheduler: no live etcd session; the node cannot reach etcd")

// Reasons a run stops, as context causes.
var (
	errDrain   = errors.New("scheduler: node draining")
	errChanged = errors.New("scheduler: instance terminated, suspended or restarted")
	errStopped = errors.New("scheduler: node stopped")
)

// Node is one Soloist replica: it watches instance records, campaigns for
// the runnable ones whose function it has, and runs those it holds.
type Node struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	client *orchestrator.Client
	keys   orchestrator.Keys

	ctx    context.Context // the node's life; cancelled by Drain at the end
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // loops and campaigns
	runsWG sync.WaitGroup // runs: Drain waits for them only within its budget
	kick   chan struct{}  // wakes the campaign loop
	health health
	subs   subscribers // observers of the watch (observe.go)

	mu          sync.Mutex
	started     bool
	draining    bool
	drained     chan struct{}
	runsGone    chan struct{} // closed by the run that leaves n.runs empty during a drain
	session     *lease.Session
	instances   map[string]*instanceView // active instances only
	owners      map[string]ownerView
	ownedHere   int                  // owners keys in the view that name this node
	unseen      map[string]struct{}  // runs whose owners key the view does not name this node for yet
	othersTook  takeRate             // owners keys the view saw other nodes create, lately (land.go)
	ownerGone   map[string]ownerGone // owners keys seen deleted, while the instance is active
	nodes       map[string]*orchestrator.NodeInfo
	unrunnable  map[string]string // active, unheld instances no live node can run: id -> function
	campaigning map[string]*campaign
	runs        map[string]*run
	queue       candidates
	retries     map[string]*retryState // instances whose runs failed: when to try again
	handedOff   []*lease.Holding       // released by a drain all at once

	remote    Remote       // set before Start (SetRemote)
	nodeKeyMu sync.Mutex   // orders the node key's writes (putNodeKey)
	scheds    []*scheduled // owned by scheduleLoop once started
	startedAt time.Time
}

type instanceView struct {
	name, version string
	status        orchestrator.RuntimeStatus
	executionID   string
	modRev        int64     // the record's ModRevision
	notBefore     time.Time // its scheduled start time, if any
}

type ownerView struct {
	node        string
	executionID string
	leaseID     string
	token       int64
}

// ownerGone is when this node saw an owners key deleted, and whose it was.
type ownerGone struct {
	at          time.Time
	executionID string
	node        string
	leaseID     string
}

// retryState backs off the runs of one instance that keep failing.
type retryState struct {
	b       *backoff.ExponentialBackOff
	until   time.Time
	refused int // campaigns refused on a record revision the view still had
}

// New validates cfg and returns a Node that is not started.
func New(cfg Config) (*Node, error) {
	if cfg.Etcd == nil {
		return nil, errors.New("scheduler: Config.Etcd is required")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("scheduler: Config.NodeID is required")
	}
	if cfg.Registry == nil {
		return nil, errors.New("scheduler: Config.Registry is required")
	}
	role, err := ParseRole(string(cfg.Role))
	if err != nil {
		return nil, err
	}
	cfg.Role = role
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if err := lease.ValidateTTL(cfg.LeaseTTL); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if cfg.MaxConcurrent < 0 {
		return nil, fmt.Errorf("scheduler: MaxConcurrent %d must be 0 (no limit) or more", cfg.MaxConcurrent)
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("scheduler: Retention %s must be 0 (keep forever) or more", cfg.Retention)
	}
	if cfg.Campaigns <= 0 {
		cfg.Campaigns = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.PreferenceDelay <= 0 {
		cfg.PreferenceDelay = 200 * time.Millisecond
	}
	if cfg.AlarmInterval <= 0 {
		cfg.AlarmInterval = 5 * time.Second
	}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = 30 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = orchestrator.NewClient(cfg.Etcd, orchestrator.ClientConfig{Prefix: cfg.Prefix, Logger: cfg.Logger})
	}
	scheds, err := compileSchedules(cfg.Schedules, cfg.Registry, cfg.Client.MaxPayload())
	if err != nil {
		return nil, err
	}
	names := make([]string, len(scheds))
	for i, s := range scheds {
		names[i] = s.Name
	}
	m, err := newMetrics(cfg.Registerer, names, cfg.Registry.Names())
	if err != nil {
		return nil, fmt.Errorf("scheduler: register metrics: %w", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Node{
		cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), m: m, client: cfg.Client,
		keys: cfg.Client.Keys(), ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), health: health{kick: make(chan struct{}, 1)},
		drained:   make(chan struct{}),
		runsGone:  make(chan struct{}),
		instances: map[string]*instanceView{}, owners: map[string]ownerView{},
		ownerGone: map[string]ownerGone{}, nodes: map[string]*orchestrator.NodeInfo{}, unrunnable: map[string]string{},
		campaigning: map[string]*campaign{}, runs: map[string]*run{}, unseen: map[string]struct{}{},
		retries: map[string]*retryState{}, scheds: scheds, startedAt: time.Now().UTC(),
	}, nil
}

// Client returns the orchestrator client the node uses.
func (n *Node) Client() *orchestrator.Client { return n.client }

// Registry returns the node's orchestration registry.
func (n *Node) Registry() *orchestrator.Registry { return n.cfg.Registry }

// ID returns the node ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Role returns what the node does.
func (n *Node) Role() Role { return n.cfg.Role }

// Ready returns nil while the node's session is alive, etcd has no NOSPACE
// alarm and the node is not draining; otherwise an error that says why.
func (n *Node) Ready() error {
	n.mu.Lock()
	draining, s := n.draining, n.session
	n.mu.Unlock()
	if draining {
		return ErrDraining
	}
	if err := n.health.err(); err != nil {
		return err
	}
	if s == nil || s.Err() != nil {
		return ErrNoSession
	}
	return nil
}

// SessionLease returns the lease of the node's live etcd session and a
// context that ends with that session, for keys that must end with the
// node (a claim); ErrNoSession without one, ErrDraining once it drains.
func (n *Node) SessionLease() (clientv3.LeaseID, context.Context, error) {
	n.mu.Lock()
	draining, s := n.draining, n.session
	n.mu.Unlock()
	if draining {
		return 0, nil, ErrDraining
	}
	if s == nil || s.Err() != nil {
		return 0, nil, ErrNoSession
	}
	return s.LeaseID(), s.Context(), nil
}

// ObserveStoreError tells the node of an etcd error met outside its own
// work (the HTTP API's writes): a write refused with NOSPACE makes the node
// unready at once and has it ask etcd for its alarms now, rather than at
// its next poll. Other errors are ignored.
func (n *Node) ObserveStoreError(err error) { n.health.observe(err) }

// Held returns the IDs of the instances this node runs now, sorted.
func (n *Node) Held() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]string, 0, len(n.runs))
	for id := range n.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Start opens the node's etcd session, registers its node key and starts
// watching and campaigning in the background. It returns once the first
// session is up, or with the error that prevented it (bound ctx to give
// up).
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		return errors.New("scheduler: node already started")
	}
	n.started = true
	n.mu.Unlock()
	s, err := n.openSessionWaiting(ctx)
	if err != nil {
		return err
	}
	n.setSession(s)
	n.wg.Add(2)
	go n.sessionLoop(s)
	go n.alarmLoop()
	if n.cfg.Role.Runs() {
		n.wg.Add(2)
		go n.mirror()
		go n.campaignLoop()
		if len(n.scheds) > 0 {
			n.wg.Add(1)
			go n.scheduleLoop()
		}
		if n.cfg.Retention > 0 {
			n.wg.Add(1)
			go n.retentionLoop()
		}
		if n.cfg.ParkAfter > unloadAfter {
			n.wg.Add(1)
			go n.unloadLoop()
		}
	}
	n.log.Info("node started", "role", string(n.cfg.Role), "lease_id", leaseHex(s.LeaseID()), "lease_ttl", n.cfg.LeaseTTL.String(),
		"functions", n.cfg.Registry.Names(), "max_concurrent", n.cfg.MaxConcurrent, "schedules", len(n.scheds),
		"retention", n.cfg.Retention.String())
	return nil
}

// leaseHex is a lease ID as etcdctl prints it: 16 hex digits.
func leaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%016x", int64(id)) }

// openSessionWaiting is openSession for Start: while etcd refuses it for
// want of space (its NOSPACE alarm, which only an operator clears), it
// says so and tries again until ctx ends, so that a node started during an
// alarm comes up once the alarm is cleared instead of exiting at once.
func (n *Node) openSessionWaiting(ctx context.Context) (*lease.Session, error) {
	b := newBackoff(500*time.Millisecond, 5*time.Second)
	for {
		s, err := n.openSession(ctx)
		if err == nil || !errors.Is(orchestrator.ClassifyError(err), orchestrator.ErrNoSpace) {
			return s, err
		}
		n.health.observe(err)
		wait := b.NextBackOff()
		n.log.Error("etcd is out of space (NOSPACE alarm) and refuses the node's session; waiting for an operator to free space",
			"error", err, "retry_in", wait.Round(time.Millisecond), "help", orchestrator.NoSpaceHelp)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		case <-time.After(wait):
		}
	}
}

// openSession grants a session and registers the node key on it.
func (n *Node) openSession(ctx context.Context) (*lease.Session, error) {
	s, err := lease.NewSession(ctx, n.cfg.Etcd, lease.Config{
		Prefix: n.keys.Owners(), TTL: n.cfg.LeaseTTL, Logger: n.log,
		// The mirror's watch holds the owners keys: it feeds the session
		// (apply, reset), one etcd watcher less per node. A node that runs
		// nothing (RoleAPI) has no mirror and holds nothing: it watches
		// nothing at all.
		Fed:            true,
		OnRenewFailure: func(error) { n.m.renewFailures.Inc() },
		OnOrphan:       func(string) { n.m.orphans.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: open etcd session: %w", err)
	}
	if err := n.putNodeKey(ctx, s, false); err != nil {
		_ = s.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("scheduler: register node key: %w", err)
	}
	return s, nil
}

// putNodeKey writes the node key on the session's lease.
func (n *Node) putNodeKey(ctx context.Context, s *lease.Session, draining bool) error {
	n.nodeKeyMu.Lock() // RemoteChanged writes it too
	defer n.nodeKeyMu.Unlock()
	n.mu.Lock()
	draining = draining || n.draining
	n.mu.Unlock()
	info := orchestrator.NodeInfo{
		Node: n.cfg.NodeID, Address: n.cfg.Address, Version: n.cfg.Version, Role: string(n.cfg.Role),
		StartedTime: n.startedAt, LeaseID: leaseHex(s.LeaseID()), Draining: draining,
	}
	if n.cfg.Role.Runs() {
		info.Functions = n.functions()
		if n.remote != nil {
			info.Workers = n.remote.Workers()
		}
	}
	b, _ := json.Marshal(info)
	_, err := n.cfg.Etcd.Put(ctx, n.keys.Node(n.cfg.NodeID), string(b), clientv3.WithLease(s.LeaseID()))
	return err
}

func (n *Node) setSession(s *lease.Session) {
	n.mu.Lock()
	n.session = s
	n.mu.Unlock()
	if s != nil {
		n.m.sessionUp.Set(1)
	} else {
		n.m.sessionUp.Set(0)
	}
	n.requeueAll()
}

// sessionLoop replaces the session whenever it ends, until the node stops.
func (n *Node) sessionLoop(s *lease.Session) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-s.Done():
		}
		n.m.sessionUp.Set(0)
		// The session logged why it ended; the node opens the next one.
		n.log.Debug("opening a new etcd session", "error", s.Err())
		b := newBackoff(100*time.Millisecond, 2*time.Second)
		for {
			if n.isDraining() {
				return
			}
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
			next, err := n.openSession(ctx)
			cancel()
			if err == nil {
				s = next
				n.setSession(s)
				n.log.Info("etcd session renewed", "lease_id", leaseHex(s.LeaseID()))
				break
			}
			wait := b.NextBackOff()
			n.log.Warn("cannot open etcd session; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// newBackoff is the one exponential backoff with jitter every retry loop of
// the node uses.
func newBackoff(first, max time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: first, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: max}
	b.Reset()
	return b
}

// drainCheckpoint bounds how long a drain waits for its runs' batches to
// commit before it stops them.
const drainCheckpoint = 2 * time.Second

// checkpoint has every run commit what it applied and has not committed
// (a batch of local activities, orchestrator.RunOptions.BatchBudget; the
// activity results a worker-served run holds for its next step, which go
// to the inbox) before a drain stops it, so that the peers that take over
// repeat only the activities still running. It waits at most
// drainCheckpoint (and ctx); a run that cannot commit in time loses its
// batch to the peer, as after a crash.
func (n *Node) checkpoint(ctx context.Context, drivers []*orchestrator.Driver) {
	if len(drivers) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, drainCheckpoint)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range drivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Checkpoint(cctx); err != nil && !errors.Is(err, orchestrator.ErrRunEnded) {
				n.log.Debug("drain: a run's batch was not committed; its activities run again on the node that takes over", "error", err)
			}
		}()
	}
	wg.Wait()
}

func (n *Node) isDraining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}

// Drain shuts the node down gracefully: it stops taking starts and
// campaigning, stops its runs, releases every owners key at once after
// leaving its handoff marker, so peers take over at once, and revokes its
// session lease. It returns when done or when ctx ends (then the lease is
// revoked anyway, and peers see a failover). Drain is idempotent; later
// calls wait for the first.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	if n.draining {
		n.mu.Unlock()
		select {
		case <-n.drained:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n.draining = true
	if len(n.runs) == 0 {
		close(n.runsGone)
	}
	runs := make([]*run, 0, len(n.runs))
	var drivers []*orchestrator.Driver
	for _, r := range n.runs {
		runs = append(runs, r)
		if r.driver != nil {
			drivers = append(drivers, r.driver)
		}
	}
	s := n.session
	n.mu.Unlock()
	defer close(n.drained)
	began := time.Now()
	n.log.Info("draining", "held", len(runs))
	if s != nil && len(runs) > 0 {
		// Peers stop ranking this node first for the instances it hands
		// over, so that they take them at once.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		if err := n.putNodeKey(dctx, s, true); err != nil {
			n.log.Debug("cannot mark the node key draining", "error", err)
		}
		cancel()
	}
	n.checkpoint(ctx, drivers)
	for _, r := range runs {
		n.stop(r, errDrain)
	}
	// A draining node registers no new run (startRun hands the instance
	// off): n.runs only empties.
	var err error
	select {
	case <-n.runsGone:
	case <-ctx.Done():
		err = fmt.Errorf("scheduler: drain: %d runs did not stop in time: %w", len(runs), ctx.Err())
	}
	n.cancel(errStopped)
	n.wg.Wait()
	n.mu.Lock()
	handed := n.handedOff
	n.handedOff = nil
	n.mu.Unlock()
	if s != nil && len(handed) > 0 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		marker := &lease.Handoff{Node: n.cfg.NodeID, Reason: "drain", ReleasedTime: time.Now().UTC()}
		if rerr := s.ReleaseAll(rctx, handed, n.keys.Handoff(n.cfg.NodeID), marker, 30*time.Second); rerr != nil {
			n.log.Warn("releasing for handoff failed; those instances are taken over after the lease TTL", "error", rerr)
		}
		cancel()
		n.log.Info("released for handoff", "instances", len(handed), "took", time.Since(began).Round(time.Millisecond).String())
	}
	if err == nil {
		n.runsWG.Wait() // every run has stopped; ends the last goroutines
	}
	if s != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if cerr := s.Close(rctx); cerr != nil && err == nil {
			err = cerr
		}
		cancel()
	}
	n.setSession(nil)
	n.log.Info("drained")
	return err
}
