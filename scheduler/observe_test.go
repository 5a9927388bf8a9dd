package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// TestSubscribeSeesStartHoldingAndNodes: a subscriber hears an instance's
// record, its owners key with the holder's token, and a node joining; the
// node's Owners, Nodes and LeaseTimeToLive agree with them.
func TestSubscribeSeesStartHoldingAndNodes(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 1, 2*time.Second, newBlockingRegistry(rec, nil))
	n := c.nodes[0]
	ch, cancel := n.Subscribe(64)
	defer cancel()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if _, err := c.client().Start(ctx, "Block", orchestrator.StartOptions{InstanceID: "obs-1"}); err != nil {
		t.Fatal(err)
	}
	c.addNode("node-late")
	var sawRecord, sawNode bool
	var owner *scheduler.Holder
	for !sawRecord || owner == nil || !sawNode {
		select {
		case ch := <-ch:
			switch {
			case ch.Kind == scheduler.ChangeInstance && ch.ID == "obs-1" && !ch.Deleted:
				sawRecord = true
			case ch.Kind == scheduler.ChangeOwner && ch.ID == "obs-1" && ch.Owner != nil:
				owner = ch.Owner
			case ch.Kind == scheduler.ChangeNode && ch.ID == "node-late" && ch.Node != nil:
				sawNode = true
			}
			if ch.Kind != scheduler.ChangeReset && ch.Revision <= 0 || ch.Seen.IsZero() {
				t.Fatalf("change without revision or time: %+v", ch)
			}
		case <-ctx.Done():
			t.Fatalf("changes not seen: record %v, owner %v, node %v", sawRecord, owner, sawNode)
		}
	}
	if owner.FencingToken <= 0 || owner.LeaseID == "" || owner.ExecutionID == "" {
		t.Fatalf("owner change = %+v, want a token, a lease and an execution", owner)
	}
	eventually(t, 5*time.Second, "Owners to show the holding", func() bool {
		h, ok := n.Owners()["obs-1"]
		return ok && h == *owner
	})
	eventually(t, 5*time.Second, "Nodes to list both nodes", func() bool {
		nodes, err := n.Nodes(ctx)
		return err == nil && len(nodes) == 2 && nodes[0].Node == "node-0" && nodes[1].Node == "node-late"
	})
	left, granted, err := n.LeaseTimeToLive(ctx, owner.LeaseID)
	if err != nil || granted != 2*time.Second || left <= 0 {
		t.Fatalf("LeaseTimeToLive(%s) = %v, %v, %v; want >0 of 2s", owner.LeaseID, left, granted, err)
	}
	cancel()
	cancel() // idempotent
	if _, open := <-ch; open {
		// drain whatever was buffered; the channel must end closed
		for range ch {
		}
	}
}

// TestSubscriberThatLagsIsDropped: a subscriber that does not read is cut
// off (its channel closed) instead of blocking the node's watch.
func TestSubscriberThatLagsIsDropped(t *testing.T) {
	t.Parallel()
	rec := &recorder{finish: make(chan struct{})}
	c := newCluster(t, 1, 2*time.Second, newBlockingRegistry(rec, nil))
	n := c.nodes[0]
	slow, cancelSlow := n.Subscribe(1)
	defer cancelSlow()
	fast, cancelFast := n.Subscribe(256)
	defer cancelFast()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	cl := c.client()
	for _, id := range []string{"lag-1", "lag-2", "lag-3"} {
		if _, err := cl.Start(ctx, "Block", orchestrator.StartOptions{InstanceID: id}); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	for seen < 3 {
		select {
		case ch := <-fast:
			if ch.Kind == scheduler.ChangeInstance {
				seen++
			}
		case <-ctx.Done():
			t.Fatalf("the fast subscriber saw %d of 3 starts", seen)
		}
	}
	got := 0
	for range slow {
		got++
	}
	if got != 1 {
		t.Fatalf("the slow subscriber got %d changes before it was dropped, want its buffer's 1", got)
	}
}
