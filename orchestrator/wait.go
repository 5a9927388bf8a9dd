package orchestrator

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WaitForOrchestrationStart waits until the instance has started running
// (its status is no longer Pending) and returns its status. It is driven by
// an etcd watch on the instance record, not by polling; ctx bounds it.
func (c *Client) WaitForOrchestrationStart(ctx context.Context, id string) (*Status, error) {
	return c.waitFor(ctx, id, func(r *Record) bool { return r.RuntimeStatus != StatusPending })
}

// WaitForOrchestrationCompletion waits until the instance is terminal
// (Completed, Failed or Terminated) and returns its status, output
// included. It is driven by an etcd watch on the instance record, not by
// polling; ctx bounds it. An instance that continues as new is followed
// through its generations.
func (c *Client) WaitForOrchestrationCompletion(ctx context.Context, id string) (*Status, error) {
	return c.waitFor(ctx, id, func(r *Record) bool { return r.RuntimeStatus.Terminal() })
}

// waitFor reads the record, then watches it from the revision after that
// read until done holds; a broken watch reads again.
func (c *Client) waitFor(ctx context.Context, id string, done func(*Record) bool) (*Status, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	key := c.keys.Instance(id)
	for {
		resp, err := c.etcd.Get(ctx, key)
		if err != nil {
			return nil, storeErr(err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
		}
		rec, err := ParseRecord(resp.Kvs[0].Value)
		if err != nil {
			return nil, err
		}
		if done(rec) {
			return c.Status(ctx, id)
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := c.etcd.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(resp.Header.Revision+1))
		found := false
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					cancel()
					return nil, fmt.Errorf("%w: '%s' was purged while waiting", ErrInstanceNotFound, id)
				}
				if r, err := ParseRecord(ev.Kv.Value); err == nil && done(r) {
					found = true
				}
			}
			if found {
				break
			}
		}
		cancel()
		if found {
			return c.Status(ctx, id)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: waiting for '%s': %w", ErrUnavailable, id, ctx.Err())
		}
	}
}
