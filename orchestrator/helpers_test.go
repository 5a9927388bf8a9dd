package orchestrator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

var quiet = slog.New(slog.DiscardHandler)

// env is an orchestrator Client on its own key prefix of a real etcd, with
// a second, independent etcd client for the test's own reads and writes.
type env struct {
	e    *leasetest.Etcd
	cli  *clientv3.Client // the Client's connection
	raw  *clientv3.Client // the test's own connection
	c    *orchestrator.Client
	keys orchestrator.Keys
}

func testPrefix(t testing.TB) string {
	return "/orch-test/" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "/"
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := leasetest.Start(t)
	return envOn(t, e, e.Client(), e.Client())
}

func envOn(t testing.TB, e *leasetest.Etcd, cli, raw *clientv3.Client) *env {
	c := orchestrator.NewClient(cli, orchestrator.ClientConfig{Prefix: testPrefix(t), Logger: quiet})
	return &env{e: e, cli: cli, raw: raw, c: c, keys: c.Keys()}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type rawKV struct {
	Value                       string
	CreateRevision, ModRevision int64
}

func (v *rawKV) String() string {
	if v == nil {
		return "<absent>"
	}
	return fmt.Sprintf("{mod %d create %d %s}", v.ModRevision, v.CreateRevision, v.Value)
}

// get reads key with the test's own connection; nil if absent.
func (v *env) get(t testing.TB, key string) *rawKV {
	t.Helper()
	resp, err := v.raw.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	kv := resp.Kvs[0]
	return &rawKV{Value: string(kv.Value), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}
}

func (v *env) record(t testing.TB, id string) *rawKV { return v.get(t, v.keys.Instance(id)) }

// decode reads the instance id with its payloads (one transaction through
// the test's own connection), as stored, without its holder.
func (v *env) decode(t testing.TB, id string) *orchestrator.Status {
	t.Helper()
	c := orchestrator.NewClient(v.raw, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), Logger: quiet})
	st, err := c.Status(ctxT(t), id)
	if err != nil {
		t.Fatalf("status of %q: %v", id, err)
	}
	if kv := v.record(t, id); kv != nil {
		rec, err := orchestrator.ParseRecord([]byte(kv.Value))
		if err != nil {
			t.Fatalf("record of %q: %v", id, err)
		}
		st.FencingToken, st.Node = rec.FencingToken, "" // the record's own writer
	}
	return st
}

func (v *env) start(t testing.TB, id, input string) *orchestrator.StartResult {
	t.Helper()
	r, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: id, Input: json.RawMessage(input)})
	if err != nil {
		t.Fatalf("Start %q: %v", id, err)
	}
	if !r.Started {
		t.Fatalf("Start %q did not start", id)
	}
	return r
}

// holder is an owners key the test created by hand, the way a node's
// campaign does: If(CreateRevision == 0) Put, on a lease.
type holder struct {
	fence   orchestrator.Fence
	rejects atomic.Int32
	leaseID clientv3.LeaseID
}

// hold takes the owners key of id for executionID on a fresh 60s lease.
func (v *env) hold(t testing.TB, id, executionID string) *holder {
	t.Helper()
	g, err := v.raw.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := json.Marshal(orchestrator.Owner{Node: "test-node", LeaseID: fmt.Sprintf("%x", int64(g.ID)), ExecutionID: executionID, AcquiredTime: time.Now().UTC()})
	key := v.keys.Owner(id)
	resp, err := v.raw.Txn(ctxT(t)).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(owner), clientv3.WithLease(g.ID))).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("hold %s: %v (succeeded %v)", key, err, resp != nil && resp.Succeeded)
	}
	h := &holder{leaseID: g.ID}
	h.fence = orchestrator.Fence{
		Cmp: clientv3.Compare(clientv3.CreateRevision(key), "=", resp.Header.Revision), Token: resp.Header.Revision,
		OnReject: func(error) { h.rejects.Add(1) },
	}
	return h
}

// running starts id, holds it and marks it Running: what a node does
// before it calls the orchestration.
func (v *env) running(t testing.TB, id, input string) (*orchestrator.Execution, *holder) {
	t.Helper()
	r := v.start(t, id, input)
	h := v.hold(t, id, r.Status.ExecutionID)
	x, err := v.c.Open(ctxT(t), id, r.Status.ExecutionID, h.fence)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := x.MarkRunning(ctxT(t)); err != nil {
		t.Fatalf("MarkRunning: %v", err)
	}
	return x, h
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxiedEnv is an env whose Client talks to etcd through a proxy the test
// controls; raw is direct.
func proxiedEnv(t testing.TB) (*env, *leasetest.Proxy) {
	t.Helper()
	e := leasetest.Start(t)
	p := leasetest.NewProxy(t, e.Endpoints[0])
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.URL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return envOn(t, e, cli, e.Client()), p
}

func jsonEqual(t testing.TB, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("not JSON: %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
