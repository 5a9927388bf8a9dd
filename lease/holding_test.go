package lease_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/lease/leasetest"
)

// The first Acquire takes the key on its session lease with its
// CreateRevision as the token; a second session gets a *HeldError with the
// holder's value; Cmp passes in a Txn only while the holding is current.
func TestAcquire(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli1, cli2 := e.Client(), e.Client()
	key := prefix(t) + "owner"
	s1, s2 := newSession(t, cli1, 5*time.Second), newSession(t, cli2, 5*time.Second)

	h := acquire(t, s1, lease.Claim{Key: key, Value: "node-1"})
	kv := get(t, cli2, key)
	if kv == nil || kv.Value != "node-1" || kv.Lease != s1.LeaseID() {
		t.Fatalf("owners key = %+v, want node-1 on lease %x", kv, s1.LeaseID())
	}
	if h.Token() != kv.CreateRevision {
		t.Fatalf("token %d != CreateRevision %d", h.Token(), kv.CreateRevision)
	}
	if h.Key() != key || h.Session() != s1 || h.Handoff() != nil || h.Err() != nil || h.Revision() != h.Token() {
		t.Fatalf("holding: key %q session %p marker %v err %v revision %d", h.Key(), h.Session(), h.Handoff(), h.Err(), h.Revision())
	}

	for _, s := range []*lease.Session{s2, s1} { // another session, and the holder again
		_, err := s.Acquire(ctxT(t), lease.Claim{Key: key, Value: "node-2"})
		var he *lease.HeldError
		if !errors.As(err, &he) || !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("second Acquire: %v (%T), want *HeldError matching ErrHeld", err, err)
		}
		if he.Key != key || string(he.Value) != "node-1" {
			t.Fatalf("HeldError = %+v (value %q), want the holder's value node-1", he, he.Value)
		}
	}
	if kv2 := get(t, cli2, key); *kv2 != *kv {
		t.Fatalf("a refused Acquire changed the key: %+v -> %+v", kv, kv2)
	}

	// The fencing compare works in a transaction of any client.
	fenced := func() bool {
		resp, err := cli2.Txn(ctxT(t)).If(h.Cmp()).Then(clientv3.OpPut(prefix(t)+"effect", "x")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return !resp.Succeeded
	}
	if fenced() {
		t.Fatal("Cmp failed while held")
	}
	if err := h.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !fenced() {
		t.Fatal("Cmp passed after the release")
	}
	h2 := acquire(t, s2, lease.Claim{Key: key, Value: "node-2"})
	if !fenced() {
		t.Fatal("the old holding's Cmp passed against a new holder")
	}
	if h2.Token() <= h.Token() {
		t.Fatalf("new token %d not above old %d", h2.Token(), h.Token())
	}
}

// Tokens grow strictly across successive holders, whichever session holds.
func TestTokensGrow(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	key := prefix(t) + "owner"
	sessions := []*lease.Session{newSession(t, e.Client(), 5*time.Second), newSession(t, e.Client(), 5*time.Second), newSession(t, e.Client(), 5*time.Second)}
	other := e.Client()
	var last int64
	for i := 0; i < 9; i++ {
		h := acquire(t, sessions[i%3], lease.Claim{Key: key, Value: fmt.Sprint(i)})
		if h.Token() <= last {
			t.Fatalf("holder %d: token %d not above %d", i, h.Token(), last)
		}
		last = h.Token()
		// Unrelated writes in between must not matter.
		if _, err := other.Put(ctxT(t), prefix(t)+"noise", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			err := h.Release(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
		case 1: // an operator deletes it
			if _, err := other.Delete(ctxT(t), key); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, h.Done(), time.Second, "holding after delete")
		case 2: // the holder's session ends
			if err := sessions[2].Close(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			sessions[2] = newSession(t, e.Client(), 5*time.Second)
		}
	}
}

// Of many sessions racing for one key, exactly one wins.
func TestAcquireRace(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	key := prefix(t) + "owner"
	const n = 12
	var sessions []*lease.Session
	for i := 0; i < n; i++ {
		cli := e.Client()
		if i%2 == 1 {
			cli = e.Client()
		}
		sessions = append(sessions, newSession(t, cli, 5*time.Second))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wins []*lease.Holding
	held := 0
	start := make(chan struct{})
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			h, err := s.Acquire(context.Background(), lease.Claim{Key: key, Value: fmt.Sprint(i)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, h)
			case errors.Is(err, lease.ErrHeld):
				held++
			default:
				t.Errorf("session %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(wins) != 1 || held != n-1 {
		t.Fatalf("%d wins and %d HeldErrors, want 1 and %d", len(wins), held, n-1)
	}
	if kv := get(t, e.Client(), key); kv == nil || kv.CreateRevision != wins[0].Token() || kv.Lease != wins[0].Session().LeaseID() {
		t.Fatalf("owners key %+v does not belong to the winner", kv)
	}
}

// Conditions must hold for the key to be created; with the key free and a
// condition false, Acquire returns ErrConditionFailed and writes nothing.
func TestAcquireConditions(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	pfx := prefix(t)
	put, err := cli.Put(ctxT(t), pfx+"record", "v1")
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(t, cli, 5*time.Second)
	stale := clientv3.Compare(clientv3.ModRevision(pfx+"record"), "=", put.Header.Revision)
	if _, err := cli.Put(ctxT(t), pfx+"record", "v2"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctxT(t), lease.Claim{Key: pfx + "owner", Value: "n", Conditions: []clientv3.Cmp{stale}})
	if !errors.Is(err, lease.ErrConditionFailed) || errors.Is(err, lease.ErrHeld) {
		t.Fatalf("Acquire with a false condition: %v, want ErrConditionFailed", err)
	}
	if kv := get(t, cli, pfx+"owner"); kv != nil {
		t.Fatalf("a refused Acquire wrote %+v", kv)
	}
	rec := get(t, cli, pfx+"record")
	fresh := clientv3.Compare(clientv3.ModRevision(pfx+"record"), "=", rec.ModRevision)
	h := acquire(t, s, lease.Claim{Key: pfx + "owner", Value: "n", Conditions: []clientv3.Cmp{fresh}})
	// Held beats a failed condition: the caller learns who holds it.
	s2 := newSession(t, e.Client(), 5*time.Second)
	_, err = s2.Acquire(ctxT(t), lease.Claim{Key: pfx + "owner", Value: "m", Conditions: []clientv3.Cmp{stale}})
	if !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("Acquire of a held key with a false condition: %v, want ErrHeld", err)
	}
	_ = h
}

// An Acquire whose context is already done leaves no key behind.
func TestAcquireCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	s := newSession(t, cli, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	key := prefix(t) + "owner"
	if h, err := s.Acquire(ctx, lease.Claim{Key: key, Value: "n"}); err == nil {
		t.Fatalf("Acquire with a cancelled context took the key (token %d)", h.Token())
	} else if !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: %v, want context.Canceled", err)
	}
	if kv := get(t, cli, key); kv != nil {
		t.Fatalf("key left behind: %+v", kv)
	}
	if s.Err() != nil {
		t.Fatalf("session ended: %v", s.Err())
	}
	acquire(t, s, lease.Claim{Key: key, Value: "n"})
}

// An Acquire that etcd refuses outright (here: a request over its 1.5 MiB
// limit; NOSPACE is refused the same way) fails at once with etcd's error:
// nothing can have been written, so there is nothing to reconcile, and it
// is not reported as an unknown outcome.
func TestAcquireRefusedIsNotUnknown(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	s := newSession(t, cli, 5*time.Second)
	key := prefix(t) + "owner"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	_, err := s.Acquire(ctx, lease.Claim{Key: key, Value: strings.Repeat("x", 1600<<10)})
	if err == nil || errors.Is(err, lease.ErrOutcomeUnknown) || !errors.Is(err, rpctypes.ErrRequestTooLarge) {
		t.Fatalf("Acquire over etcd's request limit: %v, want etcd's refusal and not ErrOutcomeUnknown", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("the refusal took %v: it was reconciled as if unknown", took)
	}
	if kv := get(t, cli, key); kv != nil {
		t.Fatalf("key written: %+v", kv)
	}
}

// A holding's Done closes within a second when its owners key is deleted by
// another client; the session lives on.
func TestHoldingDoneOnDelete(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	s := newSession(t, cli, 5*time.Second)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})
	keep := acquire(t, s, lease.Claim{Key: prefix(t) + "other", Value: "n1"})

	deleted := time.Now()
	if _, err := op.Delete(ctxT(t), h.Key()); err != nil {
		t.Fatal(err)
	}
	done := waitClosed(t, h.Done(), time.Second, "holding Done after delete")
	wantErr(t, h.Err(), lease.ErrKeyDeleted, "holding")
	t.Logf("holding Done %v after its key was deleted", done.Sub(deleted).Round(time.Microsecond))
	if s.Err() != nil || keep.Err() != nil {
		t.Fatalf("session or other holding ended: %v, %v", s.Err(), keep.Err())
	}
	// The session can take the key again, with a larger token.
	h2 := acquire(t, s, lease.Claim{Key: h.Key(), Value: "n1"})
	if h2.Token() <= h.Token() {
		t.Fatalf("token %d after %d", h2.Token(), h.Token())
	}
}

// An operator rewriting the owners key's value (same CreateRevision) does
// not end the holding; only deletion or replacement does.
func TestHoldingSurvivesValueUpdate(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	s := newSession(t, cli, 5*time.Second)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})
	if _, err := op.Put(ctxT(t), h.Key(), "n1-updated", clientv3.WithIgnoreLease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
		t.Fatalf("holding ended on a value update: %v", h.Err())
	case <-time.After(300 * time.Millisecond): // a window for a wrong Done to show, not the assertion below
	}
	// Then delete it: the holding must have kept watching after the update.
	deleted := time.Now()
	if _, err := op.Delete(ctxT(t), h.Key()); err != nil {
		t.Fatal(err)
	}
	done := waitClosed(t, h.Done(), time.Second, "holding Done after delete")
	wantErr(t, h.Err(), lease.ErrKeyDeleted, "holding")
	t.Logf("holding Done %v after delete (after an update)", done.Sub(deleted).Round(time.Microsecond))
}

// Lose ends the holding at once with the given error; the key stays (the
// holder reports a loss, it does not release).
func TestHoldingLose(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	s := newSession(t, cli, 5*time.Second)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})
	myErr := errors.New("fenced write refused")
	lost := time.Now()
	h.Lose(myErr)
	done := waitClosed(t, h.Done(), time.Second, "holding Done after Lose")
	if h.Err() != myErr {
		t.Fatalf("Err = %v, want the error given to Lose", h.Err())
	}
	h.Lose(errors.New("second"))
	if h.Err() != myErr {
		t.Fatalf("a second Lose replaced the error: %v", h.Err())
	}
	if kv := get(t, cli, h.Key()); kv == nil || kv.CreateRevision != h.Token() {
		t.Fatalf("Lose deleted or changed the key: %+v", kv)
	}
	if s.Err() != nil {
		t.Fatalf("Lose ended the session: %v", s.Err())
	}
	t.Logf("holding Done %v after Lose", done.Sub(lost).Round(time.Microsecond))
}

// AfterEnd tells a holding's end once, with its reason, to every hook
// still registered (a stopped one is never called), at once to a hook
// registered after the end; Context made before the end is cancelled with
// the same cause; a session's end ends every holding it tracked.
func TestHoldingAfterEnd(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	s := newSession(t, cli, 5*time.Second)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})
	ctx := h.Context()
	told := make(chan error, 4)
	h.AfterEnd(func(err error) { told <- err })
	never := h.AfterEnd(func(err error) { told <- fmt.Errorf("a stopped hook was called: %w", err) })
	if !never() {
		t.Fatal("stop of a hook before the end reported false")
	}
	if _, err := op.Delete(ctxT(t), h.Key()); err != nil {
		t.Fatal(err)
	}
	waitTold(t, told, lease.ErrKeyDeleted, "the key was deleted")
	waitClosed(t, ctx.Done(), time.Second, "holding Context after delete")
	wantErr(t, context.Cause(ctx), lease.ErrKeyDeleted, "Context's cause")
	if never() {
		t.Fatal("stop after the end reported true")
	}
	var late error
	stop := h.AfterEnd(func(err error) { late = err })
	wantErr(t, late, lease.ErrKeyDeleted, "a hook registered after the end")
	if stop() {
		t.Fatal("stop of a hook called at registration reported true")
	}
	select {
	case err := <-told:
		t.Fatalf("a hook was called twice, or a stopped one was: %v", err)
	default:
	}

	// The session's end ends every holding, hooks and Done alike.
	h2 := acquire(t, s, lease.Claim{Key: prefix(t) + "second", Value: "n1"})
	h2.AfterEnd(func(err error) { told <- err })
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitTold(t, told, lease.ErrSessionClosed, "the session closed")
	waitClosed(t, h2.Done(), time.Second, "holding Done after the session closed")
}

// waitTold waits up to 5s for a hook to be told want, after what happened.
func waitTold(t *testing.T, told <-chan error, want error, after string) {
	t.Helper()
	select {
	case err := <-told:
		wantErr(t, err, want, "hook after "+after)
	case <-time.After(5 * time.Second):
		t.Fatalf("no hook called 5s after %s", after)
	}
}

// ReleaseAll leaves one handoff marker on a lease of its own and deletes
// every key it still holds, many to a transaction; the next Acquire that
// names the marker reads it in its own transaction, along with its reads.
func TestReleaseAllWithHandoff(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli1, cli2, obs := e.Client(), e.Client(), e.Client()
	pfx := prefix(t)
	s1, s2 := newSession(t, cli1, 5*time.Second), newSession(t, cli2, 5*time.Second)
	const n = 150 // more than one transaction's worth
	var hs []*lease.Holding
	for i := 0; i < n; i++ {
		hs = append(hs, acquire(t, s1, lease.Claim{Key: fmt.Sprintf("%sowners/%03d", pfx, i), Value: "n1"}))
	}
	// One of them was taken from us meanwhile: its new holder keeps it.
	if _, err := obs.Delete(ctxT(t), hs[7].Key()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, hs[7].Done(), time.Second, "holding after delete")
	other := acquire(t, s2, lease.Claim{Key: hs[7].Key(), Value: "n2"})
	if _, err := obs.Put(ctxT(t), pfx+"record", "r1"); err != nil {
		t.Fatal(err)
	}
	markerKey := pfx + "handoffs/n1"
	marker := &lease.Handoff{Node: "n1", Reason: "drain", ReleasedTime: time.Now().UTC().Truncate(time.Millisecond)}
	if err := s1.ReleaseAll(ctxT(t), hs, markerKey, marker, 10*time.Second); err != nil {
		t.Fatalf("ReleaseAll: %v", err)
	}
	for i, h := range hs {
		if i == 7 {
			continue
		}
		if !isClosed(h.Done()) {
			t.Fatalf("holding %d not done after ReleaseAll", i)
		}
		wantErr(t, h.Err(), lease.ErrReleased, "released holding")
		if kv := get(t, obs, h.Key()); kv != nil {
			t.Fatalf("key %s left after ReleaseAll: %+v", h.Key(), kv)
		}
	}
	if kv := get(t, obs, other.Key()); kv == nil || kv.CreateRevision != other.Token() || other.Err() != nil {
		t.Fatalf("ReleaseAll touched another session's key: %+v (%v)", kv, other.Err())
	}
	mk := get(t, obs, markerKey)
	if mk == nil || mk.Lease == 0 || mk.Lease == s1.LeaseID() {
		t.Fatalf("marker %+v: want it on a lease of its own (it must outlive the releasing session)", mk)
	}

	h := acquire(t, s2, lease.Claim{Key: hs[0].Key(), Value: "n2", HandoffFrom: markerKey,
		Reads: []clientv3.Op{clientv3.OpGet(pfx + "record")}})
	if m := h.Handoff(); m == nil || *m != *marker {
		t.Fatalf("Handoff() = %+v, want %+v", m, marker)
	}
	if rs := h.Reads(); len(rs) != 1 || string(rs[0].GetResponseRange().Kvs[0].Value) != "r1" {
		t.Fatalf("Reads() = %v", rs)
	}
	// Without HandoffFrom no marker is read.
	if h := acquire(t, s2, lease.Claim{Key: hs[1].Key(), Value: "n2"}); h.Handoff() != nil {
		t.Fatalf("Handoff() = %+v without HandoffFrom", h.Handoff())
	}
}

func nextEvents(t testing.TB, wch clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	timeout := time.After(5 * time.Second)
	for len(evs) < n {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch ended: %v", wr.Err())
			}
			evs = append(evs, wr.Events...)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(evs), n)
		}
	}
	if len(evs) != n {
		t.Fatalf("got %d events, want %d: %v", len(evs), n, evs)
	}
	return evs
}

// Release after another holder took the key must not delete the new
// holder's key nor leave a marker.
func TestReleaseDoesNotDeleteNewHolder(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli1, cli2, op := e.Client(), e.Client(), e.Client()
	pfx := prefix(t)
	claim := lease.Claim{Key: pfx + "owner", Value: "n1"}
	s1, s2 := newSession(t, cli1, 5*time.Second), newSession(t, cli2, 5*time.Second)
	h1 := acquire(t, s1, claim)
	if _, err := op.Delete(ctxT(t), claim.Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h1.Done(), time.Second, "old holding")
	claim.Value = "n2"
	h2 := acquire(t, s2, claim)
	before := get(t, op, claim.Key)

	if err := h1.Release(ctxT(t)); err != nil {
		t.Fatalf("stale Release: %v", err)
	}
	wantErr(t, h1.Err(), lease.ErrKeyDeleted, "old holding keeps its first reason")
	after := get(t, op, claim.Key)
	if after == nil || *after != *before {
		t.Fatalf("stale Release changed the new holder's key: %+v -> %+v", before, after)
	}
	if h2.Err() != nil {
		t.Fatalf("new holding ended: %v", h2.Err())
	}
	// Releasing twice is harmless too.
	if err := h2.Release(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := h2.Release(ctxT(t)); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

// An Acquire whose commit landed but whose reply was lost (outcome unknown)
// reconciles by reading the key: with its context still alive it returns
// the holding, with the claim's reads read afresh; with its context gone it
// returns ErrOutcomeUnknown, and the session deletes the key it then finds
// on its lease untracked. Either way no untracked key of the session is
// left behind.
func TestAcquireUnknownOutcome(t *testing.T) {
	t.Parallel()
	for _, ctxAlive := range []bool{true, false} {
		t.Run(fmt.Sprintf("ctxAlive=%v", ctxAlive), func(t *testing.T) {
			t.Parallel()
			e := leasetest.Start(t)
			direct := e.Client()
			cli, proxy := proxiedClient(t, e)
			// TTL 5s: the session survives the cut of about a second.
			s := newSession(t, cli, 5*time.Second)
			key := prefix(t) + "owner"
			if _, err := direct.Put(ctxT(t), prefix(t)+"marker", `{"node":"n0","reason":"drain"}`); err != nil {
				t.Fatal(err)
			}

			timeout := 10 * time.Second
			if !ctxAlive {
				timeout = 300 * time.Millisecond
			}
			type result struct {
				h   *lease.Holding
				err error
			}
			res := make(chan result, 1)
			proxy.Blackhole(false, true) // requests arrive, replies are lost
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			go func() {
				h, err := s.Acquire(ctx, lease.Claim{Key: key, Value: "n1", HandoffFrom: prefix(t) + "marker",
					Reads: []clientv3.Op{clientv3.OpGet(prefix(t) + "marker")}})
				res <- result{h, err}
			}()
			eventually(t, 5*time.Second, "the acquire committed", func() bool { return get(t, direct, key) != nil })
			committed := get(t, direct, key)
			if !ctxAlive {
				<-ctx.Done() // the caller gives up before the heal
			}
			proxy.Heal()
			var r result
			select {
			case r = <-res:
			case <-time.After(10 * time.Second):
				t.Fatal("Acquire did not return after the heal")
			}
			if s.Err() != nil {
				t.Fatalf("session ended: %v", s.Err())
			}
			if ctxAlive {
				if r.err != nil {
					t.Fatalf("Acquire: %v, want the holding it committed", r.err)
				}
				if r.h.Token() != committed.CreateRevision {
					t.Fatalf("token %d, key created at %d", r.h.Token(), committed.CreateRevision)
				}
				if m := r.h.Handoff(); m == nil || m.Node != "n0" {
					t.Fatalf("Handoff() = %+v after a reconciled acquire", m)
				}
				if rs := r.h.Reads(); len(rs) != 1 || len(rs[0].GetResponseRange().Kvs) != 1 {
					t.Fatalf("Reads() = %v after a reconciled acquire", rs)
				}
				// It is tracked: deleting the key ends it.
				if _, err := direct.Delete(ctxT(t), key); err != nil {
					t.Fatal(err)
				}
				waitClosed(t, r.h.Done(), time.Second, "reconciled holding after delete")
				return
			}
			if r.err == nil {
				t.Fatalf("Acquire succeeded after its context ended (token %d)", r.h.Token())
			}
			if !errors.Is(r.err, lease.ErrOutcomeUnknown) {
				t.Fatalf("Acquire: %v, want ErrOutcomeUnknown", r.err)
			}
			eventually(t, 5*time.Second, "the untracked key deleted", func() bool { return get(t, direct, key) == nil })
		})
	}
}

// A key on the session's lease that no holding tracks (an acquire whose
// proposal applied after the acquire gave up) is deleted by the session, if
// it is still that key; a key of another lease is left alone.
func TestUntrackedKeyOnOwnLeaseDeleted(t *testing.T) {
	t.Parallel()
	direct, s, own, orphans := withOrphan(t)
	g, err := direct.Grant(ctxT(t), 30)
	if err != nil {
		t.Fatal(err)
	}
	foreign := prefix(t) + "foreign"
	if _, err := direct.Put(ctxT(t), foreign, "n2", clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the untracked key on our lease deleted", func() bool { return get(t, direct, own) == nil })
	wantOneOrphan(t, orphans)
	if get(t, direct, foreign) == nil {
		t.Fatal("a key of another lease was deleted")
	}
	// A tracked key is not an orphan.
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "mine", Value: "n1"})
	if _, err := direct.Put(ctxT(t), prefix(t)+"noise", "x"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the watch passed the noise", func() bool { return orphans.Load() == 1 && h.Err() == nil })
	if kv := get(t, direct, h.Key()); kv == nil {
		t.Fatal("a tracked key was deleted")
	}
}

// withOrphan starts an etcd and a session counting OnOrphan calls, and
// puts a key on the session's lease that no holding tracks.
func withOrphan(t *testing.T) (direct *clientv3.Client, s *lease.Session, own string, orphans *atomic.Int32) {
	e := leasetest.Start(t)
	direct = e.Client()
	orphans = new(atomic.Int32)
	s = newSessionCfg(t, e.Client(), lease.Config{TTL: 5 * time.Second, OnOrphan: func(string) { orphans.Add(1) }})
	own = prefix(t) + "late"
	if _, err := direct.Put(ctxT(t), own, "n1", clientv3.WithLease(s.LeaseID())); err != nil {
		t.Fatal(err)
	}
	return direct, s, own, orphans
}

// wantOneOrphan waits for OnOrphan, which follows the delete's reply (the
// test may see the key gone first), and checks it came once.
func wantOneOrphan(t *testing.T, orphans *atomic.Int32) {
	t.Helper()
	eventually(t, 5*time.Second, "OnOrphan called", func() bool { return orphans.Load() >= 1 })
	if n := orphans.Load(); n != 1 {
		t.Fatalf("OnOrphan called %d times, want 1", n)
	}
}

// An orphan key whose delete fails (etcd did not answer) is deleted by a
// retry, with the session's watch healthy: nothing else would delete it
// before a relist, and the instance would stay unowned while the node
// lives. Not parallel: it replaces the package's orphan delete.
func TestOrphanDeleteRetried(t *testing.T) {
	restore := lease.FailOrphanDeletes(2, context.DeadlineExceeded)
	defer restore()
	direct, s, own, orphans := withOrphan(t)
	eventually(t, 10*time.Second, "the untracked key deleted after two failed deletes", func() bool { return get(t, direct, own) == nil })
	wantOneOrphan(t, orphans)
	if err := s.Err(); err != nil {
		t.Fatalf("session: %v", err)
	}
}

// AcquireMany takes many keys in few transactions, each claim decided on
// its own: free keys are taken (with their reads), held ones and failed
// conditions are refused, and every holding is tracked.
func TestAcquireMany(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	pfx := prefix(t)
	s1, s2 := newSession(t, cli, 5*time.Second), newSession(t, e.Client(), 5*time.Second)
	const n = 50 // two transactions' worth
	other := acquire(t, s2, lease.Claim{Key: fmt.Sprintf("%sowners/%03d", pfx, 7), Value: "n2"})
	if _, err := cli.Put(ctxT(t), pfx+"record", "r"); err != nil {
		t.Fatal(err)
	}
	stale := clientv3.Compare(clientv3.Value(pfx+"record"), "=", "not it")
	var claims []lease.Claim
	for i := 0; i < n; i++ {
		c := lease.Claim{Key: fmt.Sprintf("%sowners/%03d", pfx, i), Value: "n1", Reads: []clientv3.Op{clientv3.OpGet(pfx + "record")}}
		if i == 13 {
			c.Conditions = []clientv3.Cmp{stale}
		}
		claims = append(claims, c)
	}
	rs := s1.AcquireMany(ctxT(t), claims)
	for i, r := range rs {
		switch i {
		case 7:
			var he *lease.HeldError
			if !errors.As(r.Err, &he) || string(he.Value) != "n2" {
				t.Errorf("claim 7 (held by another): %v", r.Err)
			}
		case 13:
			if !errors.Is(r.Err, lease.ErrConditionFailed) {
				t.Errorf("claim 13 (failed condition): %v", r.Err)
			}
		default:
			if r.Err != nil {
				t.Fatalf("claim %d: %v", i, r.Err)
			}
			kv := get(t, cli, claims[i].Key)
			if kv == nil || kv.CreateRevision != r.Holding.Token() || kv.Lease != s1.LeaseID() {
				t.Fatalf("claim %d: key %+v, token %d", i, kv, r.Holding.Token())
			}
			if reads := r.Holding.Reads(); len(reads) != 1 || string(reads[0].GetResponseRange().Kvs[0].Value) != "r" {
				t.Fatalf("claim %d: reads %v", i, reads)
			}
		}
	}
	if s1.Held() != n-2 || other.Err() != nil {
		t.Fatalf("session holds %d, want %d; the other session's holding: %v", s1.Held(), n-2, other.Err())
	}
	// Tracked: deleting one ends its holding only.
	if _, err := cli.Delete(ctxT(t), claims[20].Key); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, rs[20].Holding.Done(), time.Second, "holding 20 after delete")
	if rs[21].Holding.Err() != nil {
		t.Fatalf("holding 21 ended: %v", rs[21].Holding.Err())
	}
}

// cutWatcher lets a test break the watches made through it, as a lost
// connection or a leader change does: Cut closes every watch channel
// handed out so far, without an error.
type cutWatcher struct {
	clientv3.Watcher
	mu  sync.Mutex
	cut chan struct{}
}

func newCutWatcher(cli *clientv3.Client) *cutWatcher {
	w := &cutWatcher{Watcher: cli.Watcher, cut: make(chan struct{})}
	cli.Watcher = w
	return w
}

func (w *cutWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.mu.Lock()
	cut := w.cut
	w.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	in := w.Watcher.Watch(wctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		defer cancel()
		for {
			select {
			case wr, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- wr:
				case <-cut:
					return
				}
			case <-cut:
				return
			}
		}
	}()
	return out
}

func (w *cutWatcher) Cut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.cut)
	w.cut = make(chan struct{})
}

// TestHoldingDoneOnDeleteDuringRelist: the session's watch breaks, and its
// fresh read of the prefix takes two pages; a held key deleted between
// them (present on page 1) must still end its holding. The read took every
// page at the first page's revision but watched on from the later
// revision etcd reported with the last page, so it missed the delete and
// the holding lived on without its key.
func TestHoldingDoneOnDeleteDuringRelist(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	w := newCutWatcher(cli)
	hook := leasetest.NewGetHook(cli)
	s := newSession(t, cli, 5*time.Second)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "a-owner", Value: "n1"})
	// Keys after it, so that the session's read of the prefix takes two
	// pages (1,000 keys each).
	for i := 0; i < 1000; {
		var ops []clientv3.Op
		for ; len(ops) < 100; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%sz-other-%04d", prefix(t), i), "n2"))
		}
		if _, err := op.Txn(ctxT(t)).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	paged := hook.Arm(leasetest.NextPage(prefix(t)), func() {
		if _, err := op.Delete(ctxT(t), h.Key()); err != nil {
			t.Errorf("delete %s: %v", h.Key(), err)
		}
	})
	w.Cut()
	waitClosed(t, paged, 5*time.Second, "the session's read of the prefix, second page")
	waitClosed(t, h.Done(), 5*time.Second, "holding Done after its key was deleted during the read")
	wantErr(t, h.Err(), lease.ErrKeyDeleted, "holding")
	if s.Err() != nil {
		t.Fatalf("session ended: %v", s.Err())
	}
}

// A fed session (Config.Fed) opens no watch of its own and learns from its
// caller's: a delete Observe'd ends the holding; a Resync listing without a
// held key ends that holding (its key went while the caller's watch was
// down) and keeps the others; an untracked key on the lease that the
// caller's watch shows is deleted, off the caller's goroutine.
func TestFedSession(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	var orphans atomic.Int32
	s := newSessionCfg(t, cli, lease.Config{TTL: 5 * time.Second, Fed: true, OnOrphan: func(string) { orphans.Add(1) }})
	p := prefix(t)

	// The caller's watch, from before any key.
	resp, err := op.Get(ctxT(t), p+"x")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := op.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	feed := make(chan struct{})
	go func() {
		defer close(feed)
		for wr := range wch {
			for _, ev := range wr.Events {
				s.Observe(ev)
			}
		}
	}()

	h := acquire(t, s, lease.Claim{Key: p + "a", Value: "n1"})
	if _, err := op.Delete(ctxT(t), h.Key()); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h.Done(), 5*time.Second, "fed holding after its key was deleted")
	wantErr(t, h.Err(), lease.ErrKeyDeleted, "fed holding")

	// Resync: b's key is gone from the listing (deleted while the caller's
	// watch was down: the test stops feeding), c's is there.
	cancel()
	<-feed
	hb := acquire(t, s, lease.Claim{Key: p + "b", Value: "n1"})
	hc := acquire(t, s, lease.Claim{Key: p + "c", Value: "n1"})
	if _, err := op.Delete(ctxT(t), hb.Key()); err != nil {
		t.Fatal(err)
	}
	list, err := op.Get(ctxT(t), p, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if hb.Err() != nil {
		t.Fatalf("the holding ended before the caller told the session (%v): the session watches by itself", hb.Err())
	}
	s.Resync(list.Kvs, list.Header.Revision)
	wantErr(t, hb.Err(), lease.ErrKeyDeleted, "holding absent from the Resync listing")
	if hc.Err() != nil {
		t.Fatalf("holding present in the listing ended: %v", hc.Err())
	}

	// An untracked key on the session's lease, shown by the caller's watch.
	g, err := op.Get(ctxT(t), p+"x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Put(ctxT(t), p+"orphan", "n1", clientv3.WithLease(s.LeaseID())); err != nil {
		t.Fatal(err)
	}
	evs := op.Watch(ctxT(t), p+"orphan", clientv3.WithRev(g.Header.Revision+1))
	wr := <-evs
	if len(wr.Events) != 1 {
		t.Fatalf("watch: %v %v", wr.Events, wr.Err())
	}
	s.Observe(wr.Events[0])
	eventually(t, 5*time.Second, "the untracked key deleted", func() bool { return get(t, op, p+"orphan") == nil })
	eventually(t, 5*time.Second, "OnOrphan called", func() bool { return orphans.Load() == 1 })
}
