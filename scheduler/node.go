package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Config configures a Node.
type Config struct {
	// Etcd is the connection the node uses; the caller closes it after Stop.
	Etcd *clientv3.Client
	// Prefix is the root of every key. Defaults to "/soloist/".
	Prefix string
	// NodeID names the node in owners and node keys. Required.
	NodeID string
	// Address is the node's advertised HTTP address, stored in its node key.
	Address string
	// Version is stored in the node key.
	Version string
	// LeaseTTL is the session lease TTL: whole seconds, at least 2s.
	// Defaults to 10s.
	LeaseTTL time.Duration
	// MaxConcurrent caps the instances this node holds at once; 0 means no limit.
	MaxConcurrent int
	// Registry holds the orchestrations this node can run. Required.
	Registry *orchestrator.Registry
	// Client is the orchestrator client. Defaults to one on Etcd with Prefix.
	Client *orchestrator.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the node's metrics. Defaults to a fresh registry.
	Registerer prometheus.Registerer
	// PreferenceDelay is how long a node waits per rank below the preferred
	// node of an instance before it campaigns. Defaults to 200ms.
	PreferenceDelay time.Duration
}

// ErrDraining means the node is shutting down and takes no new work.
var ErrDraining = errors.New("scheduler: node is draining")

// ErrNoSession means the node has no live etcd session.
var ErrNoSession = errors.New("scheduler: no live etcd session")

var _ = context.Background

// Node is one Soloist replica. (Stub signatures; implementation in progress.)
type Node struct{ cfg Config }

// New validates cfg and returns a Node that is not started.
func New(cfg Config) (*Node, error) { return &Node{cfg: cfg}, nil }

// Start opens the node's etcd session, registers its node key and starts
// watching and campaigning in the background. It returns once the first
// session is up, or with ctx's error.
func (n *Node) Start(ctx context.Context) error { return nil }

// Drain shuts the node down gracefully: it stops taking starts and
// campaigning, stops its runs at a safe point, releases every owners key
// with a handoff marker so peers take over at once, and closes its session.
// It returns when done or when ctx ends. Idempotent.
func (n *Node) Drain(ctx context.Context) error { return nil }

// Ready returns nil while the node's session is alive and it is not
// draining; ErrNoSession or ErrDraining otherwise.
func (n *Node) Ready() error { return nil }

// Client returns the orchestrator client the node uses.
func (n *Node) Client() *orchestrator.Client { return n.cfg.Client }

// Registry returns the node's orchestration registry.
func (n *Node) Registry() *orchestrator.Registry { return n.cfg.Registry }
