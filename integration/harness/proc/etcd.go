package proc

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// FreePort returns a loopback port nobody listens on, never the same
// twice in one test binary.
func FreePort() (int, error) {
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		portsMu.Lock()
		used := ports[port]
		ports[port] = true
		portsMu.Unlock()
		if !used {
			return port, nil
		}
	}
	return 0, fmt.Errorf("proc: no free port")
}

// Member is one etcd member: a real etcd process with fsync on.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	Proc      *Process
}

// Host is the member's client host:port.
func (m *Member) Host() string { return strings.TrimPrefix(m.ClientURL, "http://") }

// Cluster is an etcd cluster of real etcd processes on loopback ports.
type Cluster struct {
	Members []*Member
	clock   *Clock
	cli     *clientv3.Client
}

// StartCluster starts n members (data in dir) with the extra etcd flags
// args, and waits for a leader.
func StartCluster(dir, etcdBin string, clock *Clock, n int, args ...string) (*Cluster, error) {
	c := &Cluster{clock: clock}
	var initial []string
	for i := 1; i <= n; i++ {
		cp, err := FreePort()
		if err != nil {
			return nil, err
		}
		pp, err := FreePort()
		if err != nil {
			return nil, err
		}
		m := &Member{
			Name:      fmt.Sprintf("etcd%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", cp),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", pp),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.Proc = &Process{
			Name: m.Name,
			Bin:  etcdBin,
			Args: []string{
				"--name", m.Name,
				"--data-dir", filepath.Join(dir, m.Name),
				"--listen-client-urls", m.ClientURL,
				"--advertise-client-urls", m.ClientURL,
				"--listen-peer-urls", m.PeerURL,
				"--initial-advertise-peer-urls", m.PeerURL,
				"--initial-cluster", strings.Join(initial, ","),
				"--initial-cluster-state", "new",
				"--initial-cluster-token", "soloist-integration",
				"--logger", "zap", "--log-level", "warn",
			},
			Env:     CleanEnv(),
			LogPath: filepath.Join(dir, m.Name+".log"),
			Clock:   clock,
		}
		m.Proc.Args = append(m.Proc.Args, args...)
		if err := m.Proc.Start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.cli = cli
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Client is the test's own client, straight to every member (no proxy).
func (c *Cluster) Client() *clientv3.Client { return c.cli }

// Leader returns the current leader, asking the running members.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	var lastErr error
	for _, m := range c.Members {
		if !m.Proc.Running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.cli.Status(sctx, m.ClientURL)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		if st.Leader == 0 {
			lastErr = fmt.Errorf("%s knows no leader", m.Name)
			continue
		}
		if st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no member says it leads")
	}
	return nil, fmt.Errorf("proc: etcd leader: %w", lastErr)
}

// WaitHealthy waits until every running member answers, one of them
// leads, and a write commits.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = c.healthy(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("proc: etcd cluster not healthy after %s: %w", timeout, err)
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, m := range c.Members {
		if !m.Proc.Running() {
			continue
		}
		if _, err := c.cli.Status(ctx, m.ClientURL); err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	if _, err := c.Leader(ctx); err != nil {
		return err
	}
	_, err := c.cli.Put(ctx, "/harness/health", c.clock.Now().String())
	return err
}

// Kill kills a member with SIGKILL.
func (c *Cluster) Kill(m *Member) error { return m.Proc.Kill() }

// Restart starts a killed member again on its data.
func (c *Cluster) Restart(m *Member) error { return m.Proc.Start() }

// Term stops a member with SIGTERM (a clean shutdown) and waits for it.
func (c *Cluster) Term(m *Member, timeout time.Duration) error { return m.Proc.Term(timeout) }

// Defragment defragments every running member, as an operator frees the
// space a compaction left in each member's database file.
func (c *Cluster) Defragment(ctx context.Context) error {
	for _, m := range c.Members {
		if !m.Proc.Running() {
			continue
		}
		if _, err := c.cli.Defragment(ctx, m.ClientURL); err != nil {
			return fmt.Errorf("harness: defragment %s: %w", m.Name, err)
		}
	}
	return nil
}

// Alarms lists the cluster's raised alarms, as "NOSPACE@etcd1".
func (c *Cluster) Alarms(ctx context.Context) ([]string, error) {
	resp, err := c.cli.AlarmList(ctx)
	if err != nil {
		return nil, err
	}
	names := map[uint64]string{}
	if ml, err := c.cli.MemberList(ctx); err == nil {
		for _, m := range ml.Members {
			names[m.ID] = m.Name
		}
	}
	var out []string
	for _, a := range resp.Alarms {
		out = append(out, a.Alarm.String()+"@"+names[a.MemberID])
	}
	return out, nil
}

// DisarmAlarms clears every alarm, as `etcdctl alarm disarm` does.
func (c *Cluster) DisarmAlarms(ctx context.Context) error {
	_, err := c.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{})
	return err
}

// DBSizes is every running member's database file size in bytes.
func (c *Cluster) DBSizes(ctx context.Context) map[string]int64 {
	out := map[string]int64{}
	for _, m := range c.Members {
		if !m.Proc.Running() {
			continue
		}
		if st, err := c.cli.Status(ctx, m.ClientURL); err == nil {
			out[m.Name] = st.DbSize
		}
	}
	return out
}

// Close stops every member and the client.
func (c *Cluster) Close() {
	if c.cli != nil {
		_ = c.cli.Close()
	}
	var wg sync.WaitGroup
	for _, m := range c.Members {
		if m.Proc != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = m.Proc.Close()
			}()
		}
	}
	wg.Wait()
}
