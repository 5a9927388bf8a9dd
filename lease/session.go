package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors that say why a session or a holding ended. Match with errors.Is.
var (
	// ErrSessionClosed: the session was closed by its owner (Close or Abandon).
	ErrSessionClosed = errors.New("lease: session closed")
	// ErrLeaseExpired: etcd no longer knows the session's lease (it expired
	// or an operator revoked it).
	ErrLeaseExpired = errors.New("lease: session lease expired or revoked")
	// ErrSafeDeadline: no keepalive was acknowledged in time, so the session
	// stopped itself before etcd could expire its lease.
	ErrSafeDeadline = errors.New("lease: safe-until deadline passed without an acknowledged keepalive")
	// ErrKeyDeleted: the owners key was deleted (an operator's del, a lease
	// revoke, or a start with terminateExisting).
	ErrKeyDeleted = errors.New("lease: owners key deleted")
	// ErrKeyReplaced: the owners key now has another creator.
	ErrKeyReplaced = errors.New("lease: owners key replaced")
	// ErrReleased: the holder released the instance.
	ErrReleased = errors.New("lease: released")
	// ErrHeld: another holder has the key.
	ErrHeld = errors.New("lease: already held")
	// ErrConditionFailed: the key was free but a Claim condition failed.
	ErrConditionFailed = errors.New("lease: claim condition failed")
)

// Config configures a Session.
type Config struct {
	// TTL is the lease TTL: whole seconds, at least 2s (etcd clamps smaller
	// values). Defaults to 10s.
	TTL time.Duration
	// Drift is the assumed relative clock-rate error between this process
	// and the etcd leader (rho). Defaults to 0.01.
	Drift float64
	// Margin is subtracted from every safe-until deadline. Defaults to
	// max(100ms, TTL/10).
	Margin time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnRenewFailure, if set, is called for every keepalive that failed
	// without ending the session.
	OnRenewFailure func(err error)
}

// ValidateTTL checks that ttl is whole seconds and at least 2s.
func ValidateTTL(ttl time.Duration) error {
	if ttl < 2*time.Second || ttl%time.Second != 0 {
		return fmt.Errorf("lease: TTL %v must be whole seconds and at least 2s (etcd rounds and clamps others)", ttl)
	}
	return nil
}

// Session is one lease on etcd, kept alive for as long as the session runs.
// Every key a node holds is attached to it, so one keepalive covers them all.
//
// The session tracks its own safe-until deadline: the send time of the last
// acknowledged keepalive + TTL x (1 - Drift) - Margin, on the monotonic
// clock. etcd's leader starts its expiry countdown no earlier than it
// receives that keepalive, so absent process pauses a session ends here
// before etcd can expire the lease and give its keys to someone else.
type Session struct {
	cli    *clientv3.Client
	cfg    Config
	log    *slog.Logger
	id     clientv3.LeaseID
	ctx    context.Context // cancelled when the session ends
	cancel context.CancelCauseFunc
	done   chan struct{}
	loopWG sync.WaitGroup

	mu        sync.Mutex
	safeUntil time.Time
	err       error
	holdings  map[*Holding]struct{}
	wg        sync.WaitGroup // holdings' watchers
}

// NewSession grants a lease and starts keeping it alive.
func NewSession(ctx context.Context, cli *clientv3.Client, cfg Config) (*Session, error) {
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if err := ValidateTTL(cfg.TTL); err != nil {
		return nil, err
	}
	if cfg.Drift <= 0 {
		cfg.Drift = 0.01
	}
	if cfg.Margin <= 0 {
		cfg.Margin = max(100*time.Millisecond, cfg.TTL/10)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sent := time.Now()
	resp, err := cli.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("lease: grant: %w", err)
	}
	sctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		cli: cli, cfg: cfg, log: cfg.Logger.With("lease_id", fmt.Sprintf("%x", int64(resp.ID))),
		id: resp.ID, ctx: sctx, cancel: cancel, done: make(chan struct{}),
		holdings: map[*Holding]struct{}{},
	}
	s.safeUntil = s.deadline(sent, resp.TTL)
	s.loopWG.Add(1)
	go s.keepAlive()
	return s, nil
}

func (s *Session) deadline(sent time.Time, ttlSeconds int64) time.Time {
	ttl := time.Duration(ttlSeconds) * time.Second
	return sent.Add(time.Duration(float64(ttl)*(1-s.cfg.Drift)) - s.cfg.Margin)
}

// LeaseID is the session's lease.
func (s *Session) LeaseID() clientv3.LeaseID { return s.id }

// TTL is the session's lease TTL.
func (s *Session) TTL() time.Duration { return s.cfg.TTL }

// Done is closed when the session has ended; Err says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Context is cancelled when the session ends, with Err as its cause.
func (s *Session) Context() context.Context { return s.ctx }

// Err is nil while the session runs, then the reason it ended.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// SafeUntil is the moment the session stops itself unless a keepalive is
// acknowledged before.
func (s *Session) SafeUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.safeUntil
}

// end ends the session once with err and ends every holding.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	hs := make([]*Holding, 0, len(s.holdings))
	for h := range s.holdings {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	s.cancel(err)
	for _, h := range hs {
		h.lose(err)
	}
	close(s.done)
	if !errors.Is(err, ErrSessionClosed) {
		s.log.Warn("etcd session ended", "error", err)
	}
}

func (s *Session) keepAlive() {
	defer s.loopWG.Done()
	interval := s.cfg.TTL / 3
	next := time.Now().Add(interval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		safe := s.SafeUntil()
		wait := time.Until(next)
		if until := time.Until(safe); until < wait {
			wait = until
		}
		timer.Reset(max(wait, 0))
		select {
		case <-s.ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(safe) {
			s.end(ErrSafeDeadline)
			return
		}
		if now.Before(next) {
			continue
		}
		// One attempt gets at most an interval, so a keepalive stuck on a
		// dead connection is retried (and counted) well before safe-until.
		kctx, cancel := context.WithDeadline(s.ctx, minTime(safe, now.Add(interval)))
		resp, err := s.cli.KeepAliveOnce(kctx, s.id)
		cancel()
		switch {
		case err == nil:
			s.mu.Lock()
			if d := s.deadline(now, resp.TTL); d.After(s.safeUntil) {
				s.safeUntil = d
			}
			s.mu.Unlock()
			next = now.Add(interval)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.end(ErrLeaseExpired)
			return
		case s.ctx.Err() != nil:
			return
		default:
			if s.cfg.OnRenewFailure != nil {
				s.cfg.OnRenewFailure(err)
			}
			s.log.Warn("lease keepalive failed; retrying", "error", err, "safe_for", time.Until(safe).Round(time.Millisecond))
			next = time.Now().Add(min(200*time.Millisecond, interval))
		}
	}
}

// Close ends the session and revokes its lease, which deletes every key on
// it at once (a node's graceful exit). It waits for the background loops.
func (s *Session) Close(ctx context.Context) error {
	alive := s.Err() == nil
	s.end(ErrSessionClosed)
	s.wait()
	if !alive {
		return nil
	}
	if _, err := s.cli.Revoke(ctx, s.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("lease: revoke %x: %w (its keys go when the TTL runs out)", int64(s.id), err)
	}
	return nil
}

// Abandon ends the session without revoking its lease, as a crash would:
// etcd expires the lease and its keys after the TTL. For tests and for a
// node that can no longer reach etcd.
func (s *Session) Abandon() {
	s.end(ErrSessionClosed)
	s.wait()
}

func (s *Session) wait() {
	s.loopWG.Wait()
	s.wg.Wait()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
