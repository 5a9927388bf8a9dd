package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// How serve protects its HTTP listener (--request-timeout, --max-connections):
//
//   - A request's headers must arrive within min(10s, --request-timeout) and
//     the whole request, body included, within --request-timeout
//     (http.Server's ReadTimeout, which runs from the first byte of the
//     request). A body that trickles in is cut there: the handler's read
//     fails and the connection is closed.
//   - The answer must be written within twice --request-timeout of the end
//     of the headers (WriteTimeout). A handler that waits longer on purpose
//     (a long poll) extends its own deadlines with http.ResponseController.
//   - An idle keep-alive connection is closed after 2 minutes, or at once
//     while the connections are at the limit.
//   - At most --max-connections connections serve every route. Beyond them a
//     reserve (an eighth of the limit, from 8 to 64 connections) is accepted
//     for health checks only: a reserve connection must send its request
//     within min(2s, --request-timeout), gets one answer and is closed; a
//     health check (/livez, /readyz, /healthz) is answered, anything else
//     gets 503. Beyond the reserve, new connections wait in the kernel's
//     backlog. So a flood of slow clients holds at most --max-connections
//     connections for at most --request-timeout each, while the kubelet's
//     probes, which send their request at once, keep getting answers.
//   - Unauthenticated requests get their 401 before their body is read (the
//     HTTP API checks the key first and closes such a connection).

// reserveFor is the number of health-check connections beyond the limit.
func reserveFor(limit int) int { return min(64, max(8, limit/8)) }

// listeners are the sockets serve listens on.
type listeners struct {
	api     net.Listener
	metrics net.Listener // nil without --metrics-listen
}

// listen opens --listen (limited by --max-connections) and --metrics-listen.
func listen(o *serveOptions) (*listeners, error) {
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on --listen %s: %w", o.Listen, err)
	}
	l := &listeners{api: ln}
	if o.MaxConnections > 0 {
		l.api = newLimitListener(ln, o.MaxConnections, reserveFor(o.MaxConnections), min(2*time.Second, o.RequestTimeout))
	}
	if o.MetricsListen != "" {
		ml, err := net.Listen("tcp", o.MetricsListen)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listen on --metrics-listen %s: %w", o.MetricsListen, err)
		}
		l.metrics = newLimitListener(ml, 64, 0, 0) // scrapers, not a crowd
	}
	return l, nil
}

func (l *listeners) Close() {
	_ = l.api.Close()
	if l.metrics != nil {
		_ = l.metrics.Close()
	}
}

// servers are the HTTP servers of serve.
type servers struct {
	api, metrics *http.Server
	lns          *listeners
	handler      atomic.Pointer[http.Handler] // the API, once wired
}

// newServers builds the API server and the metrics server of serve. Until
// setAPI, the API server answers /livez and 503 for everything else.
func newServers(o *serveOptions, lns *listeners, g prometheus.Gatherer, log *slog.Logger) *servers {
	s := &servers{lns: lns}
	s.api = hardenedServer(o, guardReserve(http.HandlerFunc(s.serveAPI), o.MaxConnections), log)
	if ll, ok := lns.api.(*limitListener); ok {
		// At the limit, close idle keep-alive connections and keep no new
		// ones, so that the slots go to requests.
		ll.setOnPressure(func(full bool) { s.api.SetKeepAlivesEnabled(!full) })
	}
	if lns.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", httpapi.MetricsHandler(g, log))
		serves := "GET /metrics only"
		if o.Pprof {
			addPprof(mux)
			serves = "GET /metrics and /debug/pprof/ only"
		}
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeJSONError(w, http.StatusNotFound, "this listener (--metrics-listen) serves "+serves+"; the API is on --listen")
		})
		s.metrics = hardenedServer(o, mux, log)
		if o.Pprof {
			// pprof refuses a profile or trace of ?seconds= at or above the
			// server's WriteTimeout: allow those of up to 5 minutes.
			s.metrics.WriteTimeout = max(s.metrics.WriteTimeout, pprofWriteTimeout)
		}
	}
	return s
}

// pprofWriteTimeout is the metrics listener's WriteTimeout with --pprof.
const pprofWriteTimeout = 5*time.Minute + 10*time.Second

// addPprof registers net/http/pprof's handlers on mux, the metrics
// listener's (importing the package also registers them on
// http.DefaultServeMux, which nothing in serve serves).
func addPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and the named profiles: heap, goroutine, allocs, block, mutex, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// hardenedServer is an http.Server with the deadlines described above.
func hardenedServer(o *serveOptions, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(10*time.Second, o.RequestTimeout),
		ReadTimeout:       o.RequestTimeout,
		WriteTimeout:      2 * o.RequestTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// setAPI makes the API server serve h.
func (s *servers) setAPI(h http.Handler) { s.handler.Store(&h) }

// serveAPI serves the API once it is set, and while serve connects to etcd
// answers /livez (the process serves) and 503 for the rest.
func (s *servers) serveAPI(w http.ResponseWriter, r *http.Request) {
	if h := s.handler.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/livez" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
		return
	}
	w.Header().Set("Retry-After", "1")
	writeJSONError(w, http.StatusServiceUnavailable, "this node is starting: it is connecting to etcd; retry later")
}

// serve serves both listeners; the channel gets the first error.
func (s *servers) serve() <-chan error {
	errc := make(chan error, 2)
	run := func(srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}
	go run(s.api, s.lns.api)
	if s.metrics != nil {
		go run(s.metrics, s.lns.metrics)
	}
	return errc
}

// close stops both servers at once (after shutdown, it does nothing).
func (s *servers) close() {
	_ = s.api.Close()
	if s.metrics != nil {
		_ = s.metrics.Close()
	}
}

// shutdown stops both servers, waiting for requests in flight until ctx ends.
func (s *servers) shutdown(ctx context.Context) {
	for _, srv := range []*http.Server{s.api, s.metrics} {
		if srv != nil && srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
	}
}

type connKey struct{}

// healthPath reports whether path is a health check, served on reserve
// connections too.
func healthPath(path string) bool {
	switch path {
	case "/livez", "/readyz", "/healthz":
		return true
	}
	return false
}

// guardReserve answers requests on reserve connections: health checks go
// through, anything else gets 503; either way the connection is closed
// after the answer.
func guardReserve(h http.Handler, max int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, _ := r.Context().Value(connKey{}).(*limitedConn); c != nil && c.reserve {
			w.Header().Set("Connection", "close")
			if !healthPath(r.URL.Path) {
				w.Header().Set("Retry-After", "1")
				writeJSONError(w, http.StatusServiceUnavailable, fmt.Sprintf(
					"this node has all its %d connections (--max-connections) in use; retry later or send the request to another node", max))
				// Do not wait for the body: net/http would read it until the
				// deadline before it closes the connection. It still keeps
				// the connection 500ms, so that the client reads the
				// answer: that time is not the slot's.
				_ = http.NewResponseController(w).SetReadDeadline(time.Now())
				c.free()
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// writeJSONError writes {"error": msg}, as the HTTP API does.
func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	b, _ := jsonMarshal(map[string]string{"error": msg})
	_, _ = w.Write(append(b, '\n'))
}

// limitListener accepts at most max connections that serve every route and
// reserve more that serve health checks only (see guardReserve); beyond
// those, Accept waits for a connection to close. Accept takes a slot
// before it waits for a connection, as x/net/netutil.LimitListener does.
type limitListener struct {
	net.Listener
	max        int
	reserveTTL time.Duration // how long a reserve connection may live
	slots      chan struct{} // one per open connection, normal or reserve
	done       chan struct{} // closed by Close
	closeOnce  sync.Once
	poke       chan struct{} // wakes watchPressure

	mu     sync.Mutex
	normal int
	// onPressure, if set, is called with true when the normal connections
	// reach max and with false when they are below 7/8 of it again.
	onPressure func(full bool)
	pressed    bool
}

func newLimitListener(ln net.Listener, max, reserve int, reserveTTL time.Duration) *limitListener {
	l := &limitListener{
		Listener: ln, max: max, reserveTTL: reserveTTL,
		slots: make(chan struct{}, max+reserve), done: make(chan struct{}), poke: make(chan struct{}, 1),
	}
	go l.watchPressure()
	return l
}

func (l *limitListener) setOnPressure(f func(full bool)) {
	l.mu.Lock()
	l.onPressure = f
	l.mu.Unlock()
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.mu.Lock()
	reserve := l.normal >= l.max
	if !reserve {
		l.normal++
	}
	l.mu.Unlock()
	lc := &limitedConn{Conn: c, l: l, reserve: reserve}
	if reserve {
		lc.until = time.Now().Add(l.reserveTTL)
		_ = c.SetDeadline(lc.until)
	}
	l.pokePressure()
	return lc, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *limitListener) release(reserve bool) {
	if !reserve {
		l.mu.Lock()
		l.normal--
		l.mu.Unlock()
	}
	<-l.slots
	l.pokePressure()
}

func (l *limitListener) pokePressure() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
}

// watchPressure calls onPressure on changes, from its own goroutine: the
// callback closes connections, whose release pokes it again.
func (l *limitListener) watchPressure() {
	for {
		select {
		case <-l.done:
			return
		case <-l.poke:
		}
		l.mu.Lock()
		n, pressed := l.normal, l.pressed
		switch {
		case !pressed && n >= l.max:
			l.pressed = true
		case pressed && n < l.max*7/8:
			l.pressed = false
		}
		changed, cb := pressed != l.pressed, l.onPressure
		l.mu.Unlock()
		if changed && cb != nil {
			cb(!pressed)
		}
	}
}

// limitedConn is a connection of a limitListener. The deadlines of a
// reserve connection never pass its end of life.
type limitedConn struct {
	net.Conn
	l       *limitListener
	reserve bool
	until   time.Time
	once    sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.free()
	return err
}

// free gives the connection's slot back, once.
func (c *limitedConn) free() { c.once.Do(func() { c.l.release(c.reserve) }) }

func (c *limitedConn) clamp(t time.Time) time.Time {
	if c.reserve && (t.IsZero() || t.After(c.until)) {
		return c.until
	}
	return t
}

func (c *limitedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *limitedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *limitedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }
