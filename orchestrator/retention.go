package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SweepState is the value of a sweep's claim key, {prefix}v1/sweeps/{name}.
type SweepState struct {
	// LastSlot is the latest slot some node claimed.
	LastSlot time.Time `json:"lastSlot"`
	// Node claimed it.
	Node string `json:"node"`
	// ClaimedTime is when.
	ClaimedTime time.Time `json:"claimedTime"`
}

// ClaimSweep claims slot of the cluster-wide sweep name for node, once
// across every caller: it moves the sweep's state forward to slot in a
// compare-and-swap and reports whether this call did. A slot at or before
// the last one claimed is taken already.
func (c *Client) ClaimSweep(ctx context.Context, name string, slot time.Time, node string) (bool, error) {
	key := c.keys.Sweep(name)
	resp, err := c.etcd.Get(ctx, key)
	if err != nil {
		return false, storeErr(err)
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(resp.Kvs) > 0 {
		var cur SweepState
		if json.Unmarshal(resp.Kvs[0].Value, &cur) == nil && !cur.LastSlot.Before(slot) {
			return false, nil
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
	}
	b, _ := json.Marshal(SweepState{LastSlot: slot.UTC(), Node: node, ClaimedTime: now()})
	tr, err := c.etcd.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return false, storeErr(err)
	}
	return tr.Succeeded, nil
}

// PurgeFinished purges, as Purge does, the terminal instances that
// finished before t, at most limit of them, and returns how many it
// deleted. It reads only the retention index ({prefix}v1/finished/), whose
// keys sort by finish time, so its cost is proportional to what expired;
// an entry whose instance was restarted or purged since is dropped.
func (c *Client) PurgeFinished(ctx context.Context, t time.Time, limit int) (int, error) {
	from := c.keys.Finished()
	end := fmt.Sprintf("%s%013d", from, t.UnixMilli())
	resp, err := c.etcd.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(int64(limit)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return 0, storeErr(err)
	}
	deleted := 0
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), from)
		ms, id, ok := strings.Cut(rest, "/")
		millis, perr := strconv.ParseInt(ms, 10, 64)
		if !ok || perr != nil {
			_, _ = c.etcd.Delete(ctx, string(kv.Key)) // not an index entry
			continue
		}
		rec, rev, err := c.read(ctx, id)
		if err != nil || !rec.RuntimeStatus.Terminal() || rec.ExecutionID != string(kv.Value) || rec.LastUpdatedTime.UnixMilli() != millis {
			// Stale: the instance was purged, restarted or replaced.
			if err == nil || isNotFound(err) {
				_, _ = c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
					Then(clientv3.OpDelete(string(kv.Key))).Commit()
			}
			continue
		}
		ok2, err := c.purgeIf(ctx, rec, rev)
		if err != nil {
			return deleted, err
		}
		if ok2 {
			deleted++
		}
	}
	return deleted, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrInstanceNotFound) }
