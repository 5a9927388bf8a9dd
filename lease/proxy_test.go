package lease_test

import (
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
)

// tcpProxy forwards TCP connections to an upstream address. A test can drop
// the bytes of either direction (a blackhole: connections stay up, nothing
// arrives, as in a network partition) and heal it again, to cut a client
// from etcd while etcd itself keeps running.
type tcpProxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	dropTx bool // client -> etcd bytes are discarded
	dropRx bool // etcd -> client bytes are discarded
	closed bool
}

// newTCPProxy starts a proxy to the host of endpoint (a URL such as
// http://127.0.0.1:2379), closed when the test ends.
func newTCPProxy(t testing.TB, endpoint string) *tcpProxy {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("proxy: parse %q: %v", endpoint, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &tcpProxy{ln: ln, upstream: u.Host, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is the endpoint clients use instead of etcd's.
func (p *tcpProxy) URL() string { return "http://" + p.ln.Addr().String() }

// Blackhole drops (true) or forwards (false) each direction's bytes, for
// open and new connections alike.
func (p *tcpProxy) Blackhole(tx, rx bool) {
	p.mu.Lock()
	p.dropTx, p.dropRx = tx, rx
	p.mu.Unlock()
}

// Heal forwards both directions again and closes every open connection:
// dropped bytes have broken their framing, so clients must reconnect.
func (p *tcpProxy) Heal() {
	p.mu.Lock()
	p.dropTx, p.dropRx = false, false
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *tcpProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *tcpProxy) drop(tx bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if tx {
		return p.dropTx
	}
	return p.dropRx
}

func (p *tcpProxy) track(cs ...net.Conn) bool {
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

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = client.Close()
			continue
		}
		if !p.track(client, server) {
			_ = client.Close()
			_ = server.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(server, client, true)
		go p.pipe(client, server, false)
	}
}

// pipe copies src to dst, discarding what arrives while its direction is
// blackholed. Either side closing closes both.
func (p *tcpProxy) pipe(dst, src net.Conn, tx bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.drop(tx) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = src.Close()
	_ = dst.Close()
	p.untrack(src, dst)
}
