package harness

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one change in etcd's history, as the recorder's watch saw it.
type KV struct {
	At        time.Duration // when the watch delivered it (after the commit)
	Rev       int64         // the revision of the transaction
	Delete    bool
	Key       string
	Value     []byte
	CreateRev int64
	Lease     int64
	PrevValue []byte
}

// Recorder keeps every change under a prefix, in revision order, stamped
// with its arrival on the scenario clock. It watches from revision 1, so it
// misses nothing even across etcd restarts (the client resumes the watch
// where it broke). Only Env.Compact compacts, after the recorder has seen
// every revision up to the compaction; a watch that breaks later resumes
// after it.
type Recorder struct {
	cli    *clientv3.Client
	prefix string
	clock  *Clock
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	kvs    []KV
	rev    int64
	err    error
	notify chan struct{}
	from   int64 // the next revision to watch from
	// compacted is the revision a scenario compacted etcd to: the history
	// up to it was verified before (Env.Compact), and cannot be read again.
	compacted int64
}

// NewRecorder starts watching prefix from revision 1.
func NewRecorder(cli *clientv3.Client, prefix string, clock *Clock) *Recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{cli: cli, prefix: prefix, clock: clock, cancel: cancel, done: make(chan struct{}), notify: make(chan struct{})}
	go r.run(ctx)
	return r
}

func (r *Recorder) run(ctx context.Context) {
	defer close(r.done)
	r.mu.Lock()
	r.from = 1
	r.mu.Unlock()
	for ctx.Err() == nil {
		r.mu.Lock()
		from := r.from
		r.mu.Unlock()
		wch := r.cli.Watch(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				break
			}
			at := r.clock.Now()
			r.mu.Lock()
			for _, ev := range wr.Events {
				kv := KV{
					At: at, Rev: ev.Kv.ModRevision, Delete: ev.Type == clientv3.EventTypeDelete,
					Key: string(ev.Kv.Key), Value: ev.Kv.Value, CreateRev: ev.Kv.CreateRevision, Lease: ev.Kv.Lease,
				}
				if ev.PrevKv != nil {
					kv.PrevValue = ev.PrevKv.Value
					if kv.Delete {
						kv.CreateRev = ev.PrevKv.CreateRevision
						kv.Lease = ev.PrevKv.Lease
					}
				}
				r.kvs = append(r.kvs, kv)
				r.from = ev.Kv.ModRevision + 1
			}
			if wr.Header.Revision > r.rev {
				r.rev = wr.Header.Revision
			}
			close(r.notify)
			r.notify = make(chan struct{})
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CatchUp waits until the recorder has seen every revision up to etcd's
// current one.
func (r *Recorder) CatchUp(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var target int64
	for {
		resp, err := r.cli.Get(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil {
			target = resp.Header.Revision
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: recorder: read etcd's revision: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A write outside the prefix moves the revision without an event here,
	// so progress is judged by the watch's header revision too.
	_, _ = r.cli.Put(ctx, r.prefix+"zz-recorder-mark", fmt.Sprint(target))
	for {
		r.mu.Lock()
		seen, notify, err := r.lastRev(), r.notify, r.err
		r.mu.Unlock()
		if seen >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: recorder saw revision %d of %d (last watch error: %v)", seen, target, err)
		case <-notify:
		}
	}
}

// catchUpTo waits until the recorder has seen revision rev: its watch
// delivered an event or a header at rev or later (a progress request
// makes etcd send the header when nothing under the prefix changed).
func (r *Recorder) catchUpTo(ctx context.Context, rev int64) error {
	for {
		r.mu.Lock()
		seen, notify := r.lastRev(), r.notify
		r.mu.Unlock()
		if seen >= rev {
			return nil
		}
		_ = r.cli.RequestProgress(ctx)
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: recorder saw revision %d of %d: %w", seen, rev, ctx.Err())
		case <-notify:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Recorder) lastRev() int64 {
	if n := len(r.kvs); n > 0 && r.kvs[n-1].Rev > r.rev {
		return r.kvs[n-1].Rev
	}
	return r.rev
}

// compact notes that etcd was compacted to rev, after the recorder saw
// every revision up to it: a watch that breaks resumes after rev (the
// revisions between its last event and rev hold nothing under the prefix).
func (r *Recorder) compact(rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.compacted = max(r.compacted, rev)
	r.from = max(r.from, rev+1)
}

// KVs returns every change recorded so far, in revision order.
func (r *Recorder) KVs() []KV {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]KV(nil), r.kvs...)
}

// Close stops the watch.
func (r *Recorder) Close() {
	r.cancel()
	<-r.done
}

// Verify reads etcd's whole history under the prefix again, from revision
// 1 (or from after the last compaction a scenario made, whose earlier
// history Env.Compact verified before), and compares it with what the
// recorder saw live: a committed change that etcd later lost (after a
// crash of its members, say) shows up as a difference.
func (r *Recorder) Verify(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r.mu.Lock()
	compacted := r.compacted
	r.mu.Unlock()
	var live []KV
	for _, kv := range r.KVs() {
		if kv.Rev > compacted {
			live = append(live, kv)
		}
	}
	if len(live) == 0 {
		return nil
	}
	target := live[len(live)-1].Rev
	var again []KV
	wch := r.cli.Watch(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(compacted+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("harness: re-read etcd history: %w", err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > target {
				break
			}
			again = append(again, KV{Rev: ev.Kv.ModRevision, Delete: ev.Type == clientv3.EventTypeDelete, Key: string(ev.Kv.Key), Value: ev.Kv.Value})
		}
		if n := len(again); n >= len(live) || n > 0 && again[n-1].Rev >= target {
			break
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("harness: re-read etcd history: %w", ctx.Err())
	}
	if len(again) != len(live) {
		return fmt.Errorf("harness: etcd's history has %d changes up to revision %d, the live watch saw %d", len(again), target, len(live))
	}
	for i := range live {
		a, b := live[i], again[i]
		if a.Rev != b.Rev || a.Key != b.Key || a.Delete != b.Delete || string(a.Value) != string(b.Value) {
			return fmt.Errorf("harness: etcd's history differs from what was seen live at change %d: live rev %d %s, now rev %d %s", i, a.Rev, a.Key, b.Rev, b.Key)
		}
	}
	return nil
}
