package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// nodesPrefix holds the node keys (docs/contract.md section 5).
const nodesPrefix = prefix + "v1/nodes/"

// describeShown is how many missing instances describeMissing details.
const describeShown = 5

// describeMissing prints, for instances a phase waited for in vain, what
// etcd holds now next to what the benchmark's owners watch saw: how many of
// them etcd says are held by another node after all (a watch that missed
// events), and for a few of them the owners key, the instance record, the
// lease of the owners key, and every node key; then the campaign counters
// of the nodes other than gone (lost campaigns that keep growing mean
// claims refused over and over). It only reads.
func describeMissing(ctx context.Context, b *bench, c *cluster, ow *ownersWatch, missing []string, gone string) {
	if len(missing) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	defer func() {
		for _, n := range c.nodes {
			if n.id == gone {
				continue
			}
			m, err := n.metrics(ctx)
			if err != nil {
				b.logf("diagnose: %s metrics: %v", n.id, err)
				continue
			}
			b.logf("diagnose: %s soloist_campaigns_total %v, soloist_run_retries_total %.0f, soloist_leases_lost_total %v",
				n.id, m.by("soloist_campaigns_total", "result", nil), m.sum("soloist_run_retries_total", nil),
				m.by("soloist_leases_lost_total", "reason", nil))
		}
	}()
	cli := c.cli
	free, heldByEtcd := 0, map[string]int{}
	for _, id := range missing {
		resp, err := cli.Get(ctx, ownersPrefix+id)
		if err != nil {
			b.logf("diagnose: read %s: %v", ownersPrefix+id, err)
			return
		}
		if len(resp.Kvs) == 0 {
			free++
			continue
		}
		heldByEtcd[ownerNode(resp.Kvs[0].Value)]++
	}
	b.logf("diagnose: %d missing as the watch saw them; in etcd now %d have no owners key, held: %v", len(missing), free, heldByEtcd)
	nodes, err := cli.Get(ctx, nodesPrefix, clientv3.WithPrefix())
	if err != nil {
		b.logf("diagnose: read node keys: %v", err)
	} else {
		for _, kv := range nodes.Kvs {
			b.logf("diagnose: node key %s lease %x (%s) %s", kv.Key, kv.Lease, leaseTTL(ctx, cli, kv.Lease), kv.Value)
		}
		b.logf("diagnose: etcd revision %d", nodes.Header.Revision)
	}
	for i, id := range missing {
		if i == describeShown {
			b.logf("diagnose: (%d more missing not shown)", len(missing)-describeShown)
			break
		}
		h, seen := ow.holding(id)
		watched := "no owners key"
		if seen {
			watched = fmt.Sprintf("held by %s, CreateRevision %d", h.node, h.createRev)
		}
		b.logf("diagnose: %s: the watch saw %s", id, watched)
		resp, err := cli.Txn(ctx).Then(clientv3.OpGet(ownersPrefix+id), clientv3.OpGet(instancesPrefix+id),
			clientv3.OpGet(prefix+"v1/inbox/"+id+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())).Commit()
		if err != nil {
			b.logf("diagnose: %s: read: %v", id, err)
			continue
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			kv := kvs[0]
			b.logf("diagnose: %s: etcd owners key CreateRevision %d ModRevision %d lease %x (%s) %s",
				id, kv.CreateRevision, kv.ModRevision, kv.Lease, leaseTTL(ctx, cli, kv.Lease), kv.Value)
		} else {
			b.logf("diagnose: %s: etcd has no owners key", id)
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			kv := kvs[0]
			var rec struct {
				RuntimeStatus string `json:"runtimeStatus"`
				ExecutionID   string `json:"executionId"`
				Name          string `json:"name"`
				Version       string `json:"version"`
			}
			_ = json.Unmarshal(kv.Value, &rec)
			b.logf("diagnose: %s: record %s execution %s function %s@%s, CreateRevision %d ModRevision %d Version %d",
				id, rec.RuntimeStatus, rec.ExecutionID, rec.Name, rec.Version, kv.CreateRevision, kv.ModRevision, kv.Version)
		} else {
			b.logf("diagnose: %s: etcd has no instance record", id)
		}
		b.logf("diagnose: %s: %d inbox entries", id, resp.Responses[2].GetResponseRange().Count)
	}
}

func ownerNode(v []byte) string {
	var o struct {
		Node string `json:"node"`
	}
	if json.Unmarshal(v, &o) != nil || o.Node == "" {
		return "?"
	}
	return o.Node
}

// leaseTTL says how long etcd still keeps lease id.
func leaseTTL(ctx context.Context, cli *clientv3.Client, id int64) string {
	if id == 0 {
		return "no lease"
	}
	r, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
	switch {
	case err != nil:
		return "TimeToLive: " + err.Error()
	case r.TTL < 0:
		return "lease gone"
	}
	return fmt.Sprintf("TTL %ds of %ds", r.TTL, r.GrantedTTL)
}
