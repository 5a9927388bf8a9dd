package lease

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim says what to take.
type Claim struct {
	// Key is the owners key: created only if absent, on the session lease.
	Key string
	// Value is stored in the owners key.
	Value string
	// HandoffKey, if set, is where Release leaves a marker; Acquire reads and
	// deletes it in its own transaction.
	HandoffKey string
	// Conditions, if any, must also hold for the key to be created (for
	// example that the record the holder will work on has not changed since
	// it decided to campaign). If they fail Acquire returns ErrConditionFailed.
	Conditions []clientv3.Cmp
}

// HeldError is returned by Acquire when another holder has the key.
type HeldError struct {
	Key   string
	Value []byte // the current holder's value
}

func (e *HeldError) Error() string { return fmt.Sprintf("lease: %s is already held", e.Key) }

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Holding is a held owners key. Its token is the key's CreateRevision: it
// grows with every new holder. Done is closed, and Err set, as soon as the
// holding may be lost: the session ended or passed its safe-until deadline,
// the key was deleted or replaced (watched, so an operator's etcdctl del or
// lease revoke is seen within moments), the holder reported a fenced-out
// write with Lose, or the holder released it.
type Holding struct {
	s       *Session
	claim   Claim
	token   int64
	handoff []byte

	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
	cancel context.CancelFunc
}

// Acquire tries once to take claim.Key. It returns a *HeldError if another
// holder has it. If the commit's outcome is unknown (a timeout), it re-reads
// the key until it knows, for as long as the session lives: a key of this
// session is never left behind untracked.
func (s *Session) Acquire(ctx context.Context, claim Claim) (*Holding, error) {
	if err := s.Err(); err != nil {
		return nil, err
	}
	then := []clientv3.Op{clientv3.OpPut(claim.Key, claim.Value, clientv3.WithLease(s.id))}
	if claim.HandoffKey != "" {
		then = append(then, clientv3.OpGet(claim.HandoffKey), clientv3.OpDelete(claim.HandoffKey))
	}
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(claim.Key), "=", 0)}, claim.Conditions...)
	resp, err := s.cli.Txn(ctx).
		If(cmps...).
		Then(then...).
		Else(clientv3.OpGet(claim.Key)).
		Commit()
	if err != nil {
		return s.reconcileAcquire(ctx, claim, err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, ErrConditionFailed
		}
		return nil, &HeldError{Key: claim.Key, Value: kvs[0].Value}
	}
	var marker []byte
	if claim.HandoffKey != "" {
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			marker = kvs[0].Value
		}
	}
	return s.track(claim, resp.Header.Revision, marker)
}

// reconcileAcquire finds out whether an acquire whose commit failed took the
// key. If it did, the key is tracked (or released if ctx is gone).
func (s *Session) reconcileAcquire(ctx context.Context, claim Claim, cause error) (*Holding, error) {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		rctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		resp, err := s.cli.Get(rctx, claim.Key)
		cancel()
		if err == nil {
			if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != s.id {
				return nil, fmt.Errorf("lease: acquire %s: %w", claim.Key, cause)
			}
			created := resp.Kvs[0].CreateRevision
			h, err := s.track(claim, created, s.markerBefore(claim, created))
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				_ = h.Release(s.ctx, nil)
				return nil, fmt.Errorf("lease: acquire %s: %w", claim.Key, ctx.Err())
			}
			return h, nil
		}
		select {
		case <-s.done:
			// The key, if we made it, dies with the lease.
			return nil, fmt.Errorf("lease: acquire %s: %w (then %w)", claim.Key, cause, s.Err())
		case <-time.After(backoff):
		}
	}
}

// markerBefore reads the handoff marker as it was just before revision rev,
// where our own create consumed it (nil if none, or if compacted away).
func (s *Session) markerBefore(claim Claim, rev int64) []byte {
	if claim.HandoffKey == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	resp, err := s.cli.Get(ctx, claim.HandoffKey, clientv3.WithRev(rev-1))
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0].Value
}

func (s *Session) track(claim Claim, token int64, marker []byte) (*Holding, error) {
	wctx, cancel := context.WithCancel(s.ctx)
	h := &Holding{s: s, claim: claim, token: token, handoff: marker, done: make(chan struct{}), cancel: cancel}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		cancel()
		return nil, err
	}
	s.holdings[h] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go h.watch(wctx)
	return h, nil
}

// Key is the owners key.
func (h *Holding) Key() string { return h.claim.Key }

// Token is the fencing token: the owners key's CreateRevision.
func (h *Holding) Token() int64 { return h.token }

// Cmp is the fencing compare every write of the holder must carry.
func (h *Holding) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(h.claim.Key), "=", h.token)
}

// HandoffMarker is the marker a draining previous holder left, or nil if the
// instance was not handed over.
func (h *Holding) HandoffMarker() []byte { return h.handoff }

// Session is the session the holding belongs to.
func (h *Holding) Session() *Session { return h.s }

// Done is closed when the holding ended or may have ended.
func (h *Holding) Done() <-chan struct{} { return h.done }

// Err is nil while held, then the reason the holding ended.
func (h *Holding) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Lose ends the holding with err; a holder calls it when a fenced write was
// refused.
func (h *Holding) Lose(err error) { h.lose(err) }

func (h *Holding) lose(err error) {
	h.once.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		h.cancel()
		close(h.done)
		h.s.mu.Lock()
		delete(h.s.holdings, h)
		h.s.mu.Unlock()
	})
}

// Release deletes the owners key if it is still this holding's, leaving
// marker at the claim's HandoffKey in the same transaction when marker is
// not nil. The holding ends with ErrReleased either way.
func (h *Holding) Release(ctx context.Context, marker []byte) error {
	h.lose(ErrReleased)
	ops := []clientv3.Op{clientv3.OpDelete(h.claim.Key)}
	if marker != nil && h.claim.HandoffKey != "" {
		ops = append(ops, clientv3.OpPut(h.claim.HandoffKey, string(marker)))
	}
	_, err := h.s.cli.Txn(ctx).If(h.Cmp()).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("lease: release %s: %w (the key goes with the session lease)", h.claim.Key, err)
	}
	return nil
}

// watch ends the holding when the owners key is deleted or replaced.
func (h *Holding) watch(ctx context.Context) {
	defer h.s.wg.Done()
	rev := h.token + 1
	for ctx.Err() == nil {
		wch := h.s.cli.Watch(clientv3.WithRequireLeader(ctx), h.claim.Key, clientv3.WithRev(rev))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					h.lose(ErrKeyDeleted)
					return
				case ev.Kv.CreateRevision != h.token:
					h.lose(ErrKeyReplaced)
					return
				}
				rev = ev.Kv.ModRevision + 1
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch broke (no leader, compaction, connection loss): check the
		// key directly, then watch again from what we read.
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := h.s.cli.Get(gctx, h.claim.Key)
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if len(resp.Kvs) == 0 {
			h.lose(ErrKeyDeleted)
			return
		}
		if resp.Kvs[0].CreateRevision != h.token {
			h.lose(ErrKeyReplaced)
			return
		}
		rev = resp.Header.Revision + 1
	}
}
