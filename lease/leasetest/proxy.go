package leasetest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections to an upstream address. A test can drop
// the bytes of either direction (a blackhole: connections stay up, nothing
// arrives, as in a network partition), delay them, and heal it again, to
// cut a client from etcd while etcd itself keeps running. While both
// directions are blackholed new connections are accepted but go nowhere.
// It is used by the package tests and by the multi-process fault suite.
//
// go.etcd.io/etcd/pkg/v3/proxy does not fit these tests: its accept loop
// blocks once 16 errors are unread on its error channel (every dial to a
// killed member is one), a failed dial leaves the client connection open,
// and un-blackholing resumes connections whose bytes were dropped mid-frame.
type Proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	links   map[*link]struct{}
	done    chan struct{} // closed by Close: held chunks are dropped
	dropTx  bool          // client -> etcd bytes are discarded
	dropRx  bool          // etcd -> client bytes are discarded
	delayTx time.Duration // client -> etcd bytes are held this long
	delayRx time.Duration // etcd -> client bytes are held this long
	closed  bool
}

// NewProxy starts a proxy to the host of endpoint (a URL such as
// http://127.0.0.1:2379), closed when the test ends.
func NewProxy(t testing.TB, endpoint string) *Proxy {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("proxy: parse %q: %v", endpoint, err)
	}
	p, err := StartProxy(u.Host)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// StartProxy starts a proxy on a free loopback port to upstream
// (host:port); the caller closes it.
func StartProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}, links: map[*link]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// URL is the endpoint clients use instead of etcd's.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Blackhole drops (true) or forwards (false) each direction's bytes, for
// open and new connections alike.
func (p *Proxy) Blackhole(tx, rx bool) {
	p.mu.Lock()
	p.dropTx, p.dropRx = tx, rx
	p.mu.Unlock()
}

// DelayRx holds every etcd -> client chunk read from now on for d before
// forwarding it: a request is served at once but its reply comes late, so a
// test can act between a commit and the client learning of it.
func (p *Proxy) DelayRx(d time.Duration) {
	p.mu.Lock()
	p.delayRx = d
	p.mu.Unlock()
}

// DelayTx holds every client -> etcd chunk read from now on for d before
// forwarding it: a request reaches etcd late (with Strand, after its
// client has given up on it).
func (p *Proxy) DelayTx(d time.Duration) {
	p.mu.Lock()
	p.delayTx = d
	p.mu.Unlock()
}

// Strand cuts every open connection on the client's side only: the client
// sees its connections reset at once (and reconnects, to a proxy that works
// as configured), while what it had sent that the proxy still holds (see
// DelayTx) is delivered to etcd when due, and etcd's replies are dropped. A
// request the client saw fail is then applied after it gave up on it, as
// when a connection breaks while the request is on its way. etcd's side
// of each stranded connection closes a few seconds after its last held
// bytes, so the requests they carry are served. It returns the number of
// connections stranded.
func (p *Proxy) Strand() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for l := range p.links {
		if l.stranded.CompareAndSwap(false, true) {
			_ = l.client.Close()
			n++
		}
	}
	return n
}

// Delay holds every chunk of both directions for d (0 to stop).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delayTx, p.delayRx = d, d
	p.mu.Unlock()
}

// Blackholed reports whether both directions are dropped.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropTx && p.dropRx
}

// Heal forwards both directions again, without delay, and closes every open
// connection: dropped bytes have broken their framing, and delayed replies
// must not arrive, so clients reconnect.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.dropTx, p.dropRx, p.delayTx, p.delayRx = false, false, 0, 0
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if !p.closed {
		close(p.done)
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

// fate says what happens to a chunk read now: dropped, or forwarded at due.
func (p *Proxy) fate(tx bool) (drop bool, due time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if tx {
		return p.dropTx, time.Now().Add(p.delayTx)
	}
	return p.dropRx, time.Now().Add(p.delayRx)
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p.Blackholed() {
			// Partitioned: the connection goes nowhere until Heal closes it.
			if !p.track(client) {
				_ = client.Close()
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(io.Discard, client)
				_ = client.Close()
				p.untrack(client)
			}()
			continue
		}
		server, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
		if err != nil { // the upstream is down: refuse, as it would
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		l := &link{client: client, server: server}
		p.mu.Lock()
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, server, client, true)
		go p.pipe(l, client, server, false)
	}
}

// strandLinger is how long etcd's side of a stranded link stays open after
// its held bytes are delivered.
const strandLinger = 5 * time.Second

// link is one proxied connection: the client's and etcd's side.
type link struct {
	client, server net.Conn
	stranded       atomic.Bool // the client side was cut by Strand
}

func (p *Proxy) unlink(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, discarding what arrives while its direction is
// blackholed and holding what must be delayed. Either side closing closes
// both, except on a link whose client side Strand cut: there the client ->
// etcd chunks still held are delivered when due, etcd's replies are
// dropped, and etcd's side is closed once everything held is delivered.
func (p *Proxy) pipe(l *link, dst, src net.Conn, tx bool) {
	defer p.wg.Done()
	q := make(chan chunk, 1024)
	stop := make(chan struct{}) // closed when src ends: pending chunks are dropped
	p.wg.Add(1)
	go func() { // the writer: forwards each chunk when due, in order
		defer p.wg.Done()
		failed := false
		for c := range q {
			if failed {
				continue
			}
			if d := time.Until(c.due); d > 0 {
				select {
				case <-time.After(d):
				case <-stop:
					failed = true
					continue
				case <-p.done:
					failed = true
					continue
				}
			}
			if !tx && l.stranded.Load() {
				continue // etcd's replies to a stranded client are dropped
			}
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				if !l.stranded.Load() {
					_ = src.Close()
					_ = dst.Close()
				}
			}
		}
		if tx && l.stranded.Load() {
			// Everything held is delivered. etcd's side stays open a while,
			// so the requests are served: a connection that ends cancels
			// the requests on it that etcd has not yet applied.
			select {
			case <-time.After(strandLinger):
			case <-p.done:
			}
			_ = dst.Close()
		}
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if drop, due := p.fate(tx); !drop {
				q <- chunk{buf[:n], due}
			}
		}
		if err != nil {
			break
		}
	}
	if l.stranded.Load() {
		// The client side was cut by Strand: the client -> etcd writer
		// delivers what it holds (stop stays open for it) and then closes
		// etcd's side, which ends the etcd -> client reader.
		if !tx {
			close(stop)
		}
		close(q)
		p.untrack(src)
		if !tx {
			p.untrack(dst)
			p.unlink(l)
		}
		return
	}
	close(stop)
	close(q)
	_ = src.Close()
	_ = dst.Close()
	p.untrack(src, dst)
	p.unlink(l)
}
