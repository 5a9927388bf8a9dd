package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fence is what a holder proves on every write: the compare that holds only
// while it holds the instance (CreateRevision(ownersKey) == Token).
type Fence struct {
	Cmp   clientv3.Cmp
	Token int64
	// OnReject, if set, is called whenever a write is refused because the
	// fence failed (for a metric, and to stop the holder).
	OnReject func(err error)
}

// Execution is a holder's handle on one execution of an instance. Every
// write through it is one etcd transaction guarded by the fence and by the
// record's ModRevision; a failed fence returns ErrFenced, a record that now
// belongs to another execution or is no longer runnable returns
// ErrExecutionChanged. It is safe for concurrent use.
type Execution struct {
	c     *Client
	fence Fence

	mu  sync.Mutex
	rec *Status
	rev int64
}

// Open reads the record of executionID of id for a holder. It returns
// ErrExecutionChanged if the record belongs to another execution or is not
// runnable (terminal or suspended).
func (c *Client) Open(ctx context.Context, id, executionID string, fence Fence) (*Execution, error) {
	rec, rev, err := c.read(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.ExecutionID != executionID || !rec.RuntimeStatus.Runnable() {
		return nil, fmt.Errorf("%w: '%s' is now execution %s, %s", ErrExecutionChanged, id, rec.ExecutionID, rec.RuntimeStatus)
	}
	return &Execution{c: c, fence: fence, rec: rec, rev: rev}, nil
}

// Status returns a copy of the record as last read or written.
func (e *Execution) Status() *Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rec.Clone()
}

// Token is the holder's fencing token.
func (e *Execution) Token() int64 { return e.fence.Token }

// Update applies change to the record and writes it with ops in one fenced
// transaction. If the record changed since it was read but still belongs to
// this runnable execution, change is applied again to the new record.
func (e *Execution) Update(ctx context.Context, change func(*Status), ops ...clientv3.Op) error {
	return e.updateIf(ctx, nil, change, ops...)
}

// errConditionFailed: an updateIf condition failed while the fence and the
// record held.
var errConditionFailed = errors.New("orchestrator: update condition failed")

// updateIf is Update with extra compares; if only they fail it returns
// errConditionFailed without retrying.
func (e *Execution) updateIf(ctx context.Context, cmps []clientv3.Cmp, change func(*Status), ops ...clientv3.Op) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := e.c.keys.Instance(e.rec.InstanceID)
	ownerKey := string(e.fence.Cmp.KeyBytes())
	for attempt := 0; attempt < maxAttempts; attempt++ {
		next := e.rec.Clone()
		change(next)
		next.FencingToken = e.fence.Token
		next.LastUpdatedTime = now()
		resp, err := e.c.etcd.Txn(ctx).
			If(append([]clientv3.Cmp{e.fence.Cmp, clientv3.Compare(clientv3.ModRevision(key), "=", e.rev)}, cmps...)...).
			Then(append([]clientv3.Op{clientv3.OpPut(key, next.encode())}, ops...)...).
			Else(clientv3.OpGet(ownerKey), clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return storeErr(err)
		}
		if resp.Succeeded {
			e.rec, e.rev = next, resp.Header.Revision
			return nil
		}
		owners := resp.Responses[0].GetResponseRange().Kvs
		recs := resp.Responses[1].GetResponseRange().Kvs
		if len(recs) > 0 && len(owners) == 0 {
			// An earlier attempt whose outcome was unknown may have landed
			// our own final write (which deletes the owners key).
			if cur, err := decodeStatus(recs[0].Value); err == nil && cur.ExecutionID == e.rec.ExecutionID &&
				cur.RuntimeStatus.Terminal() && cur.FencingToken == e.fence.Token && sameResult(next, cur) {
				e.rec, e.rev = cur, recs[0].ModRevision
				return nil
			}
		}
		if len(owners) == 0 || owners[0].CreateRevision != e.fence.Token {
			err := fmt.Errorf("%w: owners key of '%s' no longer has token %d", ErrFenced, e.rec.InstanceID, e.fence.Token)
			if e.fence.OnReject != nil {
				e.fence.OnReject(err)
			}
			return err
		}
		if len(recs) > 0 && recs[0].ModRevision == e.rev {
			return errConditionFailed
		}
		if len(recs) == 0 {
			return fmt.Errorf("%w: '%s' was purged", ErrExecutionChanged, e.rec.InstanceID)
		}
		cur, err := decodeStatus(recs[0].Value)
		if err != nil {
			return err
		}
		if cur.ExecutionID != e.rec.ExecutionID || !cur.RuntimeStatus.Runnable() {
			return fmt.Errorf("%w: '%s' is now execution %s, %s", ErrExecutionChanged, cur.InstanceID, cur.ExecutionID, cur.RuntimeStatus)
		}
		e.rec, e.rev = cur, recs[0].ModRevision
	}
	return fmt.Errorf("%w: '%s' kept changing under its holder", ErrUnavailable, e.rec.InstanceID)
}

// MarkRunning moves a Pending or ContinuedAsNew record to Running.
func (e *Execution) MarkRunning(ctx context.Context) error {
	return e.Update(ctx, func(s *Status) { s.RuntimeStatus = StatusRunning })
}

// Finish writes the terminal status (Completed with output, or Failed with
// the error message as output) and deletes the owners key in the same
// fenced transaction, so the instance is never terminal and held at once.
func (e *Execution) Finish(ctx context.Context, output json.RawMessage, runErr error) error {
	return e.finish(ctx, output, runErr)
}

func (e *Execution) finish(ctx context.Context, output json.RawMessage, runErr error, ops ...clientv3.Op) error {
	return e.Update(ctx, func(s *Status) {
		if runErr != nil {
			s.RuntimeStatus = StatusFailed
			s.Output = reasonJSON(runErr.Error())
			return
		}
		s.RuntimeStatus = StatusCompleted
		s.Output = output
	}, append(ops, clientv3.OpDelete(string(e.fence.Cmp.KeyBytes())))...)
}

// sameResult reports whether two records carry the same final result.
func sameResult(a, b *Status) bool {
	return a.RuntimeStatus == b.RuntimeStatus && jsonEqual(a.Output, b.Output) && jsonEqual(a.CustomStatus, b.CustomStatus)
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, orNull(a)) != nil || json.Compact(&y, orNull(b)) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}
