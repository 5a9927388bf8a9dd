package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The key ranges the benchmark watches (docs/contract.md section 5).
const (
	instancesPrefix = prefix + "v1/instances/"
	ownersPrefix    = prefix + "v1/owners/"
)

// terminal are the runtime statuses after which an instance does nothing.
var terminal = map[string]bool{"Completed": true, "Failed": true, "Terminated": true}

// final is how and when (as this process received the watch event) an
// instance reached a terminal status.
type final struct {
	status string
	at     time.Time
}

// statusWatch follows every instance record from one etcd watch and tells
// when each instance reaches a terminal status. It reads only instanceId
// and runtimeStatus of a record, so the record's other fields may change.
type statusWatch struct {
	cancel context.CancelFunc
	ended  chan struct{}

	mu       sync.Mutex
	finals   map[string]final
	waiters  map[string]chan struct{}
	unparsed int
	err      error
}

// watchStatuses starts the watch at the current revision.
func watchStatuses(ctx context.Context, cli *clientv3.Client) (*statusWatch, error) {
	resp, err := cli.Get(ctx, instancesPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("watch instances: %w", err)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	w := &statusWatch{cancel: cancel, ended: make(chan struct{}), finals: map[string]final{}, waiters: map[string]chan struct{}{}}
	wch := cli.Watch(wctx, instancesPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithFilterDelete())
	go w.loop(wctx, wch)
	return w, nil
}

func (w *statusWatch) loop(ctx context.Context, wch clientv3.WatchChan) {
	defer close(w.ended)
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("watch instances: %w", err))
			}
			return
		}
		now := time.Now()
		w.mu.Lock()
		for _, ev := range resp.Events {
			w.apply(ev, now)
		}
		w.mu.Unlock()
	}
	if ctx.Err() == nil {
		w.fail(fmt.Errorf("watch instances: closed by etcd"))
	}
}

// apply records one event; w.mu is held.
func (w *statusWatch) apply(ev *clientv3.Event, now time.Time) {
	var rec struct {
		InstanceID    string `json:"instanceId"`
		RuntimeStatus string `json:"runtimeStatus"`
	}
	if json.Unmarshal(ev.Kv.Value, &rec) != nil || rec.RuntimeStatus == "" {
		w.unparsed++
		return
	}
	id := rec.InstanceID
	if id == "" {
		id = strings.TrimPrefix(string(ev.Kv.Key), instancesPrefix)
	}
	if !terminal[rec.RuntimeStatus] {
		return
	}
	if _, seen := w.finals[id]; !seen {
		w.finals[id] = final{status: rec.RuntimeStatus, at: now}
	}
	if ch, ok := w.waiters[id]; ok {
		close(ch)
		delete(w.waiters, id)
	}
}

func (w *statusWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	for id, ch := range w.waiters {
		close(ch)
		delete(w.waiters, id)
	}
}

// expect returns a channel closed once id is terminal (or the watch
// failed). Call it before starting the instance.
func (w *statusWatch) expect(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := w.finals[id]; ok || w.err != nil {
		close(ch)
		return ch
	}
	w.waiters[id] = ch
	return ch
}

// forget drops the waiter of id (its start failed).
func (w *statusWatch) forget(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.waiters, id)
}

// final is id's terminal status, if it reached one.
func (w *statusWatch) final(id string) (final, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.finals[id]
	return f, ok
}

// stop ends the watch and returns its error, if it failed, and how many
// records it could not read.
func (w *statusWatch) stop() (unparsed int, err error) {
	w.cancel()
	<-w.ended
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unparsed, w.err
}

// holding is an owners key as the watch last saw it: the holder, the key's
// CreateRevision (the fencing token) and when the benchmark received it.
type holding struct {
	node      string
	createRev int64
	at        time.Time
}

// ownersWatch keeps every owners key from one list and one watch.
type ownersWatch struct {
	cancel context.CancelFunc
	ended  chan struct{}

	mu      sync.Mutex
	held    map[string]holding
	byNode  map[string]int
	changed chan struct{} // closed and replaced on every change
	err     error
}

func watchOwners(ctx context.Context, cli *clientv3.Client) (*ownersWatch, error) {
	resp, err := cli.Get(ctx, ownersPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("watch owners: %w", err)
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	w := &ownersWatch{
		cancel: cancel, ended: make(chan struct{}),
		held: map[string]holding{}, byNode: map[string]int{}, changed: make(chan struct{}),
	}
	now := time.Now()
	for _, kv := range resp.Kvs {
		w.put(kv, now)
	}
	wch := cli.Watch(wctx, ownersPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go w.loop(wctx, wch)
	return w, nil
}

func (w *ownersWatch) loop(ctx context.Context, wch clientv3.WatchChan) {
	defer close(w.ended)
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("watch owners: %w", err))
			}
			return
		}
		now := time.Now()
		w.mu.Lock()
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				w.del(string(ev.Kv.Key))
			} else {
				w.put(ev.Kv, now)
			}
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
	if ctx.Err() == nil {
		w.fail(fmt.Errorf("watch owners: closed by etcd"))
	}
}

// put and del apply an event; w.mu is held (or w is not shared yet).
func (w *ownersWatch) put(kv *mvccpb.KeyValue, now time.Time) {
	id := strings.TrimPrefix(string(kv.Key), ownersPrefix)
	var v struct {
		Node string `json:"node"`
	}
	if json.Unmarshal(kv.Value, &v) != nil || v.Node == "" {
		v.Node = "?"
	}
	if old, ok := w.held[id]; ok {
		w.byNode[old.node]--
	}
	w.held[id] = holding{node: v.Node, createRev: kv.CreateRevision, at: now}
	w.byNode[v.Node]++
}

func (w *ownersWatch) del(key string) {
	id := strings.TrimPrefix(key, ownersPrefix)
	if old, ok := w.held[id]; ok {
		w.byNode[old.node]--
		delete(w.held, id)
	}
}

func (w *ownersWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	close(w.changed)
	w.changed = make(chan struct{})
}

// ownersView is what a wait condition may read; it must not keep it.
type ownersView struct {
	held   map[string]holding
	byNode map[string]int
}

// wait blocks until cond holds (checked now and after every change), the
// watch fails, or ctx ends.
func (w *ownersWatch) wait(ctx context.Context, cond func(ownersView) bool) error {
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return err
		}
		if cond(ownersView{held: w.held, byNode: w.byNode}) {
			w.mu.Unlock()
			return nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// holding returns id's owners key as last seen.
func (w *ownersWatch) holding(id string) (holding, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h, ok := w.held[id]
	return h, ok
}

// heldBy counts the keys node holds.
func (w *ownersWatch) heldBy(node string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byNode[node]
}

func (w *ownersWatch) stop() error {
	w.cancel()
	<-w.ended
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
