package lease_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/lease/leasetest"
)

// A landing taken inside the caller's own transaction is a holding like an
// Acquire's: its token is the key's CreateRevision (the revision of the
// caller's commit), its reads see the caller's writes, it is not deleted as
// an orphan, it is fenced, and its context ends when the key is deleted.
func TestLandAdopt(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	direct := e.Client()
	var orphans atomic.Int32
	s := newSessionCfg(t, e.Client(), lease.Config{TTL: 5 * time.Second, OnOrphan: func(string) { orphans.Add(1) }})
	rec, key := prefix(t)+"record", prefix(t)+"owner"

	l, err := s.Land(lease.Claim{Key: key, Value: "node-1", Reads: []clientv3.Op{clientv3.OpGet(rec)}})
	if err != nil {
		t.Fatal(err)
	}
	// A second landing or acquire of the key while the first is in flight is refused.
	if _, err := s.Land(lease.Claim{Key: key}); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second Land = %v, want ErrHeld", err)
	}
	resp, err := direct.Txn(ctxT(t)).If(clientv3.Compare(clientv3.CreateRevision(rec), "=", 0)).
		Then(clientv3.OpPut(rec, "pending"), l.Op()).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("caller's txn: %v, succeeded %v", err, resp != nil && resp.Succeeded)
	}
	h, err := l.Adopt(ctxT(t), resp.Header.Revision, resp.Responses[1])
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	kv := get(t, direct, key)
	if kv == nil || kv.Lease != s.LeaseID() || kv.Value != "node-1" || h.Token() != kv.CreateRevision || h.Token() != resp.Header.Revision {
		t.Fatalf("owners key %+v, token %d, commit revision %d: want node-1 on lease %x with CreateRevision = token = commit revision",
			kv, h.Token(), resp.Header.Revision, s.LeaseID())
	}
	if rs := h.Reads(); len(rs) != 1 || len(rs[0].GetResponseRange().Kvs) != 1 || string(rs[0].GetResponseRange().Kvs[0].Value) != "pending" {
		t.Fatalf("reads = %v, want the record the same transaction wrote", rs)
	}
	if s.Held() != 1 {
		t.Fatalf("Held() = %d, want 1", s.Held())
	}
	if _, err := s.Land(lease.Claim{Key: key}); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("Land of a held key = %v, want ErrHeld", err)
	}
	fenced, err := direct.Txn(ctxT(t)).If(h.Cmp()).Then(clientv3.OpPut(rec, "running")).Commit()
	if err != nil || !fenced.Succeeded {
		t.Fatalf("fenced write of the landed holding: %v, succeeded %v", err, fenced != nil && fenced.Succeeded)
	}
	// Give the watch time to see the put: a landed key is not an orphan.
	time.Sleep(300 * time.Millisecond)
	if n := orphans.Load(); n != 0 || get(t, direct, key) == nil {
		t.Fatalf("the landed key was treated as an orphan (%d)", n)
	}
	if _, err := direct.Delete(ctxT(t), key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.Done(), 5*time.Second, "holding context after its key was deleted")
	if !errors.Is(h.Err(), lease.ErrKeyDeleted) {
		t.Fatalf("holding ended with %v, want ErrKeyDeleted", h.Err())
	}
}

// A landing whose key is taken already does not fail the caller's
// transaction: Adopt says ErrConditionFailed and nothing is held.
func TestLandRefused(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	direct := e.Client()
	s1, s2 := newSession(t, e.Client(), 5*time.Second), newSession(t, e.Client(), 5*time.Second)
	key, rec := prefix(t)+"owner", prefix(t)+"record"
	first := acquire(t, s1, lease.Claim{Key: key, Value: "node-1"})
	l, err := s2.Land(lease.Claim{Key: key, Value: "node-2"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := direct.Txn(ctxT(t)).Then(clientv3.OpPut(rec, "x"), l.Op()).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("caller's txn: %v", err)
	}
	if _, err := l.Adopt(ctxT(t), resp.Header.Revision, resp.Responses[1]); !errors.Is(err, lease.ErrConditionFailed) {
		t.Fatalf("Adopt = %v, want ErrConditionFailed", err)
	}
	if kv := get(t, direct, rec); kv == nil || kv.Value != "x" {
		t.Fatalf("the caller's write did not apply: %+v", kv)
	}
	if kv := get(t, direct, key); kv == nil || kv.CreateRevision != first.Token() || s2.Held() != 0 {
		t.Fatalf("owners key %+v, held by s2 %d: want the first holder's key untouched", kv, s2.Held())
	}
	if _, err := l.Adopt(ctxT(t), resp.Header.Revision, resp.Responses[1]); err == nil {
		t.Fatal("a second Adopt of one landing succeeded")
	}
}

// A caller that learned its transaction applied only by reading (its
// commit's answer was lost) adopts with a nil response: the landing reads
// the key and holds it, with the key's CreateRevision as token. A landing
// that the caller aborts although its key was made is deleted as an orphan.
func TestLandOutcomeUnknown(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	direct := e.Client()
	var orphans atomic.Int32
	s := newSessionCfg(t, e.Client(), lease.Config{TTL: 5 * time.Second, OnOrphan: func(string) { orphans.Add(1) }})
	key := prefix(t) + "owner"

	l, err := s.Land(lease.Claim{Key: key, Value: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := direct.Txn(ctxT(t)).Then(l.Op()).Commit()
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.Adopt(ctxT(t), 0, nil)
	if err != nil {
		t.Fatalf("Adopt by reading: %v", err)
	}
	if h.Token() != resp.Header.Revision {
		t.Fatalf("token %d, want the CreateRevision %d", h.Token(), resp.Header.Revision)
	}

	other := prefix(t) + "other"
	l2, err := s.Land(lease.Claim{Key: other, Value: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Txn(ctxT(t)).Then(l2.Op()).Commit(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the session's watch saw the key", func() bool { return lease.SawPut(s, other) })
	l2.Abort()
	eventually(t, 5*time.Second, "an aborted landing's key deleted", func() bool { return get(t, direct, other) == nil })
	wantOneOrphan(t, &orphans)
	if get(t, direct, key) == nil || h.Err() != nil {
		t.Fatal("the adopted key was deleted")
	}
}
