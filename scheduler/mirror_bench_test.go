package scheduler

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// BenchmarkMirrorApply is the mirror's cost per watched change in a busy
// cluster: step writes (a Running record put again with a new update time
// and token) of 1,000 instances that other nodes hold, as every node sees
// each of them. The node is not started: only apply is measured.
func BenchmarkMirrorApply(b *testing.B) {
	e := leasetest.Start(b)
	reg := orchestrator.NewRegistry()
	_ = reg.AddOrchestrator("Fn", func(*orchestrator.OrchestrationContext) (any, error) { return nil, nil })
	n, err := New(Config{Etcd: e.Client(), NodeID: "me", Registry: reg, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler), Prefix: "/bench/"})
	if err != nil {
		b.Fatal(err)
	}
	defer n.cancel(errStopped)
	n.nodes["me"] = &orchestrator.NodeInfo{Node: "me"}
	n.nodes["other"] = &orchestrator.NodeInfo{Node: "other"}
	const instances = 1000
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var events []*clientv3.Event
	rev := int64(10)
	for i := 0; i < instances; i++ {
		id := fmt.Sprintf("inst-%04d", i)
		owner, _ := json.Marshal(orchestrator.Owner{Node: "other", LeaseID: "00000000000000aa", ExecutionID: "exec-" + id})
		n.apply(&clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{
			Key: []byte(n.keys.Owner(id)), Value: owner, CreateRevision: rev, ModRevision: rev, Version: 1}}, true)
		rev++
	}
	for step := 0; step < 4; step++ {
		for i := 0; i < instances; i++ {
			id := fmt.Sprintf("inst-%04d", i)
			rec := orchestrator.Record{Name: "Fn", InstanceID: id, RuntimeStatus: orchestrator.StatusRunning,
				CreatedTime: t0, LastUpdatedTime: t0.Add(time.Duration(step) * time.Millisecond), ExecutionID: "exec-" + id,
				FencingToken: int64(10 + i), Tags: map[string]string{"team": "a"}, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
			v, _ := json.Marshal(rec)
			events = append(events, &clientv3.Event{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{
				Key: []byte(n.keys.Instance(id)), Value: v, CreateRevision: 5, ModRevision: rev, Version: int64(step + 1)}})
			rev++
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n.mu.Lock()
		n.apply(events[i%len(events)], true)
		n.mu.Unlock()
	}
}
