// Package orchestratortest helps tests run orchestrations without a
// scheduler node: it starts an instance and makes the test its holder.
package orchestratortest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Hold starts instance id of function fn with input and makes the test its
// holder, as a scheduler node would: an owners key whose CreateRevision is
// the fencing token. The returned execution is ready for orchestrator.Run.
func Hold(t testing.TB, etcd *clientv3.Client, c *orchestrator.Client, fn, id, input string) *orchestrator.Execution {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Start(ctx, fn, orchestrator.StartOptions{InstanceID: id, Input: json.RawMessage(input)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	owner, _ := json.Marshal(orchestrator.Owner{Node: "test", ExecutionID: res.Status.ExecutionID, AcquiredTime: time.Now()})
	key := c.Keys().Owner(id)
	put, err := etcd.Put(ctx, key, string(owner))
	if err != nil {
		t.Fatal(err)
	}
	token := put.Header.Revision
	fence := orchestrator.Fence{Cmp: clientv3.Compare(clientv3.CreateRevision(key), "=", token), Token: token}
	exec, err := c.Open(ctx, id, res.Status.ExecutionID, fence)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return exec
}
