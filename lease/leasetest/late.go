package leasetest

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LateTxns makes transactions of cli apply late: while armed, the next
// transaction committed through cli returns context.DeadlineExceeded at
// once and is sent to etcd only after the delay - a proposal that applies
// after its caller gave up, the case an unknown outcome must cover. Arm
// says how many transactions to delay; Applied is closed once the last of
// them has been applied.
type LateTxns struct {
	clientv3.KV // everything but Txn goes straight through
	kv          clientv3.KV
	delay       time.Duration

	mu      sync.Mutex
	armed   int
	match   func(ops []clientv3.Op) bool
	applied chan struct{}
	wg      sync.WaitGroup
}

// NewLateTxns wraps cli's KV; cli's Txn goes through it from now on.
func NewLateTxns(cli *clientv3.Client, delay time.Duration) *LateTxns {
	l := &LateTxns{KV: cli.KV, kv: cli.KV, delay: delay}
	cli.KV = l
	return l
}

// Arm delays the next n transactions whose Then ops match (nil matches
// every transaction) and returns a channel closed once all were applied.
func (l *LateTxns) Arm(n int, match func(ops []clientv3.Op) bool) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed, l.match, l.applied = n, match, make(chan struct{})
	return l.applied
}

// Wait waits for the delayed transactions to be sent.
func (l *LateTxns) Wait() { l.wg.Wait() }

func (l *LateTxns) Txn(ctx context.Context) clientv3.Txn { return &lateTxn{l: l, ctx: ctx} }

type lateTxn struct {
	l         *LateTxns
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *lateTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.cmps = append(t.cmps, cs...); return t }
func (t *lateTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.then = append(t.then, ops...); return t }
func (t *lateTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.els = append(t.els, ops...); return t }

func (t *lateTxn) Commit() (*clientv3.TxnResponse, error) {
	l := t.l
	l.mu.Lock()
	late := l.armed > 0 && (l.match == nil || l.match(t.then))
	var applied chan struct{}
	if late {
		l.armed--
		if l.armed == 0 {
			applied = l.applied
		}
		l.wg.Add(1)
	}
	l.mu.Unlock()
	real := func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return l.kv.Txn(ctx).If(t.cmps...).Then(t.then...).Else(t.els...).Commit()
	}
	if !late {
		return real(t.ctx)
	}
	go func() {
		defer l.wg.Done()
		time.Sleep(l.delay)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = real(ctx)
		if applied != nil {
			close(applied)
		}
	}()
	return nil, context.DeadlineExceeded
}
