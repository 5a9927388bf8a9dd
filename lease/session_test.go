package lease_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/lease/leasetest"
)

func TestValidateTTL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ttl time.Duration
		ok  bool
	}{
		{2 * time.Second, true},
		{3 * time.Second, true},
		{10 * time.Second, true},
		{time.Hour, true},
		{0, false},
		{-2 * time.Second, false},
		{time.Second, false},
		{1999 * time.Millisecond, false},
		{2500 * time.Millisecond, false},
		{2*time.Second + time.Nanosecond, false},
	} {
		if err := lease.ValidateTTL(c.ttl); (err == nil) != c.ok {
			t.Errorf("ValidateTTL(%v) = %v, want ok=%v", c.ttl, err, c.ok)
		}
	}
}

// A TTL etcd would round or clamp is refused before any lease is granted.
func TestNewSessionRejectsBadTTL(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	for _, bad := range []time.Duration{time.Second, 2500 * time.Millisecond, 1500 * time.Millisecond, -time.Second} {
		s, err := lease.NewSession(ctxT(t), cli, lease.Config{TTL: bad, Logger: quiet, Prefix: prefix(t)})
		if err == nil {
			_ = s.Close(ctxT(t))
			t.Errorf("NewSession(TTL %v) succeeded, want an error", bad)
		}
	}
	if _, err := lease.NewSession(ctxT(t), cli, lease.Config{Logger: quiet}); err == nil {
		t.Error("NewSession without a Prefix succeeded, want an error")
	}
	resp, err := cli.Leases(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Leases) != 0 {
		t.Fatalf("refused sessions granted %d leases", len(resp.Leases))
	}
	// The zero TTL means the 10s default.
	s := newSessionCfg(t, cli, lease.Config{})
	if s.TTL() != 10*time.Second {
		t.Fatalf("default TTL = %v, want 10s", s.TTL())
	}
	ttlResp, err := cli.TimeToLive(ctxT(t), s.LeaseID())
	if err != nil || ttlResp.GrantedTTL != 10 {
		t.Fatalf("granted TTL = %+v, %v; want 10", ttlResp, err)
	}
}

// A session keeps its lease alive well past its TTL, and its safe-until
// deadline keeps moving forward without ever passing the server's expiry.
func TestSessionKeepsLeaseAlive(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, other := e.Client(), e.Client()
	var renewFailures atomic.Int32
	s := newSessionCfg(t, cli, lease.Config{TTL: ttl, OnRenewFailure: func(error) { renewFailures.Add(1) }})
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})

	start := time.Now()
	var prev time.Time
	advances := 0
	for time.Since(start) < 2*ttl+500*time.Millisecond {
		safe := s.SafeUntil()
		now := time.Now()
		if !safe.After(now) {
			t.Fatalf("at %v: SafeUntil is %v in the past while the session runs", now.Sub(start), now.Sub(safe))
		}
		// Safe-until is at most TTL x (1-drift) - margin after a send, and
		// every send was before now.
		if limit := now.Add(ttl*99/100 - ttl/10); safe.After(limit) {
			t.Fatalf("SafeUntil %v after now, more than TTL(1-rho)-margin", safe.Sub(now))
		}
		if safe.Before(prev) {
			t.Fatalf("SafeUntil went backwards by %v", prev.Sub(safe))
		}
		if safe.After(prev) {
			advances++
			prev = safe
		}
		q0 := time.Now()
		resp, err := other.TimeToLive(ctxT(t), s.LeaseID())
		q1 := time.Now()
		if err != nil {
			t.Fatalf("TimeToLive: %v", err)
		}
		if resp.TTL <= 0 {
			t.Fatalf("at %v: lease gone (TTL %d)", q0.Sub(start), resp.TTL)
		}
		// The server reports whole seconds, rounded down: its expiry lies
		// before q1 + TTL + 1s, and safe-until (read before q0) must be
		// earlier still.
		if upper := q1.Add(time.Duration(resp.TTL+1) * time.Second); !safe.Before(upper) {
			t.Fatalf("SafeUntil %v is not before the server's expiry estimate %v", safe.Sub(q0), upper.Sub(q0))
		}
		if kv := get(t, other, h.Key()); kv == nil || kv.Lease != s.LeaseID() {
			t.Fatalf("owners key gone or on another lease: %+v", kv)
		}
		time.Sleep(100 * time.Millisecond) // poll interval, not an assertion
	}
	// TTL/3 keepalives over 2 TTLs: the initial grant plus about 6 renewals.
	if advances < 5 {
		t.Fatalf("SafeUntil advanced %d times over %v, want at least 5", advances, time.Since(start))
	}
	if err := s.Err(); err != nil || isClosed(s.Done()) || isClosed(h.Done()) {
		t.Fatalf("session ended: %v, holding: %v", err, h.Err())
	}
	if n := renewFailures.Load(); n != 0 {
		t.Fatalf("%d renew failures on a healthy etcd", n)
	}
	t.Logf("lease alive for %v with TTL %v; SafeUntil advanced %d times", time.Since(start).Round(time.Millisecond), ttl, advances)
}

// Revoking the session's lease from another client (an operator's etcdctl
// lease revoke) ends every holding at once and the session at its next
// keepalive, well within a TTL.
func TestLeaseRevokedEndsSession(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, op := e.Client(), e.Client()
	s := newSession(t, cli, ttl)
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})

	revoked := time.Now()
	if _, err := op.Revoke(ctxT(t), s.LeaseID()); err != nil {
		t.Fatal(err)
	}
	hDone := waitClosed(t, h.Done(), time.Second, "holding Done after revoke")
	wantErr(t, h.Err(), lease.ErrKeyDeleted, "holding")
	sDone := waitClosed(t, s.Done(), ttl, "session Done after revoke")
	wantErr(t, s.Err(), lease.ErrLeaseExpired, "session")
	if cause := context.Cause(s.Context()); !errors.Is(cause, lease.ErrLeaseExpired) {
		t.Fatalf("session context cause = %v, want ErrLeaseExpired", cause)
	}
	// Less than one keepalive interval (TTL/3) plus slack.
	if d := sDone.Sub(revoked); d > ttl/3+500*time.Millisecond {
		t.Fatalf("session noticed the revoke after %v, want about TTL/3 = %v", d, ttl/3)
	}
	t.Logf("after revoke: holding Done in %v, session Done in %v (TTL %v)",
		hDone.Sub(revoked).Round(time.Millisecond), sDone.Sub(revoked).Round(time.Millisecond), ttl)

	if _, err := s.Acquire(ctxT(t), lease.Claim{Key: prefix(t) + "other"}); !errors.Is(err, lease.ErrLeaseExpired) {
		t.Fatalf("Acquire on an ended session: %v, want ErrLeaseExpired", err)
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatalf("Close after the lease was revoked: %v", err)
	}
}

// Abandon stops the session as a crash would: nothing is revoked, the keys
// stay until etcd expires the lease (after safe-until), then another session
// can take them.
func TestAbandon(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, other := e.Client(), e.Client()
	key := prefix(t) + "owner"
	s := newSession(t, cli, ttl)
	h := acquire(t, s, lease.Claim{Key: key, Value: "n1"})
	deleted := watchDeletion(t, other, key, h.Token()+1)

	abandoned := time.Now()
	s.Abandon()
	safe := s.SafeUntil()
	if !isClosed(s.Done()) || !isClosed(h.Done()) {
		t.Fatal("Abandon returned before Done closed")
	}
	wantErr(t, s.Err(), lease.ErrSessionClosed, "session")
	wantErr(t, h.Err(), lease.ErrSessionClosed, "holding")
	if kv := get(t, other, key); kv == nil || kv.CreateRevision != h.Token() {
		t.Fatalf("owners key right after Abandon = %+v, want it still there", kv)
	}
	if resp, err := other.TimeToLive(ctxT(t), s.LeaseID()); err != nil || resp.TTL <= 0 {
		t.Fatalf("lease right after Abandon: %+v, %v; want alive", resp, err)
	}

	var gone time.Time
	select {
	case gone = <-deleted:
	case <-time.After(ttl + 3*time.Second):
		t.Fatal("owners key not deleted by lease expiry")
	}
	// The last keepalive was at most TTL/3 before Abandon, so the key lives
	// at least 2/3 TTL more; the server may take its expiry tick (500ms)
	// on top of the TTL.
	if d := gone.Sub(abandoned); d < ttl*2/3-100*time.Millisecond || d > ttl+1500*time.Millisecond {
		t.Fatalf("owners key deleted %v after Abandon, want between 2/3 TTL and TTL + expiry processing", d)
	}
	if !gone.After(safe) {
		t.Fatalf("the server expired the lease %v before the session's safe-until", safe.Sub(gone))
	}
	t.Logf("Abandon: key expired %v after Abandon, %v after SafeUntil", gone.Sub(abandoned).Round(time.Millisecond), gone.Sub(safe).Round(time.Millisecond))

	s2 := newSession(t, other, ttl)
	h2 := acquire(t, s2, lease.Claim{Key: key, Value: "n2"})
	if h2.Token() <= h.Token() {
		t.Fatalf("new token %d not above old %d", h2.Token(), h.Token())
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatalf("Close after Abandon: %v", err)
	}
}

// Close revokes the lease: every key of the session is gone when it returns.
func TestCloseRevokes(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, other := e.Client(), e.Client()
	pfx := prefix(t)
	s := newSession(t, cli, 5*time.Second)
	var hs []*lease.Holding
	for _, k := range []string{"a", "b", "c"} {
		hs = append(hs, acquire(t, s, lease.Claim{Key: pfx + k, Value: k}))
	}
	if resp, err := other.Get(ctxT(t), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 3 {
		t.Fatalf("before Close: %v keys, %v", resp, err)
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	resp, err := other.Get(ctxT(t), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("right after Close: %d keys left (%v), want 0", resp.Count, err)
	}
	if ttlResp, err := other.TimeToLive(ctxT(t), s.LeaseID()); err != nil || ttlResp.TTL != -1 {
		t.Fatalf("lease after Close: %+v, %v; want revoked", ttlResp, err)
	}
	wantErr(t, s.Err(), lease.ErrSessionClosed, "session")
	for _, h := range hs {
		if !isClosed(h.Done()) {
			t.Fatalf("holding %s not done after Close", h.Key())
		}
		wantErr(t, h.Err(), lease.ErrSessionClosed, "holding "+h.Key())
	}
	if err := s.Close(ctxT(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Acquire(ctxT(t), lease.Claim{Key: pfx + "d"}); !errors.Is(err, lease.ErrSessionClosed) {
		t.Fatalf("Acquire after Close: %v, want ErrSessionClosed", err)
	}
	if resp, _ := other.Get(ctxT(t), pfx+"d"); len(resp.Kvs) != 0 {
		t.Fatal("Acquire after Close wrote its key")
	}
}

// Self-fencing: when the node is cut from etcd, the session ends with
// ErrSafeDeadline at safe-until, before a TTL has passed since the last
// acknowledged keepalive, and strictly before etcd expires the lease and
// deletes the owners key (seen from a client that is not cut off).
func TestSafeDeadlineSelfFencing(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"blackhole", "blackhole-rx-only"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			e := leasetest.Start(t)
			direct := e.Client()
			cli, proxy := proxiedClient(t, e)
			var renewFailures atomic.Int32
			s := newSessionCfg(t, cli, lease.Config{TTL: ttl, OnRenewFailure: func(error) { renewFailures.Add(1) }})
			key := prefix(t) + "owner"
			h := acquire(t, s, lease.Claim{Key: key, Value: "n1"})
			deleted := watchDeletion(t, direct, key, h.Token()+1)

			// Let at least one keepalive be acknowledged through the proxy.
			first := s.SafeUntil()
			eventually(t, 2*ttl, "a keepalive acknowledged", func() bool { return s.SafeUntil().After(first) })

			cut := time.Now()
			// rx-only: requests still reach etcd (keepalives renew the
			// lease there) but no reply comes back; the session cannot know,
			// so it must stop anyway.
			proxy.Blackhole(mode == "blackhole", true)
			sDone := waitClosed(t, s.Done(), ttl+time.Second, "session Done after the cut")
			wantErr(t, s.Err(), lease.ErrSafeDeadline, "session")
			if cause := context.Cause(s.Context()); !errors.Is(cause, lease.ErrSafeDeadline) {
				t.Fatalf("session context cause = %v", cause)
			}
			hDone := waitClosed(t, h.Done(), 100*time.Millisecond, "holding Done with the session")
			wantErr(t, h.Err(), lease.ErrSafeDeadline, "holding")

			safe := s.SafeUntil()
			if sDone.Before(safe) {
				t.Fatalf("session ended %v before its SafeUntil", safe.Sub(sDone))
			}
			// SafeUntil = lastSend + TTL(1-rho) - margin: the session must
			// stop before a full TTL has passed since that send.
			lastSend := safe.Add(-(ttl*99/100 - ttl/10))
			if d := sDone.Sub(lastSend); d >= ttl {
				t.Fatalf("session ended %v after the last acknowledged keepalive was sent, not before TTL %v", d, ttl)
			}
			if d := sDone.Sub(cut); d >= ttl {
				t.Fatalf("session ended %v after the cut, want less than TTL", d)
			}
			if renewFailures.Load() == 0 {
				t.Fatal("no renew failure reported while cut off")
			}
			proxy.Heal()

			if mode == "blackhole" {
				var gone time.Time
				select {
				case gone = <-deleted:
				case <-time.After(ttl + 3*time.Second):
					t.Fatal("etcd did not expire the cut-off session's lease")
				}
				if !gone.After(sDone) || !gone.After(hDone) {
					t.Fatalf("etcd deleted the owners key %v before the session stopped", sDone.Sub(gone))
				}
				t.Logf("cut at 0: session Done at %v (SafeUntil %v, %v after the last acknowledged send), etcd deleted the key at %v: %v after self-fencing",
					sDone.Sub(cut).Round(time.Millisecond), safe.Sub(cut).Round(time.Millisecond), sDone.Sub(lastSend).Round(time.Millisecond),
					gone.Sub(cut).Round(time.Millisecond), gone.Sub(sDone).Round(time.Millisecond))
			} else {
				t.Logf("rx cut at 0: session Done at %v (SafeUntil %v, %v after the last acknowledged send)",
					sDone.Sub(cut).Round(time.Millisecond), safe.Sub(cut).Round(time.Millisecond), sDone.Sub(lastSend).Round(time.Millisecond))
			}
			// An ended session is closed without error (it cannot revoke a
			// lease it no longer trusts, and does not need to).
			if err := s.Close(ctxT(t)); err != nil {
				t.Fatalf("Close after self-fencing: %v", err)
			}
		})
	}
}

// A keepalive that fails without ending the session is reported, and the
// session survives a cut shorter than its safe window.
func TestShortCutSurvives(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, proxy := proxiedClient(t, e)
	var renewFailures atomic.Int32
	s := newSessionCfg(t, cli, lease.Config{TTL: 3 * time.Second, OnRenewFailure: func(error) { renewFailures.Add(1) }})
	h := acquire(t, s, lease.Claim{Key: prefix(t) + "owner", Value: "n1"})

	// Cut right after a keepalive was acknowledged, for less than the safe
	// window minus the time a reconnect needs.
	first := s.SafeUntil()
	eventually(t, 3*time.Second, "a keepalive acknowledged", func() bool { return s.SafeUntil().After(first) })
	before := s.SafeUntil()
	proxy.Blackhole(true, true)
	time.Sleep(1200 * time.Millisecond) // the length of the cut, not an assertion
	proxy.Heal()
	eventually(t, 3*time.Second, "a keepalive acknowledged after the heal", func() bool {
		return s.SafeUntil().After(before) || s.Err() != nil
	})
	if err := s.Err(); err != nil {
		t.Fatalf("session ended by a %v cut with TTL 3s: %v", 1200*time.Millisecond, err)
	}
	if h.Err() != nil {
		t.Fatalf("holding ended: %v", h.Err())
	}
	// clientv3's KeepAliveOnce retries a broken stream by itself until the
	// session's deadline, so a cut that heals in time may report no failure.
	t.Logf("renew failures reported for a %v cut: %d", 1200*time.Millisecond, renewFailures.Load())
}

// A keepalive whose round trip is slower than the keepalive interval still
// renews the lease: with TTL 2s (interval 667 ms), replies 800 ms late keep
// the session alive (an attempt is not cut at the interval, and the next
// goes out beside it).
func TestSlowKeepaliveSurvives(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli, proxy := proxiedClient(t, e)
	s := newSession(t, cli, ttl)
	first := s.SafeUntil()
	eventually(t, 3*time.Second, "a keepalive acknowledged", func() bool { return s.SafeUntil().After(first) })
	proxy.DelayRx(800 * time.Millisecond)
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if err := s.Err(); err != nil {
			t.Fatalf("session ended with keepalive replies 800 ms late and TTL %v: %v", ttl, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	proxy.Heal()
	ttlResp, err := e.Client().TimeToLive(ctxT(t), s.LeaseID())
	if err != nil || ttlResp.TTL <= 0 {
		t.Fatalf("lease after the slow period: %+v, %v", ttlResp, err)
	}
}
