package orchestrator

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ListOptions filter List.
type ListOptions struct {
	// Statuses keeps only instances in one of these statuses; empty keeps all.
	Statuses []RuntimeStatus
	// InstanceIDPrefix keeps only IDs that start with it.
	InstanceIDPrefix string
	// CreatedFrom and CreatedTo, if not zero, keep only instances created
	// at or after CreatedFrom and at or before CreatedTo.
	CreatedFrom, CreatedTo time.Time
	// Tags keeps only instances that carry every one of these tags.
	Tags map[string]string
	// ShowInput reads each instance's input too; without it Input is null.
	ShowInput bool
	// Top is the page size. Defaults to 100; at most 1000.
	Top int
	// ContinuationToken is the token a previous page returned.
	ContinuationToken string
}

func (o *ListOptions) matches(r *Record) bool {
	if len(o.Statuses) > 0 {
		found := false
		for _, s := range o.Statuses {
			found = found || s == r.RuntimeStatus
		}
		if !found {
			return false
		}
	}
	if !o.CreatedFrom.IsZero() && r.CreatedTime.Before(o.CreatedFrom) {
		return false
	}
	if !o.CreatedTo.IsZero() && r.CreatedTime.After(o.CreatedTo) {
		return false
	}
	for k, v := range o.Tags {
		if got, ok := r.Tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (o *ListOptions) filtered() bool {
	return len(o.Statuses) > 0 || !o.CreatedFrom.IsZero() || !o.CreatedTo.IsZero() || len(o.Tags) > 0
}

// List returns a page of instances in ID order, and the token of the next
// page ("" on the last page). The records are small keys; the page's
// payloads and holders are read after them, in a few transactions.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]*Status, string, error) {
	if opts.Top <= 0 {
		opts.Top = 100
	}
	if opts.Top > 1000 {
		return nil, "", &ValidationError{Field: "top", Value: strconv.Itoa(opts.Top), Reason: "must be 1 to 1000"}
	}
	if !opts.CreatedFrom.IsZero() && !opts.CreatedTo.IsZero() && opts.CreatedTo.Before(opts.CreatedFrom) {
		return nil, "", &ValidationError{Field: "createdTimeTo", Value: opts.CreatedTo.Format(time.RFC3339),
			Reason: "it is before createdTimeFrom; swap them"}
	}
	prefix := c.keys.Instances() + opts.InstanceIDPrefix
	from := prefix
	if opts.ContinuationToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(opts.ContinuationToken)
		if err != nil || !bytes.HasPrefix(raw, []byte(prefix)) {
			return nil, "", &ValidationError{Field: "continuation token", Value: opts.ContinuationToken,
				Reason: "it was not returned by a list with the same filters; start again without it"}
		}
		from = string(raw) + "\x00"
	}
	var out []*Status
	next := ""
	err := c.scanRecords(ctx, from, clientv3.GetPrefixRangeEnd(prefix), opts.filtered(), opts.Top+1,
		func(rec *Record, _ int64) bool {
			if !opts.matches(rec) {
				return true
			}
			if len(out) == opts.Top {
				next = base64.RawURLEncoding.EncodeToString([]byte(c.keys.Instance(out[len(out)-1].InstanceID)))
				return false
			}
			out = append(out, rec.status())
			return true
		})
	if err != nil {
		return nil, "", err
	}
	if err := c.fillHolders(ctx, out); err != nil {
		return nil, "", err
	}
	if err := c.fillPayloads(ctx, out, opts.ShowInput); err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// scanRecords calls fn for the records in [from, end) in key order until fn
// returns false. batch is the page size to read; a filtered scan reads
// larger pages.
func (c *Client) scanRecords(ctx context.Context, from, end string, filtered bool, batch int, fn func(*Record, int64) bool) error {
	if filtered {
		batch = 500
	}
	for {
		resp, err := c.etcd.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(int64(batch)),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return storeErr(err)
		}
		for _, kv := range resp.Kvs {
			rec, err := ParseRecord(kv.Value)
			if err != nil {
				c.log.Warn("skipping corrupt instance record", "key", string(kv.Key), "error", err)
				continue
			}
			if !fn(rec, kv.ModRevision) {
				return nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// fillHolders sets Node and FencingToken of each status from the owners
// keys in their ID range (one read), where the owner holds that execution.
func (c *Client) fillHolders(ctx context.Context, sts []*Status) error {
	if len(sts) == 0 {
		return nil
	}
	resp, err := c.etcd.Get(ctx, c.keys.Owner(sts[0].InstanceID),
		clientv3.WithRange(c.keys.Owner(sts[len(sts)-1].InstanceID)+"\x00"))
	if err != nil {
		return storeErr(err)
	}
	byID := map[string]*Status{}
	for _, st := range sts {
		byID[st.InstanceID] = st
	}
	for _, kv := range resp.Kvs {
		id, _ := IDFrom(c.keys.Owners(), string(kv.Key))
		if st := byID[id]; st != nil {
			fillHolder(st, []*mvccpb.KeyValue{kv})
		}
	}
	return nil
}

// fillPayloads reads the output and custom status (and input, if asked) of
// each status, in transactions of at most the etcd operation limit.
func (c *Client) fillPayloads(ctx context.Context, sts []*Status, input bool) error {
	type slot struct {
		key string
		dst *[]byte
	}
	var slots []slot
	for _, st := range sts {
		id := st.InstanceID
		slots = append(slots, slot{c.keys.Output(id), (*[]byte)(&st.Output)}, slot{c.keys.CustomStatus(id), (*[]byte)(&st.CustomStatus)})
		if input {
			slots = append(slots, slot{c.keys.Input(id), (*[]byte)(&st.Input)})
		}
	}
	for len(slots) > 0 {
		n := min(len(slots), c.limits.TxnOps)
		ops := make([]clientv3.Op, n)
		for i := range n {
			ops[i] = clientv3.OpGet(slots[i].key)
		}
		resp, err := c.etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return storeErr(err)
		}
		for i := range n {
			*slots[i].dst = valueOr(resp.Responses[i].GetResponseRange().Kvs)
		}
		slots = slots[n:]
	}
	return nil
}

// PurgeFilter selects the terminal instances PurgeMany deletes.
type PurgeFilter struct {
	// CreatedFrom and CreatedTo, if not zero, bound the creation time
	// (inclusive).
	CreatedFrom, CreatedTo time.Time
	// Statuses keeps only instances in these terminal statuses; empty means
	// every terminal status. An active status is refused.
	Statuses []RuntimeStatus
	// InstanceIDPrefix keeps only IDs that start with it.
	InstanceIDPrefix string
}

// PurgeMany deletes every terminal instance that matches f, as Purge does
// for one, and returns how many it deleted. An instance that changes while
// it runs is decided on its new record; an active one is never deleted.
func (c *Client) PurgeMany(ctx context.Context, f PurgeFilter) (int, error) {
	for _, s := range f.Statuses {
		if !s.Terminal() {
			return 0, &ValidationError{Field: "runtimeStatus", Value: string(s),
				Reason: "only terminal instances (Completed, Failed, Terminated) can be purged; terminate active ones first"}
		}
	}
	opts := ListOptions{Statuses: f.Statuses, CreatedFrom: f.CreatedFrom, CreatedTo: f.CreatedTo}
	if len(opts.Statuses) == 0 {
		opts.Statuses = []RuntimeStatus{StatusCompleted, StatusFailed, StatusTerminated}
	}
	prefix := c.keys.Instances() + f.InstanceIDPrefix
	type victim struct {
		rec *Record
		rev int64
	}
	var batch []victim
	var deleted int
	var mu sync.Mutex
	var firstErr error
	flush := func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, v := range batch {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ok, err := c.purgeIf(ctx, v.rec, v.rev)
				mu.Lock()
				defer mu.Unlock()
				if ok {
					deleted++
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
			}()
		}
		wg.Wait()
		batch = batch[:0]
	}
	err := c.scanRecords(ctx, prefix, clientv3.GetPrefixRangeEnd(prefix), true, 0, func(rec *Record, rev int64) bool {
		if opts.matches(rec) {
			batch = append(batch, victim{rec, rev})
			if len(batch) == 64 {
				flush()
			}
		}
		return firstErr == nil
	})
	flush()
	if err == nil {
		err = firstErr
	}
	return deleted, err
}

// purgeIf deletes rec if its record is still at rev, or, if it changed,
// decides again on the new record.
func (c *Client) purgeIf(ctx context.Context, rec *Record, rev int64) (bool, error) {
	err := c.purgeAt(ctx, rec, rev)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errChangedSince):
		return false, nil // restarted or purged meanwhile: not ours to delete
	}
	return false, err
}

var errChangedSince = errors.New("orchestrator: record changed")

func (c *Client) purgeAt(ctx context.Context, rec *Record, rev int64) error {
	key := c.keys.Instance(rec.InstanceID)
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(c.purgeOps(rec)...).Commit()
	if err != nil {
		return fmt.Errorf("purge '%s': %w", rec.InstanceID, storeErr(err))
	}
	if !resp.Succeeded {
		return errChangedSince
	}
	return nil
}
