package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// Options shape a scenario's deployment.
type Options struct {
	// Nodes is the number of Soloist nodes. Defaults to 3.
	Nodes int
	// Members is the number of etcd members. Defaults to 3.
	Members int
	// TTL is every node's --lease-ttl. Defaults to 2s.
	TTL time.Duration
	// ShutdownTimeout is every node's --shutdown-timeout. Defaults to 10s.
	ShutdownTimeout time.Duration
	// EtcdArgs are extra flags of every etcd member (e.g.
	// --quota-backend-bytes).
	EtcdArgs []string
	// Demo registers the demo orchestrations (soloist serve --demo) on
	// every node.
	Demo bool
	// NodeArgs are extra flags of every node's soloist serve.
	NodeArgs []string
	// NodeFunctions are extra exec functions, running soloist-effect like
	// "effect", registered only on the node of that number (from 1): an
	// instance of one can run only there.
	NodeFunctions map[int][]string
}

// Fault is one thing the harness did to the deployment.
type Fault struct {
	At     time.Duration
	Kind   string // kill, sigstop, sigcont, sigterm, exited, restart, cut, heal, etcd-kill, etcd-restart
	Target string
	Detail string
}

// Env is one scenario's deployment: an etcd cluster, Soloist nodes behind
// proxies, the effect sink and the etcd history recorder, all on one clock.
// Everything it starts is stopped by t.Cleanup.
type Env struct {
	T     testing.TB
	Opts  Options
	Clock *Clock
	Dir   string
	Bin   *Binaries
	Etcd  *Cluster
	Nodes []*Node
	Sink  *Sink
	Rec   *Recorder
	Keys  orchestrator.Keys

	race bool

	mu      sync.Mutex
	faults  []Fault
	events  []NodeEvent
	watches []Watch
}

// New starts a deployment for t. race says the soloist binary was built
// with the race detector.
func New(t testing.TB, bin *Binaries, race bool, opts Options) *Env {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Members == 0 {
		opts.Members = 3
	}
	if opts.TTL == 0 {
		opts.TTL = 2 * time.Second
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	e := &Env{T: t, Opts: opts, Clock: NewClock(), Dir: t.TempDir(), Bin: bin, race: race, Keys: orchestrator.NewKeys("/soloist/")}
	sink, err := NewSink(e.Clock)
	if err != nil {
		t.Fatalf("harness: sink: %v", err)
	}
	e.Sink = sink
	t.Cleanup(e.close)
	cluster, err := StartCluster(e.Dir, bin.Etcd, e.Clock, opts.Members, opts.EtcdArgs...)
	if err != nil {
		t.Fatalf("harness: etcd: %v", err)
	}
	e.Etcd = cluster
	e.Rec = NewRecorder(cluster.Client(), e.Keys.Prefix(), e.Clock)
	proxies := make([][]*leasetest.Proxy, opts.Nodes)
	for i := range proxies {
		if proxies[i], err = startProxies(e); err != nil {
			t.Fatalf("harness: proxies of node %d: %v", i+1, err)
		}
	}
	for i := 1; i <= opts.Nodes; i++ {
		n, err := newNode(e, i, proxies[i-1])
		if err != nil {
			t.Fatalf("harness: node %d: %v", i, err)
		}
		e.Nodes = append(e.Nodes, n)
		if err := n.Proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range e.Nodes {
		if err := n.WaitReady(20 * time.Second); err != nil {
			t.Fatalf("%v\n%s", err, n.Proc.Tail(40))
		}
	}
	e.logf("deployment up: %d etcd members, %d nodes, lease TTL %s", opts.Members, opts.Nodes, opts.TTL)
	return e
}

func (e *Env) close() {
	if e.T.Failed() {
		e.DumpLogs(60)
	}
	defer e.keepArtifacts()
	var wg sync.WaitGroup
	for _, n := range e.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range n.Proxies {
				p.Heal()
			}
			n.Proc.Close()
		}()
	}
	wg.Wait()
	if e.Sink != nil {
		e.Sink.Close()
	}
	if e.Rec != nil {
		e.Rec.Close()
	}
	if e.Etcd != nil {
		e.Etcd.Close()
	}
	for _, n := range e.Nodes {
		for _, p := range n.Proxies {
			p.Close()
		}
	}
}

// DumpLogs logs the last lines of every process and the fault timeline.
func (e *Env) DumpLogs(lines int) {
	for _, n := range e.Nodes {
		e.T.Logf("--- last %d lines of %s (%s):\n%s", lines, n.ID, n.Proc.LogPath, n.Proc.Tail(lines))
	}
	if e.Etcd != nil {
		for _, m := range e.Etcd.Members {
			e.T.Logf("--- last %d lines of %s:\n%s", lines/3, m.Name, m.Proc.Tail(lines/3))
		}
	}
	var b strings.Builder
	for _, f := range e.Faults() {
		fmt.Fprintf(&b, "%s %s %s %s\n", Stamp(f.At), f.Kind, f.Target, f.Detail)
	}
	e.T.Logf("--- faults:\n%s", b.String())
}

func (e *Env) logf(format string, args ...any) {
	e.T.Logf("%s "+format, append([]any{Stamp(e.Clock.Now())}, args...)...)
}

// Logf logs with the scenario clock's stamp.
func (e *Env) Logf(format string, args ...any) { e.logf(format, args...) }

// Fault records a fault at the current clock reading and returns it.
func (e *Env) Fault(kind, target, detail string) time.Duration {
	at := e.Clock.Now()
	e.mu.Lock()
	e.faults = append(e.faults, Fault{At: at, Kind: kind, Target: target, Detail: detail})
	e.mu.Unlock()
	return at
}

// Faults returns the fault timeline.
func (e *Env) Faults() []Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Fault(nil), e.faults...)
}

func (e *Env) addEvent(ev NodeEvent) {
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.mu.Unlock()
}

// Events returns every parsed node log line so far.
func (e *Env) Events() []NodeEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]NodeEvent(nil), e.events...)
}

// Node returns the node named id.
func (e *Env) Node(id string) *Node {
	for _, n := range e.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// writeConfig writes node i's config file: the exec function "effect" and
// the node's own extra functions, all running soloist-effect.
func (e *Env) writeConfig(i int) (string, error) {
	path := filepath.Join(e.Dir, fmt.Sprintf("soloist-n%d.yaml", i))
	var b strings.Builder
	b.WriteString("functions:\n")
	for _, name := range append([]string{"effect"}, e.Opts.NodeFunctions[i]...) {
		fmt.Fprintf(&b, "  - name: %s\n    exec: [%q, \"--sink\", %q]\n", name, e.Bin.Effect, e.Sink.URL())
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// Holding is one owners key: who holds which execution with which token.
type Holding struct {
	InstanceID  string
	Node        string
	ExecutionID string
	Token       int64
}

// Holdings reads every owners key.
func (e *Env) Holdings(ctx context.Context) ([]Holding, error) {
	resp, err := e.Etcd.Client().Get(ctx, e.Keys.Owners(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []Holding
	for _, kv := range resp.Kvs {
		id, _ := orchestrator.IDFrom(e.Keys.Owners(), string(kv.Key))
		var o orchestrator.Owner
		_ = json.Unmarshal(kv.Value, &o)
		out = append(out, Holding{InstanceID: id, Node: o.Node, ExecutionID: o.ExecutionID, Token: kv.CreateRevision})
	}
	return out, nil
}

// HeldBy returns the holdings of node.
func (e *Env) HeldBy(node string) []Holding {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hs, err := e.Holdings(ctx)
	if err != nil {
		e.logf("read holdings: %v", err)
		return nil
	}
	var out []Holding
	for _, h := range hs {
		if h.Node == node {
			out = append(out, h)
		}
	}
	return out
}

// WaitHolder waits until instance id is held and returns the holding.
func (e *Env) WaitHolder(id string, timeout time.Duration) (Holding, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs, err := e.Holdings(ctx)
		cancel()
		if err == nil {
			for _, h := range hs {
				if h.InstanceID == id {
					return h, true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return Holding{}, false
}

// Records reads every instance record.
func (e *Env) Records(ctx context.Context) (map[string]*orchestrator.Status, error) {
	resp, err := e.Etcd.Client().Get(ctx, e.Keys.Instances(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]*orchestrator.Status{}
	for _, kv := range resp.Kvs {
		var st orchestrator.Status
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, err
		}
		out[st.InstanceID] = &st
	}
	return out, nil
}

// Restore brings everything back: etcd members started, nodes resumed,
// healed and restarted. It waits until the cluster and every node are
// ready.
func (e *Env) Restore() {
	for _, m := range e.Etcd.Members {
		if !m.Proc.Running() {
			e.Fault("etcd-restart", m.Name, "")
			if err := e.Etcd.Restart(m); err != nil {
				e.T.Fatalf("restart %s: %v", m.Name, err)
			}
		}
	}
	if err := e.Etcd.WaitHealthy(30 * time.Second); err != nil {
		e.T.Fatal(err)
	}
	for _, n := range e.Nodes {
		if n.Proc.Paused() {
			_, _ = n.Resume()
		}
		if n.IsCut() {
			n.Heal()
		}
	}
	for _, n := range e.Nodes {
		if !n.Proc.Running() {
			if err := n.Restart(20 * time.Second); err != nil {
				e.T.Fatalf("%v\n%s", err, n.Proc.Tail(40))
			}
		} else if err := n.WaitReady(20 * time.Second); err != nil {
			e.T.Fatalf("%v\n%s", err, n.Proc.Tail(40))
		}
	}
}

// Settle waits until every instance is terminal, or timeout. It returns
// the IDs still active at the end.
func (e *Env) Settle(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	var active []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		recs, err := e.Records(ctx)
		cancel()
		if err == nil {
			active = active[:0]
			for id, st := range recs {
				if st.RuntimeStatus.Active() {
					active = append(active, id+" ("+string(st.RuntimeStatus)+")")
				}
			}
			if len(active) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			sort.Strings(active)
			return active
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Metrics sums every node's counters over all incarnations.
func (e *Env) Metrics() map[string]float64 {
	out := map[string]float64{}
	for _, n := range e.Nodes {
		for k, v := range n.Metrics() {
			out[k] += v
		}
	}
	return out
}

// Races counts data-race reports in the nodes' output (race builds).
func (e *Env) Races() int {
	total := 0
	for _, n := range e.Nodes {
		total += n.Proc.Races()
	}
	return total
}

// keepArtifacts copies the scenario's logs and recorded histories to
// $SOLOIST_INTEGRATION_ARTIFACTS/<test name>/, if that is set.
func (e *Env) keepArtifacts() {
	if os.Getenv("SOLOIST_INTEGRATION_ARTIFACTS") == "" {
		return
	}
	dir := artifactDir(e)
	logs, _ := filepath.Glob(filepath.Join(e.Dir, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o644)
		}
	}
	write := func(name string, v any) {
		if b, err := json.MarshalIndent(v, "", "  "); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	write("faults.json", e.Faults())
	write("effects.json", e.Sink.Effects())
	if e.Rec != nil {
		write("etcd-history.json", e.Rec.KVs())
	}
	e.T.Logf("artifacts kept in %s", dir)
}

// TokenNodes maps every fencing token of etcd's recorded history to the
// node whose owners key had it.
func (e *Env) TokenNodes() map[int64]string {
	out := map[int64]string{}
	for _, kv := range e.Rec.KVs() {
		if kv.Rev == kv.CreateRev && !kv.Delete && strings.HasPrefix(kv.Key, e.Keys.Owners()) {
			var o orchestrator.Owner
			if json.Unmarshal(kv.Value, &o) == nil {
				out[kv.Rev] = o.Node
			}
		}
	}
	return out
}

// Compact compacts etcd to its current revision, as an operator does: the
// recorder first catches up with that revision and the history so far is
// verified (it cannot be read again after), then the compaction runs
// (physically, so the space can be defragmented) and the recorder resumes
// after it if its watch breaks. It returns the revision.
func (e *Env) Compact(ctx context.Context) (int64, error) {
	resp, err := e.Etcd.Client().Get(ctx, e.Keys.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if err := e.Rec.catchUpTo(ctx, rev); err != nil {
		return 0, err
	}
	if err := e.Rec.Verify(30 * time.Second); err != nil {
		e.T.Errorf("durability before the compaction: %v", err)
	}
	e.Rec.compact(rev)
	e.Fault("etcd-compact", "", fmt.Sprintf("revision %d", rev))
	if _, err := e.Etcd.Client().Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, err
	}
	return rev, nil
}
