package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultMaxPayload is the default limit of input, output, custom status and
// event data: 256 KiB.
const DefaultMaxPayload = 256 << 10

// ClientConfig configures a Client.
type ClientConfig struct {
	// Prefix is the root of every key. Defaults to "/soloist/".
	Prefix string
	// MaxPayload limits input, output, custom status and event data in bytes.
	// Defaults to DefaultMaxPayload. It must fit Limits (CheckLimits).
	MaxPayload int
	// Limits are the etcd server's request limits. Default to etcd's defaults.
	Limits Limits
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider makes the spans of the runs of executions opened
	// through the client (their activities, sub-orchestration starts and
	// final writes) and of the HTTP API built on it. Defaults to a no-op
	// provider: nothing is recorded, though a trace context given to a
	// start still travels with the instance to its functions. The global
	// provider is never used.
	TracerProvider trace.TracerProvider
}

// Client starts, reads and controls instances in etcd. It is safe for
// concurrent use. Every state change is one etcd transaction with a compare
// on the record's revision, so concurrent callers never overwrite each other.
type Client struct {
	etcd       *clientv3.Client
	keys       Keys
	maxPayload int
	limits     Limits
	log        *slog.Logger
	tp         trace.TracerProvider
	tracer     trace.Tracer
}

// NewClient returns a Client on an etcd connection it does not own.
func NewClient(etcd *clientv3.Client, cfg ClientConfig) *Client {
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	return &Client{etcd: etcd, keys: NewKeys(cfg.Prefix), maxPayload: cfg.MaxPayload, limits: cfg.Limits.withDefaults(), log: cfg.Logger,
		tp: cfg.TracerProvider, tracer: tracerOf(cfg.TracerProvider)}
}

// TracerProvider returns the provider the client traces with
// (ClientConfig.TracerProvider, or a no-op one).
func (c *Client) TracerProvider() trace.TracerProvider { return c.tp }

// Keys returns the key layout the client uses.
func (c *Client) Keys() Keys { return c.keys }

// MaxPayload returns the payload limit in bytes.
func (c *Client) MaxPayload() int { return c.maxPayload }

// Limits returns the etcd limits the client cuts its transactions to.
func (c *Client) Limits() Limits { return c.limits }

// Etcd returns the client's etcd connection.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

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
	// IgnoreStatuses are, with ReusePolicy ReuseIgnore, the terminal
	// statuses in which an existing instance is kept and returned instead
	// of starting (Durable Task's operationStatus list with the IGNORE
	// action); empty means all three. Only terminal statuses are accepted,
	// and only with ReuseIgnore: an active ID is the ConflictPolicy's.
	IgnoreStatuses []RuntimeStatus
	// StartAt, if after now, keeps the instance Pending until then: no node
	// runs it before, across restarts and takeovers (the time is in its
	// record).
	StartAt time.Time
	// Tags are string tags of the instance: at most 16, keys of 1 to 64
	// bytes, values of at most 256; List filters by them.
	Tags map[string]string
	// Version is the orchestration version to run; nodes run only the
	// versions their registry has. Leave it empty for an unversioned
	// orchestration, or give the registry's DefaultVersion.
	Version string
	// Trace is the W3C trace context the instance's runs continue: they
	// are children of it, on whichever node runs them and however long
	// after the start. The HTTP start passes its server span's context;
	// zero starts no trace (a run then is the root of its own).
	Trace TraceContext

	parent *ParentRef
}

// maxTags bounds the tags of an instance.
const maxTags = 16

// ValidateTags checks tags against the limits of StartOptions.Tags.
func ValidateTags(tags map[string]string) error {
	if len(tags) > maxTags {
		return &ValidationError{Field: "tags", Reason: fmt.Sprintf("there are %d; the limit is %d", len(tags), maxTags)}
	}
	for k, v := range tags {
		switch {
		case k == "" || len(k) > 64:
			return &ValidationError{Field: "tag key", Value: k, Reason: "use 1 to 64 bytes"}
		case len(v) > 256:
			return &ValidationError{Field: "tag " + k, Value: v, Reason: "the value is longer than 256 bytes"}
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return &ValidationError{Field: "tag " + k, Reason: "keys and values must be valid UTF-8"}
		}
		for _, r := range k + v {
			if r < ' ' || r == 0x7f {
				return &ValidationError{Field: "tag " + k, Reason: "keys and values must not contain control characters"}
			}
		}
	}
	return nil
}

// StartResult is what Start did.
type StartResult struct {
	// Status is the new instance, or the existing one for
	// ConflictUseExisting and ReuseIgnore.
	Status *Status
	// Started is false when ConflictUseExisting or ReuseIgnore returned an
	// existing instance: nothing was written.
	Started bool
	// Replaced is the execution a start replaced (terminateExisting, or a
	// terminal execution reused), empty if none.
	Replaced string
	// Revision is the etcd revision of the start's commit; 0 when nothing
	// was written, or when the start learned only by reading that its
	// commit (whose answer was lost) applied.
	Revision int64
	// Extra are the responses, in order, of the caller's ops of StartIf in
	// the start's commit; nil when Revision is 0.
	Extra []*pb.ResponseOp
}

// Start creates the instance record of a new execution in one etcd
// transaction, only if the policies allow it, and returns only after the
// commit. A refusal is an *ExistsError (errors.Is ErrInstanceExists). For a
// new ID the start is one round trip: If(absent) Then(create) Else(read).
// If the outcome of the commit is unknown (a timeout), Start reads the
// record until it knows, for as long as ctx allows: it reports success only
// if its execution is there, decides again if the record changed in a way
// that shows its write can no longer apply, and otherwise returns an
// ErrUnavailable that says the outcome is unknown.
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
// decides anew on the record the failed transaction read. If a caller's
// compare fails, it returns ErrConditionFailed and writes nothing. A refusal
// by the policies (*ExistsError) and ConflictUseExisting are decided on the
// record alone, before cmps are evaluated; neither writes the caller's ops.
func (c *Client) StartIf(ctx context.Context, name string, opts StartOptions, cmps []clientv3.Cmp, ops func(rec *Record) []clientv3.Op) (*StartResult, error) {
	return c.startIf(ctx, name, opts, cmps, ops, nil, 0)
}

// startIf is StartIf deciding first on cur at rev (nil: assume a new ID),
// as a caller that has just read the record knows it.
func (c *Client) startIf(ctx context.Context, name string, opts StartOptions, cmps []clientv3.Cmp, ops func(rec *Record) []clientv3.Op,
	cur *Record, rev int64) (*StartResult, error) {
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
	if err := ValidateIgnoreStatuses(rp, opts.IgnoreStatuses); err != nil {
		return nil, err
	}
	input, err := c.checkJSON("input", opts.Input)
	if err != nil {
		return nil, err
	}
	if err := ValidateTags(opts.Tags); err != nil {
		return nil, err
	}
	if len(opts.Version) > 64 {
		return nil, &ValidationError{Field: "version", Value: opts.Version, Reason: "use at most 64 bytes"}
	}
	if err := opts.Trace.validate(); err != nil {
		return nil, err
	}
	id := opts.InstanceID
	key := c.keys.Instance(id)
	t := now()
	rec := &Record{
		Name: name, InstanceID: id, RuntimeStatus: StatusPending,
		CreatedTime: t, LastUpdatedTime: t, ExecutionID: NewID(),
		Version: opts.Version, Tags: opts.Tags, Parent: opts.parent,
		TraceParent: opts.Trace.Parent, TraceState: opts.Trace.State,
	}
	if at := opts.StartAt.UTC().Truncate(time.Millisecond); at.After(t) {
		rec.ScheduledStartTime = &at
	}
	var extra []clientv3.Op
	if ops != nil {
		cp := *rec
		extra = ops(&cp)
	}
	started := func(replaced string) *StartResult {
		st := rec.status()
		st.Input = input
		return &StartResult{Status: st, Started: true, Replaced: replaced}
	}
	// The first attempt decides on what the caller knows (by default: a
	// new ID); a failed compare returns the record, and every later attempt
	// decides on what the last one read.
	encoded := rec.encode()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		policy := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		write := []clientv3.Op{clientv3.OpPut(key, encoded)}
		if !isNull(input) {
			write = append(write, clientv3.OpPut(c.keys.Input(id), string(input)))
		}
		replaced := ""
		if cur != nil {
			switch {
			case cur.RuntimeStatus.Active():
				switch cp {
				case ConflictFail:
					return nil, &ExistsError{Status: cur.status(), Reason: "conflictPolicy=fail"}
				case ConflictUseExisting:
					st, err := c.Status(ctx, id)
					if errors.Is(err, ErrInstanceNotFound) {
						cur, rev = nil, 0 // purged in between: a new start
						continue
					}
					if err != nil {
						return nil, err
					}
					return &StartResult{Status: st}, nil
				}
				// terminateExisting: replace the record in one transaction;
				// every fenced write of the old holder then fails, and it
				// releases its owners key when it sees the change.
			case rp == ReuseIgnore && ignores(opts.IgnoreStatuses, cur.RuntimeStatus):
				// Nothing is written: return the instance the transaction
				// read, if it is still that execution.
				st, err := c.Status(ctx, id)
				if errors.Is(err, ErrInstanceNotFound) {
					cur, rev = nil, 0 // purged in between: a new start
					continue
				}
				if err != nil {
					return nil, err
				}
				if st.ExecutionID != cur.ExecutionID {
					if cur, rev, err = c.read(ctx, id); errors.Is(err, ErrInstanceNotFound) {
						cur, rev = nil, 0
					} else if err != nil {
						return nil, err
					}
					continue // replaced in between: decide on the new one
				}
				return &StartResult{Status: st}, nil
			case !rp.allows(cur.RuntimeStatus):
				return nil, &ExistsError{Status: cur.status(), Reason: "reusePolicy=" + string(rp)}
			}
			replaced = cur.ExecutionID
			policy = clientv3.Compare(clientv3.ModRevision(key), "=", rev)
			write = c.replaceOps(cur, id, encoded, input)
		}
		elseOps := []clientv3.Op{clientv3.OpGet(key)}
		if len(cmps) > 0 {
			// The caller's compares alone, evaluated when the start's failed:
			// the nested result says whose compare did not hold.
			elseOps = append(elseOps, clientv3.OpTxn(cmps, nil, nil))
		}
		resp, err := c.etcd.Txn(ctx).If(append([]clientv3.Cmp{policy}, cmps...)...).
			Then(append(write, extra...)...).Else(elseOps...).Commit()
		if err != nil {
			err = storeErr(err)
			if errors.Is(err, ErrNoSpace) {
				// etcd answers NOSPACE both for a write it refused (its
				// alarm was raised) and for one it applied and found over
				// the quota while applying (which raises the alarm). The
				// answer comes after the apply either way, so one read
				// tells which.
				got, _, rerr := c.read(ctx, id)
				switch {
				case rerr == nil && got.ExecutionID == rec.ExecutionID:
					return started(replaced), nil
				case errors.Is(rerr, ErrUnavailable) || errors.Is(rerr, ErrStoreDenied): // not read; absent or corrupt is not ours
					return nil, fmt.Errorf("%w: the outcome of the start of '%s' is unknown (%v, and reading it failed: %v); read its status before retrying",
						ErrUnavailable, id, err, rerr)
				}
			}
			if IsPermanent(err) {
				return nil, c.startRefused(id, err)
			}
			ok, next, nextRev, rerr := c.reconcileStart(ctx, rec, cur, rev, err)
			if rerr != nil {
				return nil, rerr
			}
			if ok {
				return started(replaced), nil
			}
			cur, rev = next, nextRev
			continue
		}
		if resp.Succeeded {
			res := started(replaced)
			res.Revision, res.Extra = resp.Header.Revision, resp.Responses[len(write):]
			return res, nil
		}
		if len(cmps) > 0 {
			if nested := resp.Responses[1].GetResponseTxn(); nested != nil && !nested.Succeeded {
				return nil, ErrConditionFailed
			}
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			cur, rev = nil, 0 // purged in between: a new start
			continue
		}
		if cur, err = ParseRecord(kvs[0].Value); err != nil {
			return nil, fmt.Errorf("%w; the record at %s must be repaired or purged before '%s' can start", err, key, id)
		}
		rev = kvs[0].ModRevision
	}
	return nil, fmt.Errorf("%w: start of '%s' lost %d races in a row; try again", ErrUnavailable, id, maxAttempts)
}

// startRefused explains a start etcd refused for good.
func (c *Client) startRefused(id string, err error) error {
	if errors.Is(err, ErrStoreLimit) {
		return fmt.Errorf("%w: the start of '%s' is larger than etcd accepts (%d bytes, %d operations): %w",
			ErrPayloadTooLarge, id, c.limits.RequestBytes, c.limits.TxnOps, err)
	}
	return fmt.Errorf("start of '%s' was not written: %w", id, err)
}

// inputOp writes an execution's input over whatever the instance's input
// key holds: a null input is no key (readers take a missing payload key for
// null), which saves the start of an instance without input a write.
func (c *Client) inputOp(id string, input json.RawMessage) clientv3.Op {
	if isNull(input) {
		return clientv3.OpDelete(c.keys.Input(id))
	}
	return clientv3.OpPut(c.keys.Input(id), string(input))
}

// isNull reports whether v is the JSON null.
func isNull(v json.RawMessage) bool { return string(v) == "null" }

// replaceOps puts a new execution's record (encoded) and input over an old
// execution and clears what belonged to the old one. The owners key is left to its
// holder, which releases it when it sees the change; until then nobody can
// take the new execution, so the old one's effects end before the new
// one's begin.
func (c *Client) replaceOps(old *Record, id, encoded string, input json.RawMessage) []clientv3.Op {
	ops := []clientv3.Op{
		clientv3.OpPut(c.keys.Instance(id), encoded),
		c.inputOp(id, input),
		clientv3.OpDelete(c.keys.Output(id)),
		clientv3.OpDelete(c.keys.CustomStatus(id)),
		clientv3.OpDelete(c.keys.FailureDetails(id)),
		clientv3.OpDelete(c.keys.HistoryPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.InboxPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.BlobPrefix(id), clientv3.WithPrefix()),
		c.taskQueueOps(id),
	}
	if old.RuntimeStatus.Terminal() {
		ops = append(ops, clientv3.OpDelete(c.keys.FinishedEntry(old.LastUpdatedTime, id)))
	}
	return ops
}

// reconcileStart finds out what a start whose commit has an unknown outcome
// did, reading the record until it knows or ctx ends. It reports ok if the
// start's execution is there; otherwise, if the record changed from what
// the start decided on (so the start's compare can never hold), it returns
// the record to decide on again.
func (c *Client) reconcileStart(ctx context.Context, rec, decided *Record, decidedRev int64, cause error) (ok bool, cur *Record, rev int64, err error) {
	key := c.keys.Instance(rec.InstanceID)
	b := newRetry()
	for {
		resp, err := c.etcd.Get(ctx, key)
		if err == nil {
			if len(resp.Kvs) == 0 {
				if decided != nil {
					return false, nil, 0, nil // purged: decide again
				}
			} else {
				kv := resp.Kvs[0]
				got, perr := ParseRecord(kv.Value)
				if perr != nil {
					return false, nil, 0, perr
				}
				if got.ExecutionID == rec.ExecutionID {
					return true, nil, 0, nil
				}
				if decided == nil || kv.ModRevision != decidedRev {
					return false, got, kv.ModRevision, nil
				}
			}
		}
		if sleep(ctx, min(b.NextBackOff(), time.Second)) != nil {
			return false, nil, 0, fmt.Errorf("%w: the outcome of the start of '%s' is unknown (%v); read its status before retrying",
				ErrUnavailable, rec.InstanceID, cause)
		}
	}
}

// checkJSON validates a JSON payload: valid JSON in valid UTF-8, within the
// size limit.
func (c *Client) checkJSON(field string, v json.RawMessage) (json.RawMessage, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return jsonNull, nil
	}
	if len(v) > c.maxPayload {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d bytes", ErrPayloadTooLarge, field, len(v), c.maxPayload)
	}
	if !utf8.Valid(v) {
		return nil, &ValidationError{Field: field, Reason: "it is not valid UTF-8; send JSON text in UTF-8"}
	}
	if !json.Valid(v) {
		return nil, &ValidationError{Field: field, Reason: "it is not valid JSON"}
	}
	return v, nil
}

// read returns the record and its ModRevision.
func (c *Client) read(ctx context.Context, id string) (*Record, int64, error) {
	resp, err := c.etcd.Get(ctx, c.keys.Instance(id))
	if err != nil {
		return nil, 0, storeErr(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	rec, err := ParseRecord(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return rec, resp.Kvs[0].ModRevision, nil
}

// Status reads an instance, its payloads and its current holder in one
// etcd transaction. Node and FencingToken come from the owners key when it
// belongs to the record's execution.
func (c *Client) Status(ctx context.Context, id string) (*Status, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	resp, err := c.etcd.Txn(ctx).Then(
		clientv3.OpGet(c.keys.Instance(id)),
		clientv3.OpGet(c.keys.Owner(id)),
		clientv3.OpGet(c.keys.Input(id)),
		clientv3.OpGet(c.keys.Output(id)),
		clientv3.OpGet(c.keys.CustomStatus(id)),
		clientv3.OpGet(c.keys.FailureDetails(id)),
	).Commit()
	if err != nil {
		return nil, storeErr(err)
	}
	recs := resp.Responses[0].GetResponseRange().Kvs
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	rec, err := ParseRecord(recs[0].Value)
	if err != nil {
		return nil, err
	}
	st := rec.status()
	st.Input = valueOr(resp.Responses[2].GetResponseRange().Kvs)
	st.Output = valueOr(resp.Responses[3].GetResponseRange().Kvs)
	st.CustomStatus = valueOr(resp.Responses[4].GetResponseRange().Kvs)
	if kvs := resp.Responses[5].GetResponseRange().Kvs; len(kvs) > 0 && st.RuntimeStatus == StatusFailed {
		var fd FailureDetails
		if json.Unmarshal(kvs[0].Value, &fd) == nil {
			st.FailureDetails = &fd
		}
	}
	fillHolder(st, resp.Responses[1].GetResponseRange().Kvs)
	if st.RuntimeStatus.Runnable() && st.Node == "" {
		st.Unrunnable = c.unrunnable(ctx, rec)
	}
	return st, nil
}

// unrunnable says why no node can run rec, or "" if some live node can (or
// the node keys cannot be read).
func (c *Client) unrunnable(ctx context.Context, rec *Record) string {
	resp, err := c.etcd.Get(ctx, c.keys.Nodes(), clientv3.WithPrefix())
	if err != nil {
		return ""
	}
	for _, kv := range resp.Kvs {
		var n NodeInfo
		if json.Unmarshal(kv.Value, &n) != nil || n.Functions == nil && n.Role != "api" {
			return "" // a node that does not say what it runs: assume it can
		}
		if n.Runs(rec.Name, rec.Version) {
			return ""
		}
	}
	if rec.Version != "" {
		return fmt.Sprintf("no live node registers orchestration '%s' version '%s' (%d nodes live); start a node that has it", rec.Name, rec.Version, len(resp.Kvs))
	}
	return fmt.Sprintf("no live node registers orchestration '%s' (%d nodes live); start a node that has it", rec.Name, len(resp.Kvs))
}

func valueOr(kvs []*mvccpb.KeyValue) json.RawMessage {
	if len(kvs) == 0 || len(kvs[0].Value) == 0 {
		return jsonNull
	}
	return json.RawMessage(kvs[0].Value)
}

// fillHolder sets Node and FencingToken from an owners key that holds the
// status's execution.
func fillHolder(st *Status, owners []*mvccpb.KeyValue) {
	if len(owners) == 0 {
		return
	}
	var o Owner
	if json.Unmarshal(owners[0].Value, &o) == nil && o.ExecutionID == st.ExecutionID {
		st.Node = o.Node
		st.FencingToken = owners[0].CreateRevision
	}
}

// update applies change to the record of id in a compare-and-swap loop and
// writes it with the ops change returns. change returns an error to refuse
// (nothing is written), or errUnchanged to write nothing and succeed. A
// failed compare returns the current record, so only the first attempt
// reads on its own.
func (c *Client) update(ctx context.Context, id string, change func(*Record) ([]clientv3.Op, error)) (*Record, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	key := c.keys.Instance(id)
	cur, rev, err := c.read(ctx, id)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		next := *cur
		next.LastUpdatedTime = now()
		ops, err := change(&next)
		if errors.Is(err, errUnchanged) {
			return cur, nil
		}
		if err != nil {
			return nil, err
		}
		resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(append([]clientv3.Op{clientv3.OpPut(key, next.encode())}, ops...)...).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return nil, storeErr(err)
		}
		if resp.Succeeded {
			return &next, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
		}
		if cur, err = ParseRecord(kvs[0].Value); err != nil {
			return nil, err
		}
		rev = kvs[0].ModRevision
	}
	return nil, fmt.Errorf("%w: '%s' changed %d times while we tried to update it; try again", ErrUnavailable, id, maxAttempts)
}

// errUnchanged is returned by an update's change to write nothing.
var errUnchanged = errors.New("orchestrator: unchanged")

// InboxEntry is an event waiting in an instance's inbox.
type InboxEntry struct {
	// Key is the inbox key.
	Key string
	// CreateRevision orders the entries: they are delivered in it.
	CreateRevision int64
	// Event is the raised event (EventRaised) or a suspend or resume mark
	// (ExecutionSuspended, ExecutionResumed).
	Event HistoryEvent
}

// ParseInboxEntry decodes an inbox key's value.
func ParseInboxEntry(key string, createRevision int64, value []byte) InboxEntry {
	var ev HistoryEvent
	if err := json.Unmarshal(value, &ev); err != nil {
		// Only a hand-written value gets here: deliver it as what it is.
		ev = HistoryEvent{EventType: EventEventRaised, Name: "corrupt-inbox-entry", Input: jsonNull}
	}
	return InboxEntry{Key: key, CreateRevision: createRevision, Event: ev}
}

// inboxOp puts an event into id's inbox.
func (c *Client) inboxOp(id string, ev HistoryEvent) (clientv3.Op, string) {
	ev.Timestamp = now()
	b, _ := json.Marshal(ev)
	key := c.keys.InboxPrefix(id) + NewID()
	return clientv3.OpPut(key, string(b)), key
}

func reasonJSON(reason string) json.RawMessage {
	b, _ := json.Marshal(reason)
	return b
}

// terminalOps are the writes that go with every move of a record to a
// terminal status: the output (and failure details), the end of the inbox,
// the retention index.
func (c *Client) terminalOps(rec *Record, output json.RawMessage, failure *FailureDetails) []clientv3.Op {
	id := rec.InstanceID
	ops := []clientv3.Op{
		clientv3.OpPut(c.keys.Output(id), string(orNull(output))),
		clientv3.OpDelete(c.keys.InboxPrefix(id), clientv3.WithPrefix()),
		clientv3.OpPut(c.keys.FinishedEntry(rec.LastUpdatedTime, id), rec.ExecutionID),
		c.taskQueueOps(id),
	}
	if failure != nil {
		b, _ := json.Marshal(failure)
		ops = append(ops, clientv3.OpPut(c.keys.FailureDetails(id), string(b)))
	}
	return ops
}

// Terminate ends an active instance with status Terminated and the reason as
// output. Its holder sees the change, stops its run at once and releases
// the instance.
func (c *Client) Terminate(ctx context.Context, id, reason string) (*Status, error) {
	out, err := c.checkJSON("reason", reasonJSON(reason))
	if err != nil {
		return nil, err
	}
	rec, err := c.update(ctx, id, func(r *Record) ([]clientv3.Op, error) {
		if r.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: r.RuntimeStatus}
		}
		r.RuntimeStatus = StatusTerminated
		return append(c.terminalOps(r, out, nil), c.parentOps(r, StatusTerminated, out, nil)...), nil
	})
	if err != nil {
		return nil, err
	}
	st := rec.status()
	st.Output = out
	return st, nil
}

// Suspend pauses an active instance: its holder stops and releases it, and
// no node runs it until Resume.
//
// The suspension is recorded in the execution's history (as
// ExecutionSuspended, with the reason) when a holder next runs it. Events
// raised while suspended are kept and delivered after Resume.
func (c *Client) Suspend(ctx context.Context, id, reason string) (*Status, error) {
	rec, err := c.update(ctx, id, func(r *Record) ([]clientv3.Op, error) {
		if r.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: r.RuntimeStatus}
		}
		if r.RuntimeStatus == StatusSuspended {
			return nil, errUnchanged
		}
		r.RuntimeStatus = StatusSuspended
		op, _ := c.inboxOp(id, HistoryEvent{EventType: EventExecutionSuspended, Reason: reason})
		return []clientv3.Op{op}, nil
	})
	if err != nil {
		return nil, err
	}
	return rec.status(), nil
}

// Resume lets a suspended instance run again. Resuming an instance that is
// not suspended changes nothing.
func (c *Client) Resume(ctx context.Context, id, reason string) (*Status, error) {
	rec, err := c.update(ctx, id, func(r *Record) ([]clientv3.Op, error) {
		if r.RuntimeStatus.Terminal() {
			return nil, &TerminalError{InstanceID: id, Status: r.RuntimeStatus}
		}
		if r.RuntimeStatus != StatusSuspended {
			return nil, errUnchanged
		}
		r.RuntimeStatus = StatusRunning
		op, _ := c.inboxOp(id, HistoryEvent{EventType: EventExecutionResumed, Reason: reason})
		return []clientv3.Op{op}, nil
	})
	if err != nil {
		return nil, err
	}
	return rec.status(), nil
}

// RestartOptions say how Restart restarts.
type RestartOptions struct {
	// NewInstanceID starts a new instance with a generated ID (as Durable
	// Functions' restartWithNewInstanceId, its default); otherwise the
	// instance restarts under its own ID with a new execution.
	NewInstanceID bool
	// TerminateExisting lets a restart under the same ID terminate the
	// instance if it is active; without it an active instance refuses the
	// restart (an *ExistsError, HTTP 409).
	TerminateExisting bool
}

// Restart starts the orchestration of an instance again with its original
// input, version and tags: as a new instance, or as a new execution of the
// same ID (see RestartOptions).
func (c *Client) Restart(ctx context.Context, id string, opts RestartOptions) (*StartResult, error) {
	cur, err := c.Status(ctx, id)
	if err != nil {
		return nil, err
	}
	so := StartOptions{Input: cur.Input, Version: cur.Version, Tags: cur.Tags, ReusePolicy: ReuseAllow}
	if opts.NewInstanceID {
		return c.Start(ctx, cur.Name, so)
	}
	so.InstanceID = id
	so.ConflictPolicy = ConflictFail
	if opts.TerminateExisting {
		so.ConflictPolicy = ConflictTerminateExisting
	}
	return c.Start(ctx, cur.Name, so)
}

// ErrNotRewindable means Rewind was asked for an instance that is not
// Failed.
var ErrNotRewindable = errors.New("orchestrator: only a Failed instance can be rewound")

// Rewind retries a Failed instance from its first failure, keeping the work
// that completed before it: a new execution gets the history up to (not
// including) the first failed task, the failed task and whatever followed
// run again live, and the instance is Running again (ExecutionRewound,
// with the reason, marks the point in the history). Sub-orchestrations that
// failed are started again, not rewound. The new history is written before
// one compare-and-swap switches the record to it, so a racing change wins
// or the rewind does, whole.
func (c *Client) Rewind(ctx context.Context, id, reason string) (*Status, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	cur, rev, err := c.read(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case cur.RuntimeStatus.Terminal() && cur.RuntimeStatus != StatusFailed:
		return nil, fmt.Errorf("%w: %w", ErrNotRewindable, &TerminalError{InstanceID: id, Status: cur.RuntimeStatus})
	case cur.RuntimeStatus != StatusFailed:
		return nil, fmt.Errorf("%w: '%s' is %s", ErrNotRewindable, id, cur.RuntimeStatus)
	}
	hist, err := c.History(ctx, id, cur.ExecutionID)
	if err != nil {
		return nil, err
	}
	var keep []HistoryEvent
	for _, ev := range hist {
		if ev.EventType == EventTaskFailed || ev.EventType == EventSubOrchestrationInstanceFailed || ev.EventType == EventExecutionCompleted {
			break
		}
		ev.InboxKey = "" // consumed before; its inbox key is gone
		keep = append(keep, ev)
	}
	keep = append(keep, HistoryEvent{EventType: EventExecutionRewound, Timestamp: now(), Reason: reason})
	for i := range keep {
		keep[i].Seq = i
	}
	newExec := NewID()
	x := &Execution{c: c, id: id, rec: cur}
	parts, err := x.plan(step{events: keep, history: c.keys.History(id, newExec), blobs: c.keys.Blobs(id, newExec)})
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		if _, err := c.etcd.Txn(ctx).Then(p.ops...).Commit(); err != nil {
			return nil, storeErr(err)
		}
	}
	next := *cur
	next.ExecutionID, next.RuntimeStatus, next.LastUpdatedTime = newExec, StatusRunning, now()
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(c.keys.Instance(id)), "=", rev)).Then(
		clientv3.OpPut(c.keys.Instance(id), next.encode()),
		clientv3.OpDelete(c.keys.History(id, cur.ExecutionID), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.Blobs(id, cur.ExecutionID), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.Output(id)),
		clientv3.OpDelete(c.keys.FailureDetails(id)),
		clientv3.OpDelete(c.keys.FinishedEntry(cur.LastUpdatedTime, id)),
	).Commit()
	if err != nil {
		return nil, storeErr(err)
	}
	if !resp.Succeeded {
		_, _ = c.etcd.Delete(ctx, c.keys.History(id, newExec), clientv3.WithPrefix())
		_, _ = c.etcd.Delete(ctx, c.keys.Blobs(id, newExec), clientv3.WithPrefix())
		return nil, fmt.Errorf("%w: '%s' changed while it was rewound; read its status and try again", ErrUnavailable, id)
	}
	return next.status(), nil
}

// RaiseEvent stores an external event in the instance's inbox and returns
// after the commit: one etcd transaction that writes the event and reads
// the record at the same revision, with no compare on the record, so a
// busy holder never makes it retry. The holder delivers it to the
// orchestration exactly once, in arrival order; an event raised before the
// orchestration waits for it is buffered. A terminal instance returns
// *TerminalError (the event, which nobody will read, is removed again; a
// restart or purge removes it too).
func (c *Client) RaiseEvent(ctx context.Context, id, name string, data json.RawMessage) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	if name == "" {
		return &ValidationError{Field: "event name", Reason: "it is empty"}
	}
	if !utf8.ValidString(name) {
		return &ValidationError{Field: "event name", Reason: "it is not valid UTF-8"}
	}
	data, err := c.checkJSON("event data", data)
	if err != nil {
		return err
	}
	key := c.keys.Instance(id)
	put, inboxKey := c.inboxOp(id, HistoryEvent{EventType: EventEventRaised, Name: name, Input: data})
	resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(put, clientv3.OpGet(key)).Commit()
	if err != nil {
		return storeErr(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
	}
	rec, err := ParseRecord(kvs[0].Value)
	if err != nil {
		return err
	}
	if rec.RuntimeStatus.Terminal() {
		// Best effort: nobody consumes it, and a restart deletes it anyway.
		_, _ = c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(inboxKey), "=", resp.Header.Revision)).
			Then(clientv3.OpDelete(inboxKey)).Commit()
		return &TerminalError{InstanceID: id, Status: rec.RuntimeStatus}
	}
	return nil
}

// purgeOps delete a terminal instance and everything stored for it.
func (c *Client) purgeOps(rec *Record) []clientv3.Op {
	id := rec.InstanceID
	return []clientv3.Op{
		clientv3.OpDelete(c.keys.Instance(id)),
		clientv3.OpDelete(c.keys.PayloadPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.HistoryPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.InboxPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.BlobPrefix(id), clientv3.WithPrefix()),
		clientv3.OpDelete(c.keys.FinishedEntry(rec.LastUpdatedTime, id)),
		c.taskQueueOps(id),
	}
}

// Purge deletes a terminal instance and everything stored for it.
func (c *Client) Purge(ctx context.Context, id string) error {
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	key := c.keys.Instance(id)
	cur, rev, err := c.read(ctx, id)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if cur.RuntimeStatus.Active() {
			return fmt.Errorf("%w: '%s' is %s; terminate it before purging", ErrInstanceActive, id, cur.RuntimeStatus)
		}
		resp, err := c.etcd.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(c.purgeOps(cur)...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return storeErr(err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return fmt.Errorf("%w: '%s'", ErrInstanceNotFound, id)
		}
		if cur, err = ParseRecord(kvs[0].Value); err != nil {
			return err
		}
		rev = kvs[0].ModRevision
	}
	return fmt.Errorf("%w: '%s' kept changing; try again", ErrUnavailable, id)
}
