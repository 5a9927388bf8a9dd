package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
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
	// revoke, or the holder's own final write).
	ErrKeyDeleted = errors.New("lease: owners key deleted")
	// ErrKeyReplaced: the owners key now has another creator.
	ErrKeyReplaced = errors.New("lease: owners key replaced")
	// ErrReleased: the holder released the instance.
	ErrReleased = errors.New("lease: released")
	// ErrHeld: another holder has the key.
	ErrHeld = errors.New("lease: already held")
	// ErrConditionFailed: the key was free but a Claim condition failed.
	ErrConditionFailed = errors.New("lease: claim condition failed")
	// ErrOutcomeUnknown: an Acquire's commit may or may not have applied,
	// and reading did not tell before the context ended. If it applies
	// later, the session deletes the key it finds on its lease untracked.
	ErrOutcomeUnknown = errors.New("lease: the outcome of the acquire is unknown")
)

// Config configures a Session.
type Config struct {
	// Prefix is where every key the session acquires lives (the owners
	// keys). The session watches it (or is fed, Fed), with one watch for all its holdings, to
	// end a holding whose key is deleted or replaced, and to delete any key
	// on its lease that no holding tracks. Required.
	Prefix string
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
	// OnOrphan, if set, is called for every key on the session's lease that
	// no holding tracked, after the session deleted it.
	OnOrphan func(key string)
	// Fed, if true, means the caller already watches Prefix and feeds the
	// session every change under it, in revision order (Observe), and what
	// it read when it listed the prefix again (Resync): the session then
	// opens no watch of its own. etcd sends each change under the prefix
	// to one watcher less per session. The guarantees are the watch's, as
	// long as the caller's watch is (WithRequireLeader, relisted when it
	// breaks).
	Fed bool
}

// ValidateTTL checks that ttl is whole seconds and at least 2s.
func ValidateTTL(ttl time.Duration) error {
	if ttl < 2*time.Second || ttl%time.Second != 0 {
		return fmt.Errorf("lease: TTL %v must be whole seconds and at least 2s (etcd rounds and clamps others)", ttl)
	}
	return nil
}

// maxKeepalivesInFlight bounds the keepalives outstanding at once.
const maxKeepalivesInFlight = 3

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
	ctx    context.Context // cancelled when the session ends; every holding's parent
	cancel context.CancelCauseFunc
	loopWG sync.WaitGroup

	mu        sync.Mutex
	safeUntil time.Time
	err       error
	holdings  map[string]*Holding
	pending   map[string]*pendingAcquire
	// retired are keys this session held and let go of without deleting
	// them (Lose, Forget), by token: not orphans when the watch shows them.
	retired map[string]int64
}

// pendingAcquire is an Acquire in progress; the watch notes a put of its
// key on this lease, which Acquire settles.
type pendingAcquire struct {
	sawPut int64 // CreateRevision of a put of the key on our lease, 0 if none
}

// NewSession grants a lease and starts keeping it alive and watching
// cfg.Prefix.
func NewSession(ctx context.Context, cli *clientv3.Client, cfg Config) (*Session, error) {
	if cfg.Prefix == "" {
		return nil, errors.New("lease: Config.Prefix is required: the session watches the keys it holds there")
	}
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
		cli: cli, cfg: cfg, log: cfg.Logger.With("lease_id", fmt.Sprintf("%016x", int64(resp.ID))),
		id: resp.ID, ctx: sctx, cancel: cancel,
		holdings: map[string]*Holding{}, pending: map[string]*pendingAcquire{}, retired: map[string]int64{},
	}
	s.safeUntil = s.deadline(sent, resp.TTL)
	s.loopWG.Add(1)
	go s.keepAlive()
	if !cfg.Fed {
		s.loopWG.Add(1)
		go s.watch(resp.Revision + 1)
	}
	return s, nil
}

// Observe is one change under Prefix from the caller's watch
// (Config.Fed), as the session's own watch would see it: a delete or a
// replacement of a held key ends its holding; a key on this session's
// lease that nothing tracks is deleted, on a goroutine of its own. It never
// waits for etcd, and may be called with the caller's locks held.
func (s *Session) Observe(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	if !s.underPrefix(key) {
		return
	}
	if ev.Type == clientv3.EventTypeDelete {
		s.deleted(key, ev.Kv.ModRevision)
		return
	}
	s.put(key, ev.Kv.CreateRevision, ev.Kv.ModRevision, clientv3.LeaseID(ev.Kv.Lease))
}

// Resync is the caller's fresh read of its range at revision rev
// (Config.Fed), after its watch broke: every key under Prefix then, with
// any others, which are ignored. A holding whose key is not among them ends
// (its key went while the watch was down), and untracked keys on the lease
// are deleted, as after the session's own relist. It never waits for etcd.
func (s *Session) Resync(kvs []*mvccpb.KeyValue, rev int64) {
	present := map[string]int64{}
	for _, kv := range kvs {
		key := string(kv.Key)
		if !s.underPrefix(key) {
			continue
		}
		present[key] = kv.CreateRevision
		s.put(key, kv.CreateRevision, kv.ModRevision, clientv3.LeaseID(kv.Lease))
	}
	s.loseAbsent(present, rev)
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
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

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

// Held is the number of holdings the session tracks.
func (s *Session) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.holdings)
}

// end ends the session once with err, and every holding with it.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	held := s.holdings
	s.holdings = map[string]*Holding{}
	s.mu.Unlock()
	s.cancel(err)
	for _, h := range held {
		h.end(err)
	}
	if !errors.Is(err, ErrSessionClosed) {
		s.log.Warn("etcd session ended; every held instance stops", "error", err)
	}
}

// keepAlive renews the lease every TTL/3. An attempt may take up to a TTL
// (a slow round trip still renews: the session ends at safe-until anyway,
// which cancels it), and every interval another is sent beside those
// outstanding (at most maxKeepalivesInFlight), so a keepalive stuck on a
// dead connection does not hold up the next.
func (s *Session) keepAlive() {
	defer s.loopWG.Done()
	interval := s.cfg.TTL / 3
	type result struct {
		sent time.Time
		ttl  int64
		err  error
	}
	results := make(chan result, maxKeepalivesInFlight)
	var inFlight []time.Time // send times of the keepalives outstanding
	var attempts sync.WaitGroup
	defer attempts.Wait()
	send := func() {
		attempts.Add(1)
		sent := time.Now()
		inFlight = append(inFlight, sent)
		go func() {
			defer attempts.Done()
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.TTL)
			resp, err := s.cli.KeepAliveOnce(ctx, s.id)
			cancel()
			r := result{sent: sent, err: err}
			if err == nil {
				r.ttl = resp.TTL
			}
			results <- r
		}()
	}
	next := time.Now().Add(interval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		safe := s.SafeUntil()
		wait := min(time.Until(next), time.Until(safe))
		timer.Reset(max(wait, 0))
		select {
		case <-s.ctx.Done():
			return
		case r := <-results:
			for i, t := range inFlight {
				if t.Equal(r.sent) {
					inFlight = append(inFlight[:i], inFlight[i+1:]...)
					break
				}
			}
			switch {
			case r.err == nil:
				s.mu.Lock()
				if d := s.deadline(r.sent, r.ttl); d.After(s.safeUntil) {
					s.safeUntil = d
				}
				s.mu.Unlock()
				if n := r.sent.Add(interval); n.After(next) {
					next = n
				}
			case errors.Is(r.err, rpctypes.ErrLeaseNotFound):
				s.end(ErrLeaseExpired)
				return
			case s.ctx.Err() != nil:
				return
			default:
				if s.cfg.OnRenewFailure != nil {
					s.cfg.OnRenewFailure(r.err)
				}
				s.log.Warn("lease keepalive failed; retrying", "error", r.err, "safe_for", time.Until(s.SafeUntil()).Round(time.Millisecond))
				if soon := time.Now().Add(min(200*time.Millisecond, interval)); soon.Before(next) {
					next = soon
				}
			}
			continue
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
		if len(inFlight) > 0 && now.Sub(inFlight[0]) > interval*9/10 {
			// The previous keepalive is still unanswered: report it as a
			// failure (the metric operators watch), and send another.
			err := fmt.Errorf("lease: keepalive unanswered after %v", interval.Round(time.Millisecond))
			if s.cfg.OnRenewFailure != nil {
				s.cfg.OnRenewFailure(err)
			}
			s.log.Warn("lease keepalive unanswered; sending another", "safe_for", time.Until(safe).Round(time.Millisecond))
		}
		if len(inFlight) < maxKeepalivesInFlight {
			send()
		}
		next = now.Add(interval)
	}
}

// watch follows every key under the prefix from rev on: a delete or a
// replacement of a held key ends its holding; a key on this session's lease
// that nothing tracks is deleted. A broken or compacted watch reads the
// prefix again and watches on from that read.
func (s *Session) watch(rev int64) {
	defer s.loopWG.Done()
	prefix := s.cfg.Prefix
	b := newBackoff(100*time.Millisecond, 2*time.Second)
	for s.ctx.Err() == nil {
		wch := s.cli.Watch(clientv3.WithRequireLeader(s.ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					s.deleted(string(ev.Kv.Key), ev.Kv.ModRevision)
				} else {
					s.put(string(ev.Kv.Key), ev.Kv.CreateRevision, ev.Kv.ModRevision, clientv3.LeaseID(ev.Kv.Lease))
				}
			}
			b.Reset()
		}
		if s.ctx.Err() != nil {
			return
		}
		next, err := s.relist()
		if err != nil {
			select {
			case <-s.ctx.Done():
			case <-time.After(b.NextBackOff()):
			}
			continue
		}
		rev = next
	}
}

// relist checks every holding and every key on the lease against a fresh
// read, in pages at the first page's revision, and returns the revision to
// watch from: the one after it. (A response's header carries etcd's
// current revision even when the read asked for an older one; watching on
// from a later page's would skip what changed on the first pages meanwhile.)
func (s *Session) relist() (int64, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	end := clientv3.GetPrefixRangeEnd(s.cfg.Prefix)
	present := map[string]int64{}
	var rev int64
	from := s.cfg.Prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			present[string(kv.Key)] = kv.CreateRevision
			s.put(string(kv.Key), kv.CreateRevision, kv.ModRevision, clientv3.LeaseID(kv.Lease))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	s.loseAbsent(present, rev)
	return rev + 1, nil
}

// loseAbsent ends the holdings whose keys a read at rev did not find
// (present), unless they were taken after it.
func (s *Session) loseAbsent(present map[string]int64, rev int64) {
	s.mu.Lock()
	var gone []*Holding
	for key, h := range s.holdings {
		if _, ok := present[key]; !ok && h.token <= rev {
			gone = append(gone, h)
		}
	}
	s.mu.Unlock()
	for _, h := range gone {
		h.lose(ErrKeyDeleted)
	}
}

func (s *Session) deleted(key string, rev int64) {
	s.mu.Lock()
	h := s.holdings[key]
	delete(s.retired, key)
	s.mu.Unlock()
	if h != nil && rev > h.token {
		h.lose(ErrKeyDeleted)
	}
}

func (s *Session) put(key string, created, modified int64, leaseID clientv3.LeaseID) {
	s.mu.Lock()
	h := s.holdings[key]
	p := s.pending[key]
	if h == nil && p != nil && leaseID == s.id {
		p.sawPut = created
	}
	retired := s.retired[key] == created
	s.mu.Unlock()
	if retired {
		return
	}
	switch {
	case h != nil:
		if created != h.token && modified > h.token {
			h.lose(ErrKeyReplaced)
		}
	case p == nil && leaseID == s.id:
		s.orphan(key, created)
	}
}

// orphan deletes a key on this session's lease that no holding tracks
// (an acquire that applied after it gave up), if it is still that key. A
// delete that fails is tried again in the background, with backoff, until
// it lands, the key changes or the session ends: nothing else would delete
// the key before the session's next relist (a broken watch), and every
// node skips an instance whose owners key exists.
func (s *Session) orphan(key string, created int64) {
	// A fed session is called from its caller's watch, perhaps under the
	// caller's locks: even the first attempt goes to the goroutine.
	if !s.cfg.Fed && s.deleteOrphan(key, created) == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil { // ended: the lease and its keys go with it
		return
	}
	s.loopWG.Add(1) // before end, hence before Close's Wait
	go func() {
		defer s.loopWG.Done()
		b := newBackoff(200*time.Millisecond, 5*time.Second)
		var wait time.Duration
		if !s.cfg.Fed {
			wait = b.NextBackOff() // the first attempt failed
		}
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(wait):
			}
			if s.deleteOrphan(key, created) == nil {
				return
			}
			wait = b.NextBackOff()
		}
	}()
}

// orphanTxn is the delete of an orphan key; tests replace it.
var orphanTxn = func(ctx context.Context, cli *clientv3.Client, key string, created int64) (*clientv3.TxnResponse, error) {
	return cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", created)).
		Then(clientv3.OpDelete(key)).Commit()
}

// deleteOrphan tries the delete once; it returns the error of an attempt
// that could not tell (nil if the key is gone, or is another key now).
func (s *Session) deleteOrphan(key string, created int64) error {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	resp, err := orphanTxn(ctx, s.cli, key, created)
	switch {
	case err != nil:
		if s.ctx.Err() == nil {
			s.log.Warn("cannot delete an untracked key on this session's lease yet; trying again", "key", key, "error", err)
		}
		return err
	case resp.Succeeded:
		s.log.Warn("deleted an untracked key on this session's lease (an acquire that applied after it gave up)", "key", key)
		if s.cfg.OnOrphan != nil {
			s.cfg.OnOrphan(key)
		}
	}
	return nil
}

// Close ends the session and revokes its lease, which deletes every key on
// it at once (a node's graceful exit). It waits for the background loops.
func (s *Session) Close(ctx context.Context) error {
	alive := s.Err() == nil
	s.end(ErrSessionClosed)
	s.loopWG.Wait()
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
	s.loopWG.Wait()
}

func (s *Session) underPrefix(key string) bool { return strings.HasPrefix(key, s.cfg.Prefix) }

// newBackoff is the exponential backoff with jitter of the package's retry
// loops.
func newBackoff(first, max time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{InitialInterval: first, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: max}
	b.Reset()
	return b
}
