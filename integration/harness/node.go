package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/soloist-dev/soloist/lease/leasetest"
)

// Node is one `soloist serve` process. It reaches etcd only through its own
// proxies, one per member, which the test can blackhole.
type Node struct {
	ID      string
	Addr    string // host:port of its HTTP API
	Proc    *Process
	Proxies []*leasetest.Proxy
	env     *Env

	mu      sync.Mutex
	retired map[string]float64 // metrics of incarnations that ended
	down    bool               // killed or terminated, not restarted yet
}

// URL is the base URL of the node's HTTP API.
func (n *Node) URL() string { return "http://" + n.Addr }

// Down reports whether the node is known to be stopped (killed or
// terminated and not restarted). A paused or cut node is not down.
func (n *Node) Down() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.down
}

// Cut blackholes every proxy of the node: it cannot reach any etcd member.
// It returns the clock reading of the fault.
func (n *Node) Cut() time.Duration {
	at := n.env.Fault("cut", n.ID, "")
	for _, p := range n.Proxies {
		p.Blackhole(true, true)
	}
	return at
}

// Heal reconnects the node to etcd.
func (n *Node) Heal() {
	n.env.Fault("heal", n.ID, "")
	for _, p := range n.Proxies {
		p.Heal()
	}
}

// Cut reports whether the node is cut from etcd.
func (n *Node) IsCut() bool {
	for _, p := range n.Proxies {
		if p.Blackholed() {
			return true
		}
	}
	return false
}

// Kill kills the node with SIGKILL, after keeping its metrics. It returns
// the clock reading of the fault.
func (n *Node) Kill() time.Duration {
	n.retire()
	at := n.env.Fault("kill", n.ID, fmt.Sprintf("pid %d", n.Proc.Pid()))
	n.mu.Lock()
	n.down = true
	n.mu.Unlock()
	if err := n.Proc.Kill(); err != nil {
		n.env.T.Error(err)
	}
	return at
}

// Pause stops the node with SIGSTOP (its exec children keep running).
func (n *Node) Pause() (time.Duration, error) {
	at := n.env.Fault("sigstop", n.ID, fmt.Sprintf("pid %d", n.Proc.Pid()))
	return at, n.Proc.Signal(syscall.SIGSTOP)
}

// Resume continues a paused node with SIGCONT.
func (n *Node) Resume() (time.Duration, error) {
	at := n.env.Fault("sigcont", n.ID, "")
	return at, n.Proc.Signal(syscall.SIGCONT)
}

// Term stops the node gracefully with SIGTERM (it drains and hands its
// instances off) and waits for it to exit.
// It returns the clock reading of the SIGTERM.
func (n *Node) Term(timeout time.Duration) (time.Duration, error) {
	n.retire()
	at := n.env.Fault("sigterm", n.ID, fmt.Sprintf("pid %d", n.Proc.Pid()))
	n.mu.Lock()
	n.down = true
	n.mu.Unlock()
	err := n.Proc.Term(timeout)
	n.env.Fault("exited", n.ID, exitDesc(err))
	return at, err
}

// Restart starts a new incarnation on the same port and waits until it is
// ready.
func (n *Node) Restart(timeout time.Duration) error {
	n.env.Fault("restart", n.ID, "")
	if err := n.Proc.Start(); err != nil {
		return err
	}
	n.mu.Lock()
	n.down = false
	n.mu.Unlock()
	return n.WaitReady(timeout)
}

// WaitReady polls /readyz until it answers 200.
func (n *Node) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	var last string
	for time.Now().Before(deadline) {
		if !n.Proc.Running() {
			return fmt.Errorf("harness: %s exited while starting: %v", n.ID, n.Proc.ExitErr())
		}
		resp, err := client.Get(n.URL() + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("harness: %s not ready after %s: %s", n.ID, timeout, last)
}

// retire adds the live incarnation's metrics to the retired ones, before
// it is killed or stopped.
func (n *Node) retire() {
	if !n.Proc.Running() || n.Proc.Paused() {
		return
	}
	m, err := n.Scrape(time.Second)
	if err != nil {
		n.env.logf("metrics of %s before it stops: %v (its counters since the last scrape are lost)", n.ID, err)
		return
	}
	n.mu.Lock()
	for k, v := range m {
		n.retired[k] += v
	}
	n.mu.Unlock()
}

// Metrics is the sum of the node's counters over all its incarnations:
// the retired ones plus a scrape of the live one.
func (n *Node) Metrics() map[string]float64 {
	out := map[string]float64{}
	n.mu.Lock()
	for k, v := range n.retired {
		out[k] += v
	}
	n.mu.Unlock()
	if n.Proc.Running() && !n.Proc.Paused() {
		if m, err := n.Scrape(2 * time.Second); err == nil {
			for k, v := range m {
				out[k] += v
			}
		} else {
			n.env.logf("metrics of %s: %v", n.ID, err)
		}
	}
	return out
}

// labelled are the counters whose samples are also kept by their labels
// (as "name{label=\"value\"}"), beside the sum by name.
var labelled = []string{"soloist_leases_lost_total", "soloist_campaigns_total", "soloist_etcd_alarm"}

// Scrape reads /metrics and sums every sample by metric name (labels
// dropped, but kept as well for the series of labelled; histogram _sum and
// _count kept under their own names).
func (n *Node) Scrape(timeout time.Duration) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			if !strings.HasSuffix(name[:j], "_bucket") {
				// keep the labels of the counters the scenarios split
				for _, l := range labelled {
					if name[:j] == l {
						out[name] += v
					}
				}
			}
			name = name[:j]
		}
		if strings.HasSuffix(name, "_bucket") {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// NodeEvent is one log line of a node, stamped on arrival.
type NodeEvent struct {
	At          time.Duration
	Node        string
	Incarnation int
	Level       string
	Msg         string
	InstanceID  string
	ExecutionID string
	Token       int64
	How         string
	Err         string
	TaskID      int       // task_id, of an activity's line
	Time        time.Time // the line's own time (the node's clock)
}

// nodeLine parses a JSON log line of a node into an event.
func (n *Node) nodeLine(at time.Duration, inc int, line []byte) {
	if len(line) == 0 || line[0] != '{' {
		return
	}
	var l struct {
		Time        json.RawMessage `json:"time"`
		Level       string          `json:"level"`
		Msg         string          `json:"msg"`
		InstanceID  string          `json:"instance_id"`
		ExecutionID string          `json:"execution_id"`
		Token       json.Number     `json:"fencing_token"`
		How         string          `json:"how"`
		TaskID      int             `json:"task_id"`
		Error       json.RawMessage `json:"error"`
		Reason      json.RawMessage `json:"reason"`
	}
	if json.Unmarshal(line, &l) != nil {
		return
	}
	tok, _ := l.Token.Int64()
	var ts time.Time
	_ = json.Unmarshal(l.Time, &ts) // zero if absent or not a time
	errText := string(l.Error)
	if errText == "" {
		errText = string(l.Reason)
	}
	n.env.addEvent(NodeEvent{
		At: at, Node: n.ID, Incarnation: inc, Level: l.Level, Msg: l.Msg,
		InstanceID: l.InstanceID, ExecutionID: l.ExecutionID, Token: tok, How: l.How, Err: errText, TaskID: l.TaskID,
		Time: ts,
	})
}

// startProxies starts one proxy per etcd member for a node.
func startProxies(e *Env) ([]*leasetest.Proxy, error) {
	var ps []*leasetest.Proxy
	for _, m := range e.Etcd.Members {
		p, err := leasetest.StartProxy(m.Host())
		if err != nil {
			for _, p := range ps {
				p.Close()
			}
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// newNode is node i behind proxies. Every node's proxies listen before any
// node's port is picked: a proxy listens on a port the kernel chooses,
// which could otherwise be one FreePort handed to a node not started yet.
func newNode(e *Env, i int, proxies []*leasetest.Proxy) (*Node, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	n := &Node{ID: fmt.Sprintf("n%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", port), env: e, retired: map[string]float64{}, Proxies: proxies}
	var eps []string
	for _, p := range proxies {
		eps = append(eps, p.URL())
	}
	config, err := e.writeConfig(i)
	if err != nil {
		return nil, err
	}
	env := cleanEnv()
	if e.race {
		env = append(env, "GORACE=halt_on_error=0")
	}
	n.Proc = &Process{
		Name: n.ID,
		Bin:  e.Bin.Soloist,
		Args: []string{"serve",
			"--etcd-endpoints", strings.Join(eps, ","),
			"--listen", n.Addr,
			"--node-id", n.ID,
			"--lease-ttl", e.Opts.TTL.String(),
			"--config", config,
			"--log-format", "json",
			"--shutdown-timeout", e.Opts.ShutdownTimeout.String(),
		},
		Env:     env,
		LogPath: filepath.Join(e.Dir, n.ID+".log"),
		Clock:   e.Clock,
		OnLine:  n.nodeLine,
	}
	if e.Opts.Demo {
		n.Proc.Args = append(n.Proc.Args, "--demo")
	}
	n.Proc.Args = append(n.Proc.Args, e.Opts.NodeArgs...)
	return n, nil
}
