package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// stack is deploy/docker-compose.yml run as a compose project of its own
// (its own networks and volumes), from the images built here, with the
// host ports picked by Docker.
type stack struct {
	t       *testing.T
	docker  string
	compose string
	project string
	file    string
	env     []string
	http    *http.Client
	etcd    *clientv3.Client
	ttl     time.Duration
	ports   map[string]string // "service/port" -> host address, until the container restarts
}

const stackTTL = 5 * time.Second

func startStack(t *testing.T) *stack {
	t.Helper()
	docker := needDocker(t)
	compose := os.Getenv("SOLOIST_DOCKER_COMPOSE")
	if compose == "" {
		var err error
		if compose, err = exec.LookPath("docker-compose"); err != nil {
			if os.Getenv(dockerEnv) == "1" {
				t.Fatalf("no docker-compose on PATH, and %s=1 says Docker tests must run", dockerEnv)
			}
			t.Skip("no docker-compose on PATH (apt-get install docker-compose), so this Docker test does not run")
		}
	}
	buildImages(t, docker)
	file, err := filepath.Abs(filepath.Join(root, "deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &stack{
		t: t, docker: docker, compose: compose, file: file, ttl: stackTTL,
		project: "soloisttest" + hex.EncodeToString(b[:]),
		env: append(os.Environ(),
			"SOLOIST_IMAGE="+soloistImage, "SOLOIST_ETCD_IMAGE="+etcdImage, "SOLOIST_PROMETHEUS_IMAGE="+prometheusImage,
			"SOLOIST_PORT_1=", "SOLOIST_PORT_2=", "SOLOIST_PORT_3=", "SOLOIST_PROMETHEUS_PORT=",
			"SOLOIST_ETCD_PORT_1=", "SOLOIST_ETCD_PORT_2=", "SOLOIST_ETCD_PORT_3=",
			"SOLOIST_LEASE_TTL="+stackTTL.String()),
		ports: map[string]string{},
		http:  &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.run(time.Minute, "logs", "--no-color", "--tail=60")
			t.Logf("docker-compose logs:\n%s", out)
		}
		if s.etcd != nil {
			_ = s.etcd.Close()
		}
		if out, err := s.run(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})
	started := time.Now()
	if out, err := s.run(4*time.Minute, "up", "-d"); err != nil {
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}
	for _, n := range nodes {
		s.waitReady(n, time.Minute)
	}
	// Only etcd-1 and etcd-2: the etcd test stops etcd-3, whose host port
	// may change when it starts again.
	s.etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + s.port("etcd-1", 2379), "http://" + s.port("etcd-2", 2379)},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compose stack up and every node ready in %s", time.Since(started).Round(100*time.Millisecond))
	return s
}

var nodes = []string{"soloist-1", "soloist-2", "soloist-3"}

// run runs docker-compose on the stack's project.
func (s *stack) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.compose, append([]string{"-p", s.project, "-f", s.file}, args...)...)
	cmd.Env = s.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (s *stack) must(timeout time.Duration, args ...string) string {
	s.t.Helper()
	out, err := s.run(timeout, args...)
	if err != nil {
		s.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func (s *stack) dockerCmd(args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.docker, args...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// port is the host address a service's port is published on (it changes
// when the container starts again).
func (s *stack) port(service string, p int) string {
	s.t.Helper()
	key := service + "/" + strconv.Itoa(p)
	if addr, ok := s.ports[key]; ok {
		return addr
	}
	out := s.must(time.Minute, "port", service, strconv.Itoa(p))
	if out == "" || strings.HasSuffix(out, ":0") {
		s.t.Fatalf("docker-compose port %s %d: %q", service, p, out)
	}
	s.ports[key] = out
	return out
}

// restarted forgets the host ports of a service whose container stopped.
func (s *stack) restarted(service string) {
	for key := range s.ports {
		if strings.HasPrefix(key, service+"/") {
			delete(s.ports, key)
		}
	}
}

func (s *stack) container(service string) string {
	s.t.Helper()
	return s.must(time.Minute, "ps", "-q", service)
}

func (s *stack) url(node, path string) string {
	s.t.Helper()
	addr, err := s.nodeAddr(node)
	if err != nil {
		s.t.Fatal(err)
	}
	return "http://" + addr + path
}

// nodeAddr is a Soloist node's API address on the "front" network, which
// the host reaches on Linux: it stays reachable while the node is cut off
// the "etcd" network (a published port may go through either network).
func (s *stack) nodeAddr(node string) (string, error) {
	if addr, ok := s.ports[node+"/8080"]; ok {
		return addr, nil
	}
	id, err := s.run(time.Minute, "ps", "-q", node)
	if err != nil || strings.TrimSpace(id) == "" {
		return "", fmt.Errorf("docker-compose ps -q %s: %v %s", node, err, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.docker, "inspect", "-f",
		`{{(index .NetworkSettings.Networks "`+s.project+`_front").IPAddress}}`, strings.TrimSpace(id)).CombinedOutput()
	ip := strings.TrimSpace(string(out))
	if err != nil || ip == "" || strings.Contains(ip, "no value") {
		return "", fmt.Errorf("the front network address of %s: %v %s", node, err, out)
	}
	addr := ip + ":8080"
	s.ports[node+"/8080"] = addr
	return addr, nil
}

// waitReady waits until the node's /readyz answers 200.
func (s *stack) waitReady(node string, within time.Duration) {
	s.t.Helper()
	s.restarted(node)
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		addr, err := s.nodeAddr(node)
		if err != nil {
			last = err.Error()
			s.restarted(node)
		} else {
			resp, err := s.http.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
				last = resp.Status
			} else {
				last = err.Error()
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	s.t.Fatalf("%s not ready within %s: %s", node, within, last)
}

// metric sums the samples of a metric on a node whose labels contain
// every one of want (`name="value"`).
func (s *stack) metric(node, name string, want ...string) (float64, error) {
	resp, err := s.http.Get(s.url(node, "/metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s /metrics: %s", node, resp.Status)
	}
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(rest, w)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", node, line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

func (s *stack) mustMetric(node, name string, want ...string) float64 {
	s.t.Helper()
	v, err := s.metric(node, name, want...)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

// waitMetric polls a node's metric until ok accepts it or within has
// passed, and returns the last value read.
func (s *stack) waitMetric(node, name string, within time.Duration, ok func(float64) bool, want ...string) float64 {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		v := s.mustMetric(node, name, want...)
		if ok(v) || time.Now().After(deadline) {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const base = "/runtime/webhooks/durabletask"

// start starts a function under an ID through a node; 202 or the test fails.
func (s *stack) start(node, function, id string, input any) {
	s.t.Helper()
	b, _ := json.Marshal(input)
	resp, err := s.http.Post(s.url(node, base+"/orchestrators/"+function+"/"+id), "application/json", bytes.NewReader(b))
	if err != nil {
		s.t.Fatalf("start %s %s on %s: %v", function, id, node, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		s.t.Fatalf("start %s %s on %s: %s %s", function, id, node, resp.Status, body)
	}
}

// raise raises an event on an instance through node's API.
func (s *stack) raise(node, id, event string, data any) {
	s.t.Helper()
	b, _ := json.Marshal(data)
	resp, err := s.http.Post(s.url(node, base+"/instances/"+id+"/raiseEvent/"+event), "application/json", bytes.NewReader(b))
	if err != nil {
		s.t.Fatalf("raise %s on %s: %v", event, id, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		s.t.Fatalf("raise %s on %s: %s %s", event, id, resp.Status, body)
	}
}

type status struct {
	RuntimeStatus string          `json:"runtimeStatus"`
	Output        json.RawMessage `json:"output"`
}

func (s *stack) status(node, id string) (status, error) {
	var st status
	resp, err := s.http.Get(s.url(node, base+"/instances/"+id))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		return st, fmt.Errorf("status of %s: %s %s", id, resp.Status, b)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitCompleted waits for an instance to complete and returns its output.
func (s *stack) waitCompleted(id string, within time.Duration) json.RawMessage {
	s.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		st, err := s.status(nodes[0], id)
		switch {
		case err != nil:
			last = err.Error()
		case st.RuntimeStatus == "Completed":
			return st.Output
		case st.RuntimeStatus == "Failed" || st.RuntimeStatus == "Terminated":
			s.t.Fatalf("%s: %s, output %s", id, st.RuntimeStatus, st.Output)
		default:
			last = st.RuntimeStatus
		}
		time.Sleep(500 * time.Millisecond)
	}
	s.t.Fatalf("%s did not complete within %s: %s", id, within, last)
	return nil
}

// owner is the holding of an instance: the node and the fencing token
// (the owners key's CreateRevision, docs/contract.md section 5).
type owner struct {
	Node  string
	Token int64
}

// owners reads the owners keys of ids at once: exactly one key each while
// an instance is held.
func (s *stack) owners(ids ...string) (map[string]owner, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := s.etcd.Get(ctx, "/soloist/v1/owners/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string]owner{}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), "/soloist/v1/owners/")
		if !want[id] {
			continue
		}
		var v struct {
			Node string `json:"node"`
		}
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("owners key %s: %v", kv.Key, err)
		}
		out[id] = owner{Node: v.Node, Token: kv.CreateRevision}
	}
	return out, nil
}

// waitSettled waits until the cluster has been settled for two lease
// TTLs in a row: every node's etcd session up, and every owners key on
// the lease of a live node key (none left on the lease of a session that
// ended, which would expire later and count as a failover). A node that
// rejoins after a cut can lose its new session once more while its etcd
// connections recover.
func (s *stack) waitSettled(nodes []string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	var since time.Time
	last := ""
	for time.Now().Before(deadline) {
		why := s.unsettled(nodes)
		switch {
		case why != "":
			since, last = time.Time{}, why
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= 2*s.ttl:
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("the cluster did not settle within %s: %s", within, last)
}

// unsettled says why the cluster is not settled, or "".
func (s *stack) unsettled(nodes []string) string {
	for _, n := range nodes {
		if up, err := s.metric(n, "soloist_etcd_session_up"); err != nil || up != 1 {
			return fmt.Sprintf("%s: session up %v (%v)", n, up, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	nk, err := s.etcd.Get(ctx, "/soloist/v1/nodes/", clientv3.WithPrefix())
	if err != nil {
		return err.Error()
	}
	live := map[int64]bool{}
	for _, kv := range nk.Kvs {
		live[kv.Lease] = true
	}
	ok, err := s.etcd.Get(ctx, "/soloist/v1/owners/", clientv3.WithPrefix())
	if err != nil {
		return err.Error()
	}
	for _, kv := range ok.Kvs {
		if !live[kv.Lease] {
			return fmt.Sprintf("%s is on lease %x, no live node's", kv.Key, kv.Lease)
		}
	}
	return ""
}

// waitOwner polls until cond holds for the owner of id, every 50ms.
func (s *stack) waitOwner(id string, within time.Duration, cond func(owner) bool) (owner, time.Duration) {
	s.t.Helper()
	started := time.Now()
	for time.Since(started) < within {
		o, err := s.owners(id)
		if err == nil {
			if own, ok := o[id]; ok && cond(own) {
				return own, time.Since(started)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	o, err := s.owners(id)
	s.t.Fatalf("owner of %s: no wanted holder within %s (now %v, %v)", id, within, o, err)
	return owner{}, 0
}

// checkTicks checks a Countdown's output: exactly n ticks, each by a node
// of the stack (a tick lost or written twice changes the count).
func checkTicks(t *testing.T, id string, out json.RawMessage, n int) map[string]int {
	t.Helper()
	var ticks []string
	if err := json.Unmarshal(out, &ticks); err != nil {
		t.Fatalf("%s: output %s: %v", id, out, err)
	}
	if len(ticks) != n {
		t.Errorf("%s: %d ticks, want %d: %v", id, len(ticks), n, ticks)
	}
	by := map[string]int{}
	for _, tk := range ticks {
		by[tk]++
		known := false
		for _, n := range nodes {
			known = known || tk == n
		}
		if !known {
			t.Errorf("%s: a tick by %q, no node of the stack", id, tk)
		}
	}
	return by
}
