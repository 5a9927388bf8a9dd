package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNotifySocket is systemd's end of NOTIFY_SOCKET: a unixgram socket
// whose datagrams the test reads.
type fakeNotifySocket struct {
	t    *testing.T
	msgs chan string
}

// listenNotify sets NOTIFY_SOCKET (so the test must not be parallel) to a
// socket of its own.
func listenNotify(t *testing.T) *fakeNotifySocket {
	t.Helper()
	// A short path: a unix socket's name has a limit of about 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	f := &fakeNotifySocket{t: t, msgs: make(chan string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			f.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
		_ = os.RemoveAll(dir)
	})
	return f
}

// next returns the next message, failing the test after d.
func (f *fakeNotifySocket) next(d time.Duration) string {
	f.t.Helper()
	select {
	case m := <-f.msgs:
		return m
	case <-time.After(d):
		f.t.Fatalf("no message on NOTIFY_SOCKET within %s", d)
		return ""
	}
}

// waitFor returns once msg arrives, skipping other messages.
func (f *fakeNotifySocket) waitFor(msg string, d time.Duration) {
	f.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-f.msgs:
			if m == msg {
				return
			}
		case <-deadline:
			f.t.Fatalf("no %q on NOTIFY_SOCKET within %s", msg, d)
		}
	}
}

// none fails if a message arrives within d.
func (f *fakeNotifySocket) none(d time.Duration) {
	f.t.Helper()
	select {
	case m := <-f.msgs:
		f.t.Fatalf("unexpected %q on NOTIFY_SOCKET", m)
	case <-time.After(d):
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSystemdNotify(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000") // ping every 100ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	log := discardLogger()

	notifyReady(log)
	if m := sock.next(2 * time.Second); m != "READY=1" {
		t.Fatalf("got %q, want READY=1", m)
	}

	var healthy atomic.Bool
	healthy.Store(true)
	var checks atomic.Int32
	stop := startWatchdog(log, func(ctx context.Context) error {
		checks.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the health check has no deadline")
		}
		if healthy.Load() {
			return nil
		}
		return errors.New("not answering")
	})
	began := time.Now()
	for range 3 {
		if m := sock.next(2 * time.Second); m != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", m)
		}
	}
	// Three pings at 0, 100 and 200 ms: not much slower than half of
	// WATCHDOG_USEC, and not faster.
	if el := time.Since(began); el < 150*time.Millisecond || el > 3*time.Second {
		t.Errorf("three pings took %s; want about 200ms", el)
	}

	// Unhealthy: no ping, so systemd would kill the process.
	healthy.Store(false)
	n := checks.Load()
	// Check n may have read true before the Store and pinged; check n+1
	// read false. Once check n+2 has begun, every ping is in.
	deadline := time.Now().Add(5 * time.Second)
	for checks.Load() < n+2 {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog stopped checking health")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for len(sock.msgs) > 0 {
		<-sock.msgs
	}
	sock.none(350 * time.Millisecond) // three more checks, all failing

	// Healthy again: pings again.
	healthy.Store(true)
	if m := sock.next(2 * time.Second); m != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", m)
	}

	stop()
	for len(sock.msgs) > 0 {
		<-sock.msgs
	}
	sock.none(300 * time.Millisecond)

	notifyStopping(log)
	if m := sock.next(2 * time.Second); m != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", m)
	}
}

// Another process's watchdog (WATCHDOG_PID of another PID), or none: no
// pings, and stop returns at once.
func TestSystemdWatchdogNotOurs(t *testing.T) {
	sock := listenNotify(t)
	log := discardLogger()
	called := func(context.Context) error {
		t.Error("health checked without a watchdog")
		return nil
	}
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getppid()))
	startWatchdog(log, called)()
	os.Unsetenv("WATCHDOG_USEC") // t.Setenv restores it
	os.Unsetenv("WATCHDOG_PID")
	startWatchdog(log, called)()
	sock.none(250 * time.Millisecond)
}

func TestLivezProbe(t *testing.T) {
	t.Parallel()
	var code atomic.Int32
	code.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/livez" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	probe := livezProbe(srv.Listener.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := probe(ctx); err != nil {
		t.Fatalf("probe of a healthy server: %v", err)
	}
	code.Store(http.StatusServiceUnavailable)
	if err := probe(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("probe of a 503: %v, want an error naming 503", err)
	}
	srv.Close()
	if err := probe(ctx); err == nil {
		t.Fatal("probe of a closed server succeeded")
	}

	for addr, want := range map[string]string{
		"0.0.0.0:8080":   "http://127.0.0.1:8080/livez",
		"[::]:8080":      "http://127.0.0.1:8080/livez",
		"10.1.2.3:8080":  "http://10.1.2.3:8080/livez",
		"[::1]:8080":     "http://[::1]:8080/livez",
		"127.0.0.1:9999": "http://127.0.0.1:9999/livez",
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := livezURL(a); got != want {
			t.Errorf("livezURL(%s) = %s, want %s", addr, got, want)
		}
	}
}

// soloist serve under a fake systemd: READY=1 only once /readyz answers
// 200, WATCHDOG=1 while it runs, STOPPING=1 on SIGTERM, then exit 0.
func TestServeNotifiesSystemd(t *testing.T) {
	soloistBinary(t) // skips with -short before the environment changes
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "1000000") // the child pings every 500ms
	srv := startServe(t, "--demo")
	var m string
	for m = sock.next(60 * time.Second); m == "WATCHDOG=1"; m = sock.next(60 * time.Second) {
	}
	if m != "READY=1" {
		t.Fatalf("first message other than WATCHDOG=1 is %q, want READY=1", m)
	}
	resp, err := http.Get(srv.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("READY=1 sent while /readyz answers %d", resp.StatusCode)
	}
	sock.waitFor("WATCHDOG=1", 3*time.Second)
	sock.waitFor("WATCHDOG=1", 3*time.Second)
	if code := srv.stop(30 * time.Second); code != 0 { // SIGTERM
		t.Fatalf("exit %d", code)
	}
	sock.waitFor("STOPPING=1", time.Second)
}
