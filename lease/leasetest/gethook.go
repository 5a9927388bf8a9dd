package leasetest

import (
	"context"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetHook runs a function of the test just before a read of cli is sent:
// a write that lands between two pages of a paged listing, for example.
// While armed, the next Get through cli whose key matches first runs the
// function; everything else goes straight through.
type GetHook struct {
	clientv3.KV
	kv clientv3.KV

	mu    sync.Mutex
	match func(key string) bool
	fn    func()
	done  chan struct{}
}

// NewGetHook wraps cli's KV; cli's Get goes through it from now on.
func NewGetHook(cli *clientv3.Client) *GetHook {
	h := &GetHook{KV: cli.KV, kv: cli.KV}
	cli.KV = h
	return h
}

// Arm runs fn before the next Get whose key matches, once, and returns a
// channel closed when that Get has returned.
func (h *GetHook) Arm(match func(key string) bool, fn func()) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.match, h.fn, h.done = match, fn, make(chan struct{})
	return h.done
}

// NextPage matches the key a paged listing under prefix sends for its
// second and later pages: the last key of the previous page + "\x00".
func NextPage(prefix string) func(key string) bool {
	return func(key string) bool { return strings.HasPrefix(key, prefix) && strings.HasSuffix(key, "\x00") }
}

func (h *GetHook) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	h.mu.Lock()
	fire := h.match != nil && h.match(key)
	fn, done := h.fn, h.done
	if fire {
		h.match, h.fn, h.done = nil, nil, nil
	}
	h.mu.Unlock()
	if !fire {
		return h.kv.Get(ctx, key, opts...)
	}
	defer close(done)
	fn()
	return h.kv.Get(ctx, key, opts...)
}
