package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Landing is a claim taken inside another component's transaction: the
// caller puts Op, a nested If(key free, conditions) Then(create the key on
// the session lease, reads) transaction, among the ops of its own write
// (a start that creates an instance and takes it in the same commit), and
// then hands the outcome back with Adopt or Abort. The key is tracked as
// pending from Land on, so the session's watch never deletes it as an
// orphan while the outer transaction is in flight.
//
// A Landing is the same acquisition as Acquire, with the same guarantees:
// the holding's token is the key's CreateRevision, the revision of the
// outer transaction; its context ends with the session, its safe-until or a
// delete or replacement of the key; and a key made by a transaction whose
// outcome the caller could not learn is either adopted (Adopt with a nil
// response reads it) or deleted by the session as untracked.
type Landing struct {
	s     *Session
	claim Claim
	p     *pendingAcquire
	once  sync.Once
}

// Land prepares claim to be taken inside the caller's transaction. It
// fails, taking nothing, if the session has ended, the key is not under the
// session's prefix, or the session holds or is acquiring the key already
// (*HeldError). Every Landing must end with Adopt or Abort.
func (s *Session) Land(claim Claim) (*Landing, error) {
	if err := s.Err(); err != nil {
		return nil, err
	}
	if !s.underPrefix(claim.Key) {
		return nil, fmt.Errorf("lease: key %s is not under the session's prefix %s", claim.Key, s.cfg.Prefix)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.holdings[claim.Key] != nil:
		return nil, &HeldError{Key: claim.Key, Value: []byte(s.holdings[claim.Key].value)}
	case s.pending[claim.Key] != nil:
		return nil, &HeldError{Key: claim.Key, Value: []byte(claim.Value)}
	}
	l := &Landing{s: s, claim: claim, p: &pendingAcquire{}}
	s.pending[claim.Key] = l.p
	return l, nil
}

// Op is the nested transaction to put in the Then of the caller's
// transaction. It does not fail the caller's transaction when the key is
// taken or a condition fails: its own response says whether it took the
// key.
func (l *Landing) Op() clientv3.Op {
	cmps, then := claimOps(l.s, l.claim)
	return clientv3.OpTxn(cmps, then, nil)
}

// Adopt makes the holding from the caller's committed transaction: rev is
// its header revision and resp the response of Op within it. A nested
// transaction that did not take the key returns ErrConditionFailed (the
// key was held or a condition failed). A nil resp means the caller knows
// its transaction applied but not the responses (it learned the outcome by
// reading): then Adopt reads the key until it knows, for as long as ctx
// allows, as Acquire does after a commit of unknown outcome.
func (l *Landing) Adopt(ctx context.Context, rev int64, resp *pb.ResponseOp) (h *Holding, err error) {
	if !l.settle() {
		return nil, errors.New("lease: landing already ended")
	}
	defer func() { l.finish(err) }()
	if resp == nil {
		return l.read(ctx)
	}
	nested := resp.GetResponseTxn()
	if nested == nil {
		return nil, fmt.Errorf("lease: landing %s: the response is not the landing's transaction", l.claim.Key)
	}
	if !nested.Succeeded {
		return nil, ErrConditionFailed
	}
	return l.s.taken(l.claim, rev, nested.Responses)
}

// read learns by reading whether the caller's applied transaction made the
// key on this session's lease: what the key is now says it, since a key of
// the session's is only deleted by the session itself or by someone who
// ended the holding anyway.
func (l *Landing) read(ctx context.Context) (*Holding, error) {
	s, claim := l.s, l.claim
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
			default:
				return nil, ErrConditionFailed
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w", ErrOutcomeUnknown, claim.Key, err)
		case <-s.ctx.Done():
			return nil, fmt.Errorf("lease: landing %s: %w", claim.Key, s.Err())
		case <-time.After(b.NextBackOff()):
		}
	}
}

// Abort ends a landing whose transaction was not committed (or did not
// apply). If the session nevertheless saw the key made on its lease, it
// deletes it, as any key no holding tracks.
func (l *Landing) Abort() {
	if l.settle() {
		l.finish(ErrConditionFailed)
	}
}

func (l *Landing) settle() bool {
	first := false
	l.once.Do(func() { first = true })
	return first
}

// finish stops tracking the key as pending; a key the watch saw made on
// the lease that no holding took is an orphan.
func (l *Landing) finish(err error) {
	s := l.s
	s.mu.Lock()
	if s.pending[l.claim.Key] == l.p {
		delete(s.pending, l.claim.Key)
	}
	late := l.p.sawPut
	s.mu.Unlock()
	if err != nil && late != 0 {
		s.orphan(l.claim.Key, late)
	}
}
