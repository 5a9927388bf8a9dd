package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim says what to take.
type Claim struct {
	// Key is the owners key: created only if absent, on the session lease.
	// It must be under the session's Prefix.
	Key string
	// Value is stored in the owners key.
	Value string
	// Conditions, if any, must also hold for the key to be created (for
	// example that the record the holder will work on has not changed since
	// it decided to campaign). If they fail Acquire returns ErrConditionFailed.
	Conditions []clientv3.Cmp
	// Reads are read in the acquiring transaction, after the key is taken,
	// so that a new holder has what it needs in one round trip
	// (Holding.Reads).
	Reads []clientv3.Op
	// HandoffFrom, if set, is the handoff marker key of the node that last
	// held the key; it is read in the same transaction (Holding.Handoff).
	HandoffFrom string
}

// HeldError is returned by Acquire when another holder has the key.
type HeldError struct {
	Key   string
	Value []byte // the current holder's value
}

func (e *HeldError) Error() string { return fmt.Sprintf("lease: %s is already held", e.Key) }

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Handoff is a draining node's marker: the node that holds an instance next
// reads it to learn that the instance was handed over, not lost.
type Handoff struct {
	Node         string    `json:"node"`
	Reason       string    `json:"reason"`
	ReleasedTime time.Time `json:"releasedTime"`
}

// Holding is a held owners key. Its token is the key's CreateRevision: it
// grows with every new holder. It ends, with the reason as its Err, as soon
// as it may be lost: the session ended or passed its safe-until deadline,
// the key was deleted or replaced (the session's watch sees an operator's
// etcdctl del or lease revoke within moments), the holder reported a
// fenced-out write with Lose, or it released the key. Its end is told
// through Done, Context and AfterEnd; a holding costs none of them until
// asked (a node holds thousands, most of them idle).
type Holding struct {
	s       *Session
	key     string
	value   string
	token   int64
	rev     int64
	reads   []*pb.ResponseOp
	handoff *Handoff

	// Guarded by s.mu:
	err   error        // nil while held
	hooks []*endHook   // AfterEnd's, called once at the end
	tell  *holdingTell // made by Done or Context
}

// holdingTell is what Done and Context made, ended with the holding.
type holdingTell struct {
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// endHook is one AfterEnd call's function.
type endHook struct{ f func(error) }

// Acquire tries once to take claim.Key. It returns a *HeldError if another
// holder has it, ErrConditionFailed if a condition failed. If the commit's
// outcome is unknown (a timeout), it reads the key until it knows, for as
// long as ctx allows, and then returns ErrOutcomeUnknown: a key of this
// session is never left behind untracked, because the session deletes any
// key on its lease that no holding tracks.
func (s *Session) Acquire(ctx context.Context, claim Claim) (*Holding, error) {
	r := s.AcquireMany(ctx, []Claim{claim})[0]
	return r.Holding, r.Err
}

// Acquired is the outcome of one claim of AcquireMany.
type Acquired struct {
	Holding *Holding
	Err     error
}

// AcquireMany tries once to take every claim, as Acquire does for one, in
// as few transactions as the batch allows: each claim is a nested
// If(free, conditions) Then(create, reads) Else(read the key) of one
// transaction, so a node taking over many instances at once (a peer's
// drain, a dead holder's lease) pays one round trip per batch. Claims must
// have distinct keys.
func (s *Session) AcquireMany(ctx context.Context, claims []Claim) []Acquired {
	out := make([]Acquired, len(claims))
	if err := s.Err(); err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	var todo []int
	pend := make([]*pendingAcquire, len(claims))
	s.mu.Lock()
	for i, claim := range claims {
		switch {
		case !s.underPrefix(claim.Key):
			out[i].Err = fmt.Errorf("lease: key %s is not under the session's prefix %s", claim.Key, s.cfg.Prefix)
		case s.holdings[claim.Key] != nil:
			out[i].Err = &HeldError{Key: claim.Key, Value: []byte(s.holdings[claim.Key].value)}
		case s.pending[claim.Key] != nil:
			out[i].Err = &HeldError{Key: claim.Key, Value: []byte(claim.Value)}
		default:
			pend[i] = &pendingAcquire{}
			s.pending[claim.Key] = pend[i]
			todo = append(todo, i)
		}
	}
	s.mu.Unlock()
	for len(todo) > 0 {
		n := min(len(todo), AcquireBatch)
		s.acquireBatch(ctx, claims, todo[:n], out)
		todo = todo[n:]
	}
	for i, p := range pend {
		if p == nil {
			continue
		}
		s.mu.Lock()
		delete(s.pending, claims[i].Key)
		late := p.sawPut
		s.mu.Unlock()
		if out[i].Err != nil && late != 0 {
			// The watch saw our put after all: nobody tracks that key.
			s.orphan(claims[i].Key, late)
		}
	}
	return out
}

// AcquireBatch is how many claims one transaction of AcquireMany carries:
// etcd checks each nested transaction against what the top level leaves of
// --max-txn-ops.
const AcquireBatch = 32

func claimOps(s *Session, claim Claim) (cmps []clientv3.Cmp, then []clientv3.Op) {
	then = []clientv3.Op{clientv3.OpPut(claim.Key, claim.Value, clientv3.WithLease(s.id))}
	if claim.HandoffFrom != "" {
		then = append(then, clientv3.OpGet(claim.HandoffFrom))
	}
	then = append(then, claim.Reads...)
	cmps = append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(claim.Key), "=", 0)}, claim.Conditions...)
	return cmps, then
}

// taken makes the holding of a claim from the responses of its Then ops.
func (s *Session) taken(claim Claim, rev int64, rs []*pb.ResponseOp) (*Holding, error) {
	rs = rs[1:] // the put
	var marker *Handoff
	if claim.HandoffFrom != "" {
		marker = parseHandoff(rs[0].GetResponseRange().Kvs)
		rs = rs[1:]
	}
	return s.track(claim, rev, rev, rs, marker)
}

// refused explains a claim whose compares failed, from its Else read.
func refused(claim Claim, kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		return ErrConditionFailed
	}
	return &HeldError{Key: claim.Key, Value: kvs[0].Value}
}

func (s *Session) acquireBatch(ctx context.Context, claims []Claim, idx []int, out []Acquired) {
	if len(idx) == 1 {
		claim := claims[idx[0]]
		cmps, then := claimOps(s, claim)
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(clientv3.OpGet(claim.Key)).Commit()
		switch {
		case err != nil:
			out[idx[0]].Holding, out[idx[0]].Err = s.reconcile(ctx, claim, err)
		case !resp.Succeeded:
			out[idx[0]].Err = refused(claim, resp.Responses[0].GetResponseRange().Kvs)
		default:
			out[idx[0]].Holding, out[idx[0]].Err = s.taken(claim, resp.Header.Revision, resp.Responses)
		}
		return
	}
	ops := make([]clientv3.Op, len(idx))
	for j, i := range idx {
		cmps, then := claimOps(s, claims[i])
		ops[j] = clientv3.OpTxn(cmps, then, []clientv3.Op{clientv3.OpGet(claims[i].Key)})
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		// Unknown outcome: each claim finds out on its own.
		var wg sync.WaitGroup
		for _, i := range idx {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i].Holding, out[i].Err = s.reconcile(ctx, claims[i], err)
			}()
		}
		wg.Wait()
		return
	}
	for j, i := range idx {
		nested := resp.Responses[j].GetResponseTxn()
		if !nested.Succeeded {
			out[i].Err = refused(claims[i], nested.Responses[0].GetResponseRange().Kvs)
			continue
		}
		out[i].Holding, out[i].Err = s.taken(claims[i], resp.Header.Revision, nested.Responses)
	}
}

func parseHandoff(kvs []*mvccpb.KeyValue) *Handoff {
	if len(kvs) == 0 {
		return nil
	}
	var m Handoff
	if json.Unmarshal(kvs[0].Value, &m) != nil {
		return nil
	}
	return &m
}

// reconcile finds out whether an acquire whose commit failed took the key,
// reading it until it knows or ctx ends. If it did, the key is tracked and
// the claim's reads are read afresh.
func (s *Session) reconcile(ctx context.Context, claim Claim, cause error) (*Holding, error) {
	if notApplied(cause) {
		return nil, fmt.Errorf("lease: acquire %s refused: %w", claim.Key, cause)
	}
	b := newBackoff(50*time.Millisecond, time.Second)
	for {
		ops := append([]clientv3.Op{clientv3.OpGet(claim.Key)}, claim.Reads...)
		if claim.HandoffFrom != "" {
			ops = append(ops, clientv3.OpGet(claim.HandoffFrom))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err == nil {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			switch {
			case len(kvs) > 0 && clientv3.LeaseID(kvs[0].Lease) == s.id:
				rs := resp.Responses[1 : 1+len(claim.Reads)]
				var marker *Handoff
				if claim.HandoffFrom != "" {
					marker = parseHandoff(resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs)
				}
				return s.track(claim, kvs[0].CreateRevision, resp.Header.Revision, rs, marker)
			case len(kvs) > 0:
				return nil, &HeldError{Key: claim.Key, Value: kvs[0].Value}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w", ErrOutcomeUnknown, claim.Key, cause)
		case <-s.ctx.Done():
			// The key, if we made it, dies with the lease.
			return nil, fmt.Errorf("lease: acquire %s: %w (then %w)", claim.Key, cause, s.Err())
		case <-time.After(b.NextBackOff()):
		}
	}
}

func (s *Session) track(claim Claim, token, rev int64, reads []*pb.ResponseOp, marker *Handoff) (*Holding, error) {
	h := &Holding{s: s, key: claim.Key, value: claim.Value, token: token, rev: rev, reads: reads, handoff: marker}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	s.holdings[claim.Key] = h
	return h, nil
}

// Key is the owners key.
func (h *Holding) Key() string { return h.key }

// Token is the fencing token: the owners key's CreateRevision.
func (h *Holding) Token() int64 { return h.token }

// Revision is the etcd revision at which the holding's reads were read.
func (h *Holding) Revision() int64 { return h.rev }

// Reads are the responses to the claim's Reads, in order.
func (h *Holding) Reads() []*pb.ResponseOp { return h.reads }

// TakeReads returns Reads and lets the holding forget them, so that what
// was read is not kept for as long as the instance is held.
func (h *Holding) TakeReads() []*pb.ResponseOp {
	rs := h.reads
	h.reads = nil
	return rs
}

// Handoff is the marker of the node that handed the key over, or nil.
func (h *Holding) Handoff() *Handoff { return h.handoff }

// Cmp is the fencing compare every write of the holder must carry.
func (h *Holding) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(h.key), "=", h.token)
}

// ReleaseOp deletes the owners key. A holder's final write carries it in
// its fenced transaction (with Cmp), and then calls Forget.
func (h *Holding) ReleaseOp() clientv3.Op { return clientv3.OpDelete(h.key) }

// Session is the session the holding belongs to.
func (h *Holding) Session() *Session { return h.s }

// Context is cancelled when the holding ends or may have ended; its cause
// is the reason. It is made at the first call.
func (h *Holding) Context() context.Context {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	t := h.tellLocked()
	if t.ctx == nil {
		t.ctx, t.cancel = context.WithCancelCause(context.Background())
		if h.err != nil {
			t.cancel(h.err)
		}
	}
	return t.ctx
}

// Done is closed when the holding ended or may have ended. It is made at
// the first call.
func (h *Holding) Done() <-chan struct{} {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	t := h.tellLocked()
	if t.done == nil {
		t.done = make(chan struct{})
		if h.err != nil {
			close(t.done)
		}
	}
	return t.done
}

func (h *Holding) tellLocked() *holdingTell {
	if h.tell == nil {
		h.tell = &holdingTell{}
	}
	return h.tell
}

// Err is nil while held, then the reason the holding ended.
func (h *Holding) Err() error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.err
}

// AfterEnd arranges for f to be called with the reason once the holding
// ends, or at once if it has ended. f is called on the goroutine that ends
// the holding (a watch, a fenced write's Lose, a Release, the session's
// end), which may hold locks of the caller's: f must not block and should
// hand anything longer to a goroutine of its own. stop unregisters f and
// reports whether it did so before f was called. It costs a few bytes, not
// a context, per holding.
func (h *Holding) AfterEnd(f func(error)) (stop func() bool) {
	hook := &endHook{f: f}
	h.s.mu.Lock()
	err := h.err
	if err == nil {
		h.hooks = append(h.hooks, hook)
	}
	h.s.mu.Unlock()
	if err != nil {
		f(err)
		return func() bool { return false }
	}
	return func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		for i, k := range h.hooks {
			if k == hook {
				h.hooks = append(h.hooks[:i], h.hooks[i+1:]...)
				if len(h.hooks) == 0 {
					h.hooks = nil
				}
				return true
			}
		}
		return false
	}
}

// Lose ends the holding with err; a holder calls it when a fenced write was
// refused.
func (h *Holding) Lose(err error) { h.lose(err) }

// Forget ends the holding after the holder's own write deleted the key
// (ReleaseOp).
func (h *Holding) Forget() { h.lose(ErrReleased) }

// lose ends the holding with err, once, and stops tracking its key.
func (h *Holding) lose(err error) {
	h.s.mu.Lock()
	if h.s.holdings[h.key] == h {
		delete(h.s.holdings, h.key)
		h.s.retired[h.key] = h.token
	}
	h.s.mu.Unlock()
	h.end(err)
}

// end records err as the holding's end, once, and tells whoever asked.
func (h *Holding) end(err error) {
	h.s.mu.Lock()
	if h.err != nil {
		h.s.mu.Unlock()
		return
	}
	h.err = err
	hooks, t := h.hooks, h.tell
	h.hooks = nil
	h.s.mu.Unlock()
	if t != nil {
		if t.done != nil {
			close(t.done)
		}
		if t.cancel != nil {
			t.cancel(err)
		}
	}
	for _, k := range hooks {
		k.f(err)
	}
}

// Release deletes the owners key if it is still this holding's. The holding
// ends with ErrReleased either way.
func (h *Holding) Release(ctx context.Context) error {
	h.lose(ErrReleased)
	_, err := h.s.cli.Txn(ctx).If(h.Cmp()).Then(h.ReleaseOp()).Commit()
	if err != nil {
		return fmt.Errorf("lease: release %s: %w (the key goes with the session lease)", h.key, err)
	}
	return nil
}

// releaseBatch is how many keys one ReleaseAll transaction deletes: each
// is a nested If(Cmp) Then(delete), and etcd counts every operation.
const releaseBatch = 60

// releaseParallel is how many ReleaseAll transactions are in flight at
// once. A drain's release competes with the peers' acquires of what it
// released: with 8, a node handing over 5,000 instances took 1.17 s to
// release them on the benchmark's 2-core machine, with 32 0.52-0.60 s
// (handoff phase, -mass-instances 5000).
const releaseParallel = 32

// ReleaseAll releases every holding, after leaving marker at markerKey on a
// lease of its own (TTL markerTTL) when marker is not nil, so that the
// nodes that take the keys next learn they were handed over. Keys are
// deleted many to a transaction, each only if it is still its holding's.
// Every holding ends with ErrReleased.
func (s *Session) ReleaseAll(ctx context.Context, hs []*Holding, markerKey string, marker *Handoff, markerTTL time.Duration) error {
	for _, h := range hs {
		h.lose(ErrReleased)
	}
	var errs []error
	if marker != nil && markerKey != "" && len(hs) > 0 {
		if err := s.putMarker(ctx, markerKey, marker, markerTTL); err != nil {
			errs = append(errs, err) // the instances are still released; peers count failovers
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, releaseParallel)
	for len(hs) > 0 {
		n := min(len(hs), releaseBatch)
		batch := hs[:n]
		hs = hs[n:]
		ops := make([]clientv3.Op, len(batch))
		for i, h := range batch {
			ops[i] = clientv3.OpTxn([]clientv3.Cmp{h.Cmp()}, []clientv3.Op{h.ReleaseOp()}, nil)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("lease: release %d keys: %w (they go with the session lease)", len(ops), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Session) putMarker(ctx context.Context, key string, marker *Handoff, ttl time.Duration) error {
	if ttl < 2*time.Second {
		ttl = 2 * time.Second
	}
	g, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("lease: handoff marker lease: %w", err)
	}
	b, _ := json.Marshal(marker)
	if _, err := s.cli.Put(ctx, key, string(b), clientv3.WithLease(g.ID)); err != nil {
		return fmt.Errorf("lease: handoff marker %s: %w", key, err)
	}
	return nil
}

// notApplied reports whether an error of a write says etcd refused it
// before applying it: out of space (NOSPACE), over a request limit, or not
// permitted. Such an acquire took nothing; there is nothing to reconcile.
func notApplied(err error) bool {
	for _, refusal := range []error{
		rpctypes.ErrNoSpace, rpctypes.ErrRequestTooLarge, rpctypes.ErrTooManyOps, rpctypes.ErrDuplicateKey,
		rpctypes.ErrPermissionDenied, rpctypes.ErrAuthFailed, rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision,
	} {
		if errors.Is(err, refusal) {
			return true
		}
	}
	return false
}
