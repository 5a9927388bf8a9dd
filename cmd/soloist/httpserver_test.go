package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// rawRequest sends a request on a new connection and returns the
// connection, unread.
func rawRequest(t *testing.T, addr, request string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	return c
}

// readStatus reads the status code of the response on c, 0 if the
// connection ends first.
func readStatus(c net.Conn, d time.Duration) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// The first max connections serve everything; reserve connections beyond
// them serve health checks only, live at most reserveTTL, and beyond the
// reserve new connections wait.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := newLimitListener(ln, 2, 1, 500*time.Millisecond)
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-release })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	o := &serveOptions{RequestTimeout: 10 * time.Second}
	srv := hardenedServer(o, guardReserve(mux, 2), slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(ll) }()
	defer srv.Close()
	addr := ln.Addr().String()

	// Two slow requests hold both slots.
	slow1 := rawRequest(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	defer slow1.Close()
	slow2 := rawRequest(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	defer slow2.Close()
	waitFor(t, 5*time.Second, func() bool { ll.mu.Lock(); defer ll.mu.Unlock(); return ll.normal == 2 })

	// A third request gets the reserve: 503, closed.
	c := rawRequest(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, err := readStatus(c, 5*time.Second); code != http.StatusServiceUnavailable {
		t.Fatalf("a request beyond the limit: %d, %v; want 503", code, err)
	}
	c.Close()
	// A health check gets the reserve: 200, closed.
	c = rawRequest(t, addr, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	if code, err := readStatus(c, 5*time.Second); code != http.StatusOK {
		t.Fatalf("a health check beyond the limit: %d, %v; want 200", code, err)
	}
	c.Close()

	// A client that holds the reserve without a request is cut after
	// reserveTTL, and one waiting behind it is served then.
	idle := rawRequest(t, addr, "GET /livez HTTP/1.1\r\n") // headers never end
	defer idle.Close()
	waitFor(t, 5*time.Second, func() bool { return len(ll.slots) == 3 })
	start := time.Now()
	waiting := rawRequest(t, addr, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
	defer waiting.Close()
	if code, err := readStatus(waiting, 5*time.Second); code != http.StatusOK {
		t.Fatalf("a health check waiting behind a full reserve: %d, %v", code, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("the waiting health check was served after %s; want about the reserve TTL (500ms)", d)
	}
	if _, err := readStatus(idle, 5*time.Second); err == nil {
		t.Errorf("the idle reserve connection got an answer")
	}

	// The slots come back when the slow requests end (but one: Accept
	// takes a slot before it waits for a connection).
	releaseOnce.Do(func() { close(release) })
	for _, c := range []net.Conn{slow1, slow2} {
		if code, err := readStatus(c, 5*time.Second); code != http.StatusOK {
			t.Fatalf("slow request: %d, %v", code, err)
		}
		c.Close()
	}
	waitFor(t, 5*time.Second, func() bool { ll.mu.Lock(); defer ll.mu.Unlock(); return ll.normal == 0 && len(ll.slots) <= 1 })
}

// soloist serve under 300 slow clients (headers and one byte of the
// body): with and without a key, none holds a connection past
// --request-timeout, those without a key get 401 at once, and /livez and
// /readyz answer promptly all along.
func TestServeUnderSlowClients(t *testing.T) {
	t.Parallel()
	keys := filepath.Join(t.TempDir(), "keys")
	writeFile(t, keys, "k1\n")
	const requestTimeout = 4 * time.Second
	srv := startServe(t, "--demo", "--api-keys-file", keys, "--max-connections", "100", "--request-timeout", requestTimeout.String())
	srv.waitReady()

	type result struct {
		keyed            bool
		code             int
		answered, closed time.Duration // since the flood started
		err              error
	}
	const clients = 300
	results := make(chan result, clients)
	start := time.Now()
	for i := range clients {
		keyed := i%2 == 0
		auth := ""
		if keyed {
			auth = "Authorization: Bearer k1\r\n"
		}
		c := rawRequest(t, srv.listen, fmt.Sprintf("POST /api/orchestrators/HelloCities/slow-%d HTTP/1.1\r\nHost: x\r\n%s"+
			"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{", i, auth))
		defer c.Close()
		go func() {
			r := result{keyed: keyed}
			r.code, r.err = readStatus(c, 4*requestTimeout)
			r.answered = time.Since(start)
			if r.err == nil {
				_, r.err = io.Copy(io.Discard, c) // until the server closes it
			}
			r.closed = time.Since(start)
			results <- r
		}()
	}

	// Meanwhile: health checks answer within a second.
	hc := &http.Client{Timeout: time.Second}
	for time.Since(start) < requestTimeout-500*time.Millisecond {
		for _, p := range []string{"/livez", "/readyz"} {
			t0 := time.Now()
			resp, err := hc.Get(srv.url + p)
			if err != nil {
				t.Fatalf("%s under slow clients: %v", p, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s under slow clients: %d", p, resp.StatusCode)
			}
			if d := time.Since(t0); d > time.Second {
				t.Errorf("%s took %s", p, d)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every slow connection is answered and closed by its deadline.
	held := 0
	for range clients {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("keyed %v: %d after %s, closed after %s: %v", r.keyed, r.code, r.answered, r.closed, r.err)
		case !r.keyed && r.code != http.StatusUnauthorized && r.code != http.StatusServiceUnavailable:
			t.Errorf("without a key: %d, want 401 (or 503 beyond the limit)", r.code)
		case !r.keyed && (r.answered > 1500*time.Millisecond || r.closed > requestTimeout-time.Second):
			t.Errorf("without a key: %d after %s, closed after %s; neither the 401 nor the close may wait for the body", r.code, r.answered, r.closed)
		case r.keyed && r.code != http.StatusBadRequest && r.code != http.StatusServiceUnavailable:
			t.Errorf("with a key: %d, want 400 (body cut at the deadline) or 503 (beyond the limit)", r.code)
		case r.keyed && r.closed > 2*requestTimeout+2*time.Second:
			t.Errorf("with a key: held %s, past --request-timeout %s", r.closed, requestTimeout)
		case r.keyed && r.code == http.StatusBadRequest:
			if r.answered < requestTimeout-time.Second {
				t.Errorf("with a key: 400 after %s, before --request-timeout %s", r.answered, requestTimeout)
			}
			held++
		}
	}
	if held == 0 {
		t.Error("no connection was held until its deadline: the test did not load the server")
	}
	t.Logf("%d of %d keyed connections held until --request-timeout", held, clients/2)
	if code := srv.stop(30 * time.Second); code != 0 {
		t.Errorf("serve exited with %d", code)
	}
	checkLogs(t, srv.logLines())
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
