package scheduler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// TestTakeoverAfterRecordChangedDuringPagedListing: a node whose first
// listing of the watched keys spans two pages, while the holder of an
// instance writes its record between them, must still take the instance
// over when the holder dies. The mirror read every page at the revision of
// the first but watched on from the (later) revision etcd reported with
// the last page, so it never saw that write: its campaigns compared the
// record's ModRevision with a stale one and failed, forever. This is the
// benchmark's mass failure (a node starting beside a holder still writing
// the steps of 1,000 instances, listing 2,000+ keys).
func TestTakeoverAfterRecordChangedDuringPagedListing(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	defer close(rec.finish)
	c := newCluster(t, 1, 2*time.Second, newBlockingRegistry(rec, nil))
	holder := c.nodes[0]
	cl := c.client()
	if _, err := cl.Start(context.Background(), "Block", orchestrator.StartOptions{InstanceID: "job"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first run", func() bool { return rec.count() == 1 && holderOf(c, "job") == holder })

	// Filler owners keys (of no instance) after the instance's record, so
	// that a listing of the watched range takes two pages (2,000 keys each).
	cli := c.e.Client()
	owners := c.prefix + "v1/owners/"
	for i := 0; i < 2000; {
		var ops []clientv3.Op
		for ; len(ops) < 100; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s~filler-%04d", owners, i), `{"node":"filler"}`))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}

	// The next node's second page (its first key follows the last key of
	// the first page) is sent only after the holder's next write of the
	// record: here the record put again as it is, which is all a step of
	// the holder changes that matters (its ModRevision).
	record := c.prefix + "v1/instances/job"
	var paged <-chan struct{}
	c.prepare = func(nodeCli *clientv3.Client) {
		paged = leasetest.NewGetHook(nodeCli).Arm(leasetest.NextPage(owners), func() {
			resp, err := cli.Get(context.Background(), record)
			if err != nil || len(resp.Kvs) == 0 {
				t.Errorf("read %s: %v", record, err)
				return
			}
			if _, err := cli.Put(context.Background(), record, string(resp.Kvs[0].Value)); err != nil {
				t.Errorf("write %s: %v", record, err)
			}
		})
	}
	peer := c.addNode("node-1")
	select {
	case <-paged:
	case <-time.After(10 * time.Second):
		t.Fatal("the new node's listing did not take a second page")
	}

	// The holder crashes: its lease expires after the TTL.
	_ = holder.etcd.Close()
	deadline := time.Now().Add(15 * time.Second)
	for rec.count() != 2 || holderOf(c, "job") != peer {
		if time.Now().After(deadline) {
			t.Fatalf("node-1 did not take the instance over in 15s (its campaigns: %v won, %v lost, %v failed)",
				peer.counter("soloist_campaigns_total", "result", "won"), peer.counter("soloist_campaigns_total", "result", "lost"),
				peer.counter("soloist_campaigns_total", "result", "error"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
