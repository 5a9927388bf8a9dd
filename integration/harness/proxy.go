package harness

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a small TCP proxy between one Soloist node and one etcd member,
// which the test uses to cut the node from that member.
//
// go.etcd.io/etcd/pkg/v3/proxy was the first choice, but it does not fit
// this harness: its accept loop blocks once 16 errors are unread on its
// error channel (every dial to a killed member is one), a failed dial
// leaves the accepted client connection open, it listens on every
// interface with a fixed port, and un-blackholing resumes connections
// whose bytes were dropped mid-frame. This one drops bytes both ways while
// blackholed (open connections stay up and new ones are accepted but go
// nowhere, as in a partition), can delay forwarding, and on Heal closes
// every connection so clients reconnect cleanly.
type Proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	blackhole bool
	delay     time.Duration
	closed    bool
}

// NewProxy starts a proxy on a free loopback port to upstream (host:port).
func NewProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// URL is the endpoint a client uses instead of the member's.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Blackhole drops every byte both ways from now on, for open and new
// connections alike.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.blackhole = true
	p.mu.Unlock()
}

// Delay holds every chunk for d before forwarding it (0 to stop).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Heal forwards again without delay and closes every open connection.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.blackhole, p.delay = false, 0
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// Blackholed reports whether the proxy drops traffic.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackhole
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
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

func (p *Proxy) state() (blackhole bool, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackhole, p.delay
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
		if !p.track(client) {
			_ = client.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if bh, _ := p.state(); bh {
		// Partitioned: the connection goes nowhere until Heal closes it.
		_, _ = io.Copy(io.Discard, client)
		_ = client.Close()
		p.untrack(client)
		return
	}
	server, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
	if err != nil { // the member is down: refuse, as it would
		_ = client.Close()
		p.untrack(client)
		return
	}
	if !p.track(server) {
		_ = client.Close()
		_ = server.Close()
		p.untrack(client)
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pipe(server, client)
	}()
	p.pipe(client, server)
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, dropping what arrives while blackholed and
// holding what must be delayed. Either side ending closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.untrack(src, dst)
	q := make(chan chunk, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed := false
		for c := range q {
			if failed {
				continue
			}
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				_ = src.Close()
				_ = dst.Close()
			}
		}
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if bh, delay := p.state(); !bh {
				q <- chunk{buf[:n], time.Now().Add(delay)}
			}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	_ = src.Close()
	_ = dst.Close()
}
