package orchestrator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxPayload is the default limit of input, output, custom status and
// event data: 256 KiB.
const DefaultMaxPayload = 256 << 10

// ClientConfig configures a Client.
type ClientConfig struct {
	// Prefix is the root of every key. Defaults to "/soloist/".
	Prefix string
	// MaxPayload limits input, output, custom status and event data in bytes.
	// Defaults to DefaultMaxPayload.
	MaxPayload int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client starts, reads and controls instances in etcd. It is safe for
// concurrent use. Every state change is one etcd transaction with a compare
// on the record's revision, so concurrent callers never overwrite each other.
type Client struct {
	etcd       *clientv3.Client
	keys       Keys
	maxPayload int
	log        *slog.Logger
}

// NewClient returns a Client on an etcd connection it does not own.
func NewClient(etcd *clientv3.Client, cfg ClientConfig) *Client {
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{etcd: etcd, keys: NewKeys(cfg.Prefix), maxPayload: cfg.MaxPayload, log: cfg.Logger}
}

// Keys returns the key layout the client uses.
func (c *Client) Keys() Keys { return c.keys }

// MaxPayload returns the payload limit in bytes.
func (c *Client) MaxPayload() int { return c.maxPayload }

// maxAttempts bounds compare-and-swap retries under contention.
const maxAttempts = 64

// StartOptions are the arguments of Start.
type StartOptions struct {
	// InstanceID is the fixed ID of a singleton; empty generates one.
	InstanceID string
	// Input is the orchestration's input as JSON; empty means null.
	Input json.RawMessage
	// ConflictPolicy applies when the ID is active. Defaults to ConflictFail.
	ConflictPolicy ConflictPolicy
	// ReusePolicy applies when the ID is terminal. Defaults to ReuseAllow.
	ReusePolicy ReusePolicy
}

// StartResult is what Start did.
type StartResult struct {
	// Status is the new instance, or the existing one for ConflictUseExisting.
	Status *Status
	// Started is false when ConflictUseExisting returned an existing instance.
	Started bool
	// Replaced is the execution a start replaced (terminateExisting, or a
	// terminal execution reused), empty if none.
	Replaced string
}

// Start creates the instance record of a new execution in one etcd
// transaction, only if the policies allow it. It returns only after the
// commit. A refusal is an *ExistsError (errors.Is ErrInstanceExists). If the
// outcome of the commit is unknown (a timeout), Start re-reads the record and
// reports success only if its execution is there.
func (c *Client) Start(ctx context.Context, name string, opts StartOptions) (*StartResult, error) {
	return c.StartIf(ctx, name, opts, nil, nil)
}

// ErrConditionFailed means a StartIf did not start because one of the
// caller's compares did not hold; nothing was written.
var ErrConditionFailed = errors.New("orchestrator: start condition failed")

// StartIf is Start with the caller's compares and writes in the start
// transaction: the record is created or replaced only if every compare in
// cmps holds as well as the policies' own compare, and then the ops that ops
// returns for the new record are applied in the same transaction. ops is
// called once, with a copy of the record to be written (its ExecutionID and
// CreatedTime are final); it may be nil, and its ops must not touch the
// instance's own keys.
//
// If only the policies' compare fails (a racing start or change), StartIf
// reads the record again and decides anew, as Start does. If a caller's
// compare fails, it returns ErrConditionFailed and writes nothing. A refusal
// by the policies (*ExistsError) and ConflictUseExisting are decided on the
// record alone, before cmps are evaluated; neither writes the caller's ops.
func (c *Client) StartIf(ctx context.Context, name string, opts StartOptions, cmps []clientv3.Cmp, ops func(rec *Status) []clientv3.Op) (*StartResult, error) {
	if name == "" {
		return nil, &ValidationError{Field: "function name", Reason: "it is empty"}
	}
	if opts.InstanceID == "" {
		opts.InstanceID = NewID()
	}
	if err := ValidateInstanceID(opts.InstanceID); err != nil {
		return nil, err
	}
	cp, err := ParseConflictPolicy(string(opts.ConflictPolicy))
	if err != nil {
		return nil, err
	}
	rp, err := ParseReusePolicy(string(opts.ReusePolicy))
	if err != nil {
		return nil, err
	}
	input, err := c.checkJSON("input", opts.Input)
	if err != nil {
		return nil, err
	}
	id := opts.InstanceID
	key := c.keys.Instance(id)
	t := now()
	rec := &Status{
		Name: name, InstanceID: id, RuntimeStatus: StatusPending, Input: input,
		CreatedTime: t, LastUpdatedTime: t, ExecutionID: NewID(),
	}
	var extra []clientv3.Op
	if ops != nil {
		extra = ops(rec.Clone())
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		cur, rev, err := c.read(ctx, id)
		if err != nil && !errors.Is(err, ErrInstanceNotFound) {
			return nil, err
		}
		var policy clientv3.Cmp
		var write []clientv3.Op
		replaced := ""
		switch {
		case cur == nil:
			policy = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
			write = []clientv3.Op{clientv3.OpPut(key, rec.encode())}
		case cur.RuntimeStatus.Active():
			switch cp {
			case ConflictFail:
				return nil, &ExistsError{Status: cur, Reason: "conflictPolicy=fail"}
			case ConflictUseExisting:
				st, err := c.Status(ctx, id)
				if errors.Is(err, ErrInstanceNotFound) {
					continue // purged in between: try again
				}
				if err != nil {
					return nil, err
				}
				return &StartResult{Status: st}, nil
			}
			// terminateExisting: replace the record and free the owners key in
			// one transaction; the old holder's fenced writes then all fail.
			replaced = cur.ExecutionID
			policy = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
			write = c.replaceOps(id, rec)
		default:
			if !rp.allows(cur.RuntimeStatus) {
				return nil, &ExistsError{Status: cur, Reason: "reusePolicy=" + string(rp)}
			}
			replaced = cur.ExecutionID
			policy = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
			write = c.replaceOps(id, rec)
		}
		txn := c.etcd.Txn(ctx).If(append([]clientv3.Cmp{policy}, cmps...)...).Then(append(write, extra...)...)
		if len(cmps) > 0 {
			// The caller's compares alone, evaluated when the start's failed:
			// the nested result says whose compare did not hold.
			txn = txn.Else(clientv3.OpTxn(cmps, nil, nil))
		}
		resp, err := txn.Commit()
		if err != nil {
			return c.reconcileStart(ctx, rec, replaced, err)
		}
		if resp.Succeeded {
			return &StartResult{Status: rec.Clone(), Started: true, Replaced: replaced}, nil
		}
		if len(cmps) > 0 && len(resp.Responses) == 1 {
			if nested := resp.Responses[0].GetResponseTxn(); nested != nil && !nested.Succeeded {
				return nil, ErrConditionFailed
			}
		}
	}
	return nil, fmt.Errorf("%w: start of '%s' lost %d races in a row; try again", ErrUnavailable, id, maxAttempts)
}

// replaceOps puts a new execution's record over an old one and clears what
// belonged to the old one.
func (c *Client) replaceOps(id string, rec *Status) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpPut(c.keys.Instance(id), rec.encode()),
		clientv3.OpDelete(c.keys.Owner(id)),
		clientv3.OpDelete(c.keys.Handoff(id)),
		clientv3.OpDelete(c.keys.HistoryPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.InboxPrefix(id), clientv3.WithPrefix()),
	}
}

// reconcileStart decides a start whose commit returned an error: the write
// may or may not have happened, so read until we know.
func (c *Client) reconcileStart(ctx context.Context, rec *Status, replaced string, cause error) (*StartResult, error) {
	for i := 0; i < 3; i++ {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		cur, _, err := c.read(rctx, rec.InstanceID)
		cancel()
		if err == nil && cur.ExecutionID == rec.ExecutionID {
			return &StartResult{Status: rec.Clone(), Started: true, Replaced: replaced}, nil
		}
		if err == nil || errors.Is(err, ErrInstanceNotFound) {
			return nil, fmt.Errorf("%w: start of '%s' was not committed (%v); try again", ErrUnavailable, rec.InstanceID, cause)
		}
		time.Sleep(time.Duration(100*(i+1)) * time.Millisecond)
	}
	return nil, fmt.Errorf("%w: outcome of the start of '%s' is unknown (%v); read its status before retrying", ErrUnavailable, rec.InstanceID, cause)
}

// checkJSON validates a JSON payload against the size limit.
func (c *Client) checkJSON(field string, v json.RawMessage) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return jsonNull, nil
	}
	if len(v) > c.maxPayload {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d bytes", ErrPayloadTooLarge, field, len(v), c.maxPayload)
	}
	if !json.Valid(v) {
		return nil, &ValidationError{Field: field, Reason: "it is not valid JSON"}
	}
	return v, nil
}

// read returns the record and its ModRevision.
func (c *Client) read(ctx context.Context, id string) (*Status, int64, error) {
	resp, err := c.etcd.Get(ctx, c.keys.Instance(id))
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	st, err := decodeStatus(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return st, resp.Kvs[0].ModRevision, nil
}

// storeErr marks an etcd error (including a timeout or cancellation of the
// call) as ErrUnavailable, keeping the cause.
func storeErr(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }

// Status reads an instance with its current holder: Node and FencingToken
// come from the owners key when it belongs to the record's execution.
func (c *Client) Status(ctx context.Context, id string) (*Status, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(c.keys.Instance(id)),
		clientv3.OpGet(c.keys.Owner(id)),
	).Commit()
	if err != nil {
		return nil, storeErr(err)
	}
	recs := resp.Responses[0].GetResponseRange().Kvs
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	st, err := decodeStatus(recs[0].Value)
	if err != nil {
		return nil, err
	}
	if owners := resp.Responses[1].GetResponseRange().Kvs; len(owners) > 0 {
		var o Owner
		if json.Unmarshal(owners[0].Value, &o) == nil && o.ExecutionID == st.ExecutionID {
			st.Node = o.Node
			st.FencingToken = owners[0].CreateRevision
		}
	}
	return st, nil
}

// ListOptions filter List.
type ListOptions struct {
	// Statuses keeps only instances in one of these statuses; empty keeps all.
	Statuses []RuntimeStatus
	// InstanceIDPrefix keeps only IDs that start with it.
	InstanceIDPrefix string
	// Top is the page size. Defaults to 100; at most 1000.
	Top int
	// ContinuationToken is the token a previous page returned.
	ContinuationToken string
}

// List returns a page of instances in ID order, and the token of the next
// page ("" on the last page).
func (c *Client) List(ctx context.Context, opts ListOptions) ([]*Status, string, error) {
	if opts.Top <= 0 {
		opts.Top = 100
	}
	if opts.Top > 1000 {
		return nil, "", &ValidationError{Field: "top", Value: strconv.Itoa(opts.Top), Reason: "must be 1 to 1000"}
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
	want := map[RuntimeStatus]bool{}
	for _, s := range opts.Statuses {
		want[s] = true
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	var out []*Status
	next := ""
	for more := true; more && next == ""; {
		batch := int64(opts.Top + 1)
		if len(want) > 0 {
			batch = 500
		}
		resp, err := c.etcd.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(batch),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return nil, "", storeErr(err)
		}
		for _, kv := range resp.Kvs {
			st, err := decodeStatus(kv.Value)
			if err != nil {
				c.log.Warn("skipping corrupt instance record", "key", string(kv.Key), "error", err)
				continue
			}
			if len(want) > 0 && !want[st.RuntimeStatus] {
				continue
			}
			if len(out) == opts.Top {
				last := c.keys.Instance(out[len(out)-1].InstanceID)
				next = base64.RawURLEncoding.EncodeToString([]byte(last))
				break
			}
			out = append(out, st)
		}
		more = resp.More && len(resp.Kvs) > 0
		if more {
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	if err := c.fillHolders(ctx, out); err != nil {
		return nil, "", err
	}
	return out, next, nil
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
		var o Owner
		if st := byID[id]; st != nil && json.Unmarshal(kv.Value, &o) == nil && o.ExecutionID == st.ExecutionID {
			st.Node = o.Node
			st.FencingToken = kv.CreateRevision
		}
	}
	return nil
}

// update applies change to the record of id in a compare-and-swap loop and
// writes it with the ops change returns. change returns an error to refuse
// (nothing is written).
func (c *Client) update(ctx context.Context, id string, change func(*Status) ([]clientv3.Op, error)) (*Status, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	key := c.keys.Instance(id)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		cur, rev, err := c.read(ctx, id)
		if err != nil {
			return nil, err
		}
		ops, err := change(cur)
		if errors.Is(err, errUnchanged) {
			return cur, nil
		}
		if err != nil {
			return nil, err
		}
		cur.LastUpdatedTime = now()
		resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(append([]clientv3.Op{clientv3.OpPut(key, cur.encode())}, ops...)...).Commit()
		if err != nil {
			return nil, storeErr(err)
		}
		if resp.Succeeded {
			return cur, nil
		}
	}
	return nil, fmt.Errorf("%w: '%s' changed %d times while we tried to update it; try again", ErrUnavailable, id, maxAttempts)
}

// errUnchanged is returned by an update's change to write nothing.
var errUnchanged = errors.New("orchestrator: unchanged")

// inboxOp puts an event into the inbox of the record's execution.
func (c *Client) inboxOp(s *Status, ev HistoryEvent) clientv3.Op {
	ev.Timestamp = now()
	b, _ := json.Marshal(ev)
	return clientv3.OpPut(c.keys.Inbox(s.InstanceID, s.ExecutionID)+NewID(), string(b))
}

func reasonJSON(reason string) json.RawMessage {
	b, _ := json.Marshal(reason)
	return b
}

// Terminate ends an active instance with status Terminated and the reason as
// output. Its holder sees the change and stops its run at once.
func (c *Client) Terminate(ctx context.Context, id, reason string) (*Status, error) {
	out, err := c.checkJSON("reason", reasonJSON(reason))
	if err != nil {
		return nil, err
	}
	return c.update(ctx, id, func(s *Status) ([]clientv3.Op, error) {
		if s.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: s.RuntimeStatus}
		}
		s.RuntimeStatus = StatusTerminated
		s.Output = out
		return []clientv3.Op{clientv3.OpDelete(c.keys.Inbox(id, s.ExecutionID), clientv3.WithPrefix())}, nil
	})
}

// Suspend pauses an active instance: its holder stops and releases it, and
// no node runs it until Resume.
//
// The suspension is recorded in the execution's history (as
// ExecutionSuspended, with the reason) when a holder next runs it. Events
// raised while suspended are kept and delivered after Resume.
func (c *Client) Suspend(ctx context.Context, id, reason string) (*Status, error) {
	return c.update(ctx, id, func(s *Status) ([]clientv3.Op, error) {
		if s.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: s.RuntimeStatus}
		}
		if s.RuntimeStatus == StatusSuspended {
			return nil, errUnchanged
		}
		s.RuntimeStatus = StatusSuspended
		return []clientv3.Op{c.inboxOp(s, HistoryEvent{EventType: EventExecutionSuspended, Reason: reason})}, nil
	})
}

// Resume lets a suspended instance run again. Resuming an instance that is
// not suspended changes nothing.
func (c *Client) Resume(ctx context.Context, id, reason string) (*Status, error) {
	return c.update(ctx, id, func(s *Status) ([]clientv3.Op, error) {
		if s.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: s.RuntimeStatus}
		}
		if s.RuntimeStatus != StatusSuspended {
			return nil, errUnchanged
		}
		s.RuntimeStatus = StatusRunning
		return []clientv3.Op{c.inboxOp(s, HistoryEvent{EventType: EventExecutionResumed, Reason: reason})}, nil
	})
}

// Restart starts a new execution of an instance with its original input,
// terminating the current one if it is active.
func (c *Client) Restart(ctx context.Context, id string) (*StartResult, error) {
	cur, err := c.Status(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.Start(ctx, cur.Name, StartOptions{
		InstanceID: id, Input: cur.Input,
		ConflictPolicy: ConflictTerminateExisting, ReusePolicy: ReuseAllow,
	})
}

// RaiseEvent stores an external event for the instance's current execution
// and returns after the commit. The holder delivers it to the orchestration
// exactly once, in arrival order; an event raised before the orchestration
// waits for it is buffered. A terminal instance returns *TerminalError.
func (c *Client) RaiseEvent(ctx context.Context, id, name string, data json.RawMessage) error {
	if name == "" {
		return &ValidationError{Field: "event name", Reason: "it is empty"}
	}
	data, err := c.checkJSON("event data", data)
	if err != nil {
		return err
	}
	key := c.keys.Instance(id)
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		cur, rev, err := c.read(ctx, id)
		if err != nil {
			return err
		}
		if cur.RuntimeStatus.Terminal() {
			return &TerminalError{InstanceID: id, Status: cur.RuntimeStatus}
		}
		resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(c.inboxOp(cur, HistoryEvent{EventType: EventEventRaised, Name: name, Input: data})).Commit()
		if err != nil {
			return storeErr(err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%w: '%s' kept changing while the event was raised; try again", ErrUnavailable, id)
}

// Purge deletes a terminal instance and everything stored for it.
func (c *Client) Purge(ctx context.Context, id string) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	key := c.keys.Instance(id)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		cur, rev, err := c.read(ctx, id)
		if err != nil {
			return err
		}
		if cur.RuntimeStatus.Active() {
			return fmt.Errorf("%w: '%s' is %s; terminate it before purging", ErrInstanceActive, id, cur.RuntimeStatus)
		}
		resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpDelete(key), clientv3.OpDelete(c.keys.Handoff(id)),
				clientv3.OpDelete(c.keys.HistoryPrefix(id), clientv3.WithPrefix()),
				clientv3.OpDelete(c.keys.InboxPrefix(id), clientv3.WithPrefix())).Commit()
		if err != nil {
			return storeErr(err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%w: '%s' kept changing; try again", ErrUnavailable, id)
}
