package lease

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// FailOrphanDeletes makes the next n deletes of orphan keys fail with err
// and returns a function that restores the real delete. Tests that use it
// must not run in parallel with others of the package that delete orphans.
func FailOrphanDeletes(n int, err error) (restore func()) {
	real := orphanTxn
	var left atomic.Int32
	left.Store(int32(n))
	orphanTxn = func(ctx context.Context, cli *clientv3.Client, key string, created int64) (*clientv3.TxnResponse, error) {
		if left.Add(-1) >= 0 {
			return nil, err
		}
		return real(ctx, cli, key, created)
	}
	return func() { orphanTxn = real }
}

// SawPut reports whether the session's watch saw key made on its lease
// while an acquire or a landing of it is pending.
func SawPut(s *Session, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[key]
	return p != nil && p.sawPut != 0
}
