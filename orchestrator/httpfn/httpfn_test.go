package httpfn_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator/httpfn"
)

func testInv() httpfn.Invocation {
	return httpfn.Invocation{InstanceID: "inst-1", ExecutionID: "exec-1", Function: "reindex", FencingToken: 42, Input: json.RawMessage(`{"full":true}`)}
}

// server starts an httptest server for h that is closed when the test
// ends, and counts the requests it gets.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// reply answers every request with status and body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

type seen struct {
	method, path, query, host string
	header                    http.Header
	body                      string
}

func TestRequest(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []seen
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Clone(), string(b)})
		mu.Unlock()
		_, _ = io.WriteString(w, `{"ok":true}`)
	})

	spec := httpfn.Spec{URL: srv.URL + "/reindex?team=search", Headers: map[string]string{"x-team": "search", "Authorization": "Bearer t0ken"}}
	out, err := httpfn.Run(context.Background(), spec, testInv(), httpfn.Options{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(out) != `{"ok":true}` {
		t.Fatalf("output = %s", out)
	}
	r := got[0]
	want := map[string]string{
		"Content-Type":          "application/json",
		"Soloist-Instance-Id":   "inst-1",
		"Soloist-Execution-Id":  "exec-1",
		"Soloist-Fencing-Token": "42",
		"Soloist-Function":      "reindex",
		"X-Team":                "search",
		"Authorization":         "Bearer t0ken",
		"User-Agent":            "soloist-httpfn",
	}
	for k, v := range want {
		if r.header.Get(k) != v {
			t.Errorf("header %s = %q, want %q", k, r.header.Get(k), v)
		}
	}
	if r.method != "POST" || r.path != "/reindex" || r.query != "team=search" || r.body != `{"full":true}` {
		t.Errorf("request %s %s?%s body %q; want POST /reindex?team=search with the input", r.method, r.path, r.query, r.body)
	}

	// Method, Content-Type and Host from the configuration; no input sends null.
	spec = httpfn.Spec{URL: srv.URL, Method: "put", Headers: map[string]string{"Content-Type": "application/vnd.report+json", "Host": "search.internal"}}
	inv := testInv()
	inv.Input = nil
	if _, err := httpfn.Run(context.Background(), spec, inv, httpfn.Options{}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r = got[1]
	if r.method != "PUT" || r.host != "search.internal" || r.header.Get("Content-Type") != "application/vnd.report+json" || r.body != "null" {
		t.Errorf("request %s host %q content-type %q body %q; want PUT to search.internal, the configured type, body null",
			r.method, r.host, r.header.Get("Content-Type"), r.body)
	}
}

func TestOutput(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, body, want string }{
		{"json object", `{"a": 1}`, `{"a": 1}`},
		{"json with newline", "[1,2]\n", `[1,2]`},
		{"json number", `42`, `42`},
		{"plain text is a string", "hello world", `"hello world"`},
		{"text with trailing newline", "done \"quoted\"\r\n", `"done \"quoted\""`},
		{"empty body is null", "", `null`},
		{"blank body is null", " \n", `null`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, c.body)
			})
			out, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if string(out) != c.want {
				t.Fatalf("output = %s, want %s", out, c.want)
			}
		})
	}
	t.Run("201 and 204 complete", func(t *testing.T) {
		t.Parallel()
		for status, want := range map[int]string{201: `{"id":7}`, 204: `null`} {
			srv, _ := server(t, reply(status, `{"id":7}`))
			out, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
			if err != nil || string(out) != want {
				t.Fatalf("status %d: output %s, err %v; want %s", status, out, err, want)
			}
		}
	})
}

func TestStatusFailure(t *testing.T) {
	t.Parallel()
	srv, _ := server(t, reply(500, "disk full\n"))
	_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL + "/job"}, testInv(), httpfn.Options{})
	var se *httpfn.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v (%T), want *StatusError", err, err)
	}
	if want := "POST " + srv.URL + "/job answered 500 Internal Server Error: disk full"; err.Error() != want {
		t.Fatalf("message = %q, want %q", err, want)
	}
	if se.StatusCode != 500 || se.Body != "disk full" {
		t.Fatalf("StatusError = %+v", se)
	}

	srv, _ = server(t, reply(502, ""))
	_, err = httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
	if err == nil || !strings.HasSuffix(err.Error(), "answered 502 Bad Gateway (empty body)") {
		t.Fatalf("err = %v, want one saying the body was empty", err)
	}

	long := strings.Repeat("x", 10000) + "THE-END"
	srv, _ = server(t, reply(400, long))
	_, err = httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *StatusError", err)
	}
	if len(se.Body) != 4096+3 || !strings.HasSuffix(se.Body, "...") || strings.Contains(se.Body, "THE-END") {
		t.Fatalf("body excerpt is %d bytes ending %q; want the first 4 KiB and ...", len(se.Body), se.Body[max(0, len(se.Body)-10):])
	}
}

func TestClientErrorNotRetried(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 401, 404, 409, 422} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			srv, hits := server(t, reply(status, "no"))
			_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(),
				httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 5}})
			var se *httpfn.StatusError
			if !errors.As(err, &se) || se.StatusCode != status {
				t.Fatalf("err = %v, want a *StatusError with %d", err, status)
			}
			if n := hits.Load(); n != 1 {
				t.Fatalf("sent %d times, want 1: a 4xx is final", n)
			}
		})
	}
}

func TestServerErrorRetried(t *testing.T) {
	t.Parallel()
	for _, status := range []int{500, 503, 429} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			srv, hits := server(t, reply(status, "busy"))
			_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(),
				httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 3, Backoff: 10 * time.Millisecond}})
			if err == nil || !strings.HasPrefix(err.Error(), "all 3 attempts failed, the last: POST") {
				t.Fatalf("err = %v, want all 3 attempts failed", err)
			}
			var se *httpfn.StatusError
			if !errors.As(err, &se) || se.StatusCode != status {
				t.Fatalf("err = %v does not wrap the last *StatusError", err)
			}
			if n := hits.Load(); n != 3 {
				t.Fatalf("sent %d times, want 3", n)
			}
		})
	}
}

func TestRetrySucceeds(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	var tokens sync.Map
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		tokens.Store(r.Header.Get("Soloist-Fencing-Token"), true)
		if n.Add(1) < 3 {
			w.WriteHeader(502)
			return
		}
		_, _ = io.WriteString(w, `"ok"`)
	})
	out, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 5}})
	if err != nil || string(out) != `"ok"` || n.Load() != 3 {
		t.Fatalf("output %s, err %v after %d requests; want \"ok\" after 3", out, err, n.Load())
	}
	if _, ok := tokens.Load("42"); !ok {
		t.Fatal("retries did not carry the fencing token")
	}
}

func TestNetworkErrorRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	_, err = httpfn.Run(context.Background(), httpfn.Spec{URL: "http://" + addr + "/x?key=s3cret"}, testInv(),
		httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 2}})
	if err == nil || !strings.HasPrefix(err.Error(), "all 2 attempts failed, the last: POST http://"+addr+"/x?...: ") {
		t.Fatalf("err = %v, want both attempts to fail naming the URL", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err = %v shows the query", err)
	}
}

func TestURLRedacted(t *testing.T) {
	t.Parallel()
	srv, _ := server(t, reply(403, "denied"))
	u := strings.Replace(srv.URL, "http://", "http://user:pa55word@", 1) + "/x?token=s3cret"
	_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: u}, testInv(), httpfn.Options{})
	if err == nil || strings.Contains(err.Error(), "pa55word") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err = %v; want a failure without password or query", err)
	}
	if !strings.Contains(err.Error(), "user:xxxxx@") {
		t.Fatalf("err = %v; want the redacted URL", err)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	start := time.Now()
	_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(),
		httpfn.Options{Timeout: 200 * time.Millisecond, Retry: httpfn.Retry{MaxAttempts: 2}})
	if !errors.Is(err, httpfn.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "POST "+srv.URL+" timed out after 200ms") {
		t.Fatalf("message = %q", err)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("sent %d times, want 2: a timeout is retried", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("two 200ms attempts took %s", d)
	}
}

func TestTimeoutWhileReadingBody(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"partial":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, httpfn.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 1000
	cases := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"content-length", reply(200, strings.Repeat("x", limit+1))},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			for range 10 {
				_, _ = io.WriteString(w, strings.Repeat("y", 200))
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv, hits := server(t, c.handler)
			_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(),
				httpfn.Options{MaxResponse: limit, Retry: httpfn.Retry{MaxAttempts: 3}})
			if !errors.Is(err, httpfn.ErrResponseTooLarge) || !strings.Contains(err.Error(), "more than 1000 bytes") {
				t.Fatalf("err = %v, want ErrResponseTooLarge naming the limit", err)
			}
			if n := hits.Load(); n != 1 {
				t.Fatalf("sent %d times, want 1: an oversized answer is not retried", n)
			}
		})
	}
	t.Run("at the limit", func(t *testing.T) {
		t.Parallel()
		srv, _ := server(t, reply(200, strings.Repeat("z", limit-2)+"\r\n"))
		out, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{MaxResponse: limit})
		if err != nil || len(out) != limit-2+2 {
			t.Fatalf("err %v, output of %d bytes; want the body as a string", err, len(out))
		}
	})
	t.Run("default 1 MiB", func(t *testing.T) {
		t.Parallel()
		srv, _ := server(t, reply(200, strings.Repeat("w", httpfn.DefaultMaxResponse+1)))
		_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
		if !errors.Is(err, httpfn.ErrResponseTooLarge) {
			t.Fatalf("err = %v, want ErrResponseTooLarge", err)
		}
	})
}

func TestRetryStopsOnCancel(t *testing.T) {
	t.Parallel()
	srv, hits := server(t, reply(503, "down"))
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("lease lost")
	done := make(chan error, 1)
	go func() {
		_, err := httpfn.Run(ctx, httpfn.Spec{URL: srv.URL}, testInv(),
			httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 100, Backoff: time.Hour}})
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel(stop)
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the context's cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept waiting for its backoff after the context was cancelled")
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("sent %d times, want 1", n)
	}
}

func TestCustomClient(t *testing.T) {
	t.Parallel()
	target, _ := server(t, reply(200, "moved here"))
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	// Default policy: the redirect is followed.
	out, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{})
	if err != nil || string(out) != `"moved here"` {
		t.Fatalf("output %s, err %v; want the redirect followed", out, err)
	}
	// A client that refuses redirects makes the 3xx a final failure.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer c.CloseIdleConnections()
	_, err = httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(), httpfn.Options{Client: c, Retry: httpfn.Retry{MaxAttempts: 3}})
	var se *httpfn.StatusError
	if !errors.As(err, &se) || se.StatusCode != 307 {
		t.Fatalf("err = %v, want a 307 *StatusError", err)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ok := httpfn.Spec{URL: "https://search.internal/reindex"}
	withHeaders := func(h map[string]string) httpfn.Spec { s := ok; s.Headers = h; return s }
	cases := []struct {
		name string
		spec httpfn.Spec
		opts httpfn.Options
		want string
	}{
		{"empty url", httpfn.Spec{}, httpfn.Options{}, "invalid url: it is empty; set it to the absolute http:// or https:// URL"},
		{"relative url", httpfn.Spec{URL: "search.internal/reindex"}, httpfn.Options{}, "it is not an absolute URL; write it with scheme and host"},
		{"path only", httpfn.Spec{URL: "/reindex"}, httpfn.Options{}, "it is not an absolute URL"},
		{"host and port only", httpfn.Spec{URL: "localhost:8080/x"}, httpfn.Options{}, "it is not an absolute URL"},
		{"other scheme", httpfn.Spec{URL: "ftp://files.internal/x"}, httpfn.Options{}, `its scheme is "ftp"; only http and https are supported`},
		{"no host", httpfn.Spec{URL: "https:///reindex"}, httpfn.Options{}, "it has no host"},
		{"opaque", httpfn.Spec{URL: "http:search.internal"}, httpfn.Options{}, "it is not an absolute URL"},
		{"port only", httpfn.Spec{URL: "http://:8080/x"}, httpfn.Options{}, "it has no host"},
		{"spaces", httpfn.Spec{URL: " https://search.internal"}, httpfn.Options{}, "it does not parse"},
		{"password hidden", httpfn.Spec{URL: "ftp://u:secret@h/"}, httpfn.Options{}, `"ftp://u:xxxxx@h/"`},
		{"bad method", httpfn.Spec{URL: ok.URL, Method: "PO ST"}, httpfn.Options{}, `invalid method "PO ST": it is not a valid HTTP method`},
		{"connect", httpfn.Spec{URL: ok.URL, Method: "connect"}, httpfn.Options{}, "CONNECT opens a tunnel"},
		{"bad header name", withHeaders(map[string]string{"X Team": "a"}), httpfn.Options{}, `invalid headers "X Team": it is not a valid header name`},
		{"colon in name", withHeaders(map[string]string{"X-Team:": "a"}), httpfn.Options{}, "not a valid header name"},
		{"newline in value", withHeaders(map[string]string{"X-Team": "a\r\nEvil: 1"}), httpfn.Options{}, "its value contains a control character"},
		{"soloist header", withHeaders(map[string]string{"soloist-fencing-token": "999"}), httpfn.Options{}, "the Soloist- prefix is reserved"},
		{"other soloist header", withHeaders(map[string]string{"Soloist-Whatever": "x"}), httpfn.Options{}, "the Soloist- prefix is reserved"},
		{"managed header", withHeaders(map[string]string{"Content-Length": "5"}), httpfn.Options{}, "the HTTP client sets this header"},
		{"duplicate", withHeaders(map[string]string{"X-Team": "a", "x-team": "b"}), httpfn.Options{}, "names are case-insensitive"},
		{"bad host", withHeaders(map[string]string{"Host": "a b"}), httpfn.Options{}, "is not a host name"},
		{"negative timeout", ok, httpfn.Options{Timeout: -time.Second}, "invalid timeout \"-1s\": it is negative"},
		{"negative attempts", ok, httpfn.Options{Retry: httpfn.Retry{MaxAttempts: -1}}, "invalid retry.maxAttempts"},
		{"negative backoff", ok, httpfn.Options{Retry: httpfn.Retry{Backoff: -time.Second}}, "invalid retry.backoff"},
		{"negative max response", ok, httpfn.Options{MaxResponse: -1}, "invalid maxResponse"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fn, err := httpfn.New(c.spec, c.opts)
			if err == nil || fn != nil {
				t.Fatalf("New accepted %+v", c.spec)
			}
			if !errors.Is(err, httpfn.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalidConfig saying %q", err, c.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("err = %v shows the password", err)
			}
		})
	}
	for _, spec := range []httpfn.Spec{
		ok,
		{URL: "HTTP://search.internal:8080/reindex?x=1#frag", Method: "patch"},
		{URL: "http://[::1]:9000/", Method: "GET", Headers: map[string]string{"X-Team": "search\tteam", "Authorization": "Bearer x", "Host": "api.internal:8443"}},
	} {
		if fn, err := httpfn.New(spec, httpfn.Options{}); err != nil || fn == nil {
			t.Errorf("New(%+v) = %v, want it accepted", spec, err)
		}
	}
}

// Retry.Timeout bounds when another attempt may start: with 300ms
// between attempts and a 1s timeout, at most 4 attempts of 100 are made,
// and the error names the timeout and wraps the last failure.
func TestRetryTimeout(t *testing.T) {
	t.Parallel()
	srv, hits := server(t, reply(503, "busy"))
	_, err := httpfn.Run(context.Background(), httpfn.Spec{URL: srv.URL}, testInv(),
		httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 100, Backoff: 300 * time.Millisecond, Timeout: time.Second}})
	var se *httpfn.StatusError
	if err == nil || !strings.Contains(err.Error(), "retry timeout of 1s") || !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("err = %v, want the retry timeout and the last 503", err)
	}
	if n := hits.Load(); n < 2 || n > 4 {
		t.Fatalf("sent %d times, want 2 to 4 within the 1s retry timeout", n)
	}
	if _, err := httpfn.New(httpfn.Spec{URL: srv.URL}, httpfn.Options{Retry: httpfn.Retry{Timeout: -time.Second}}); !errors.Is(err, httpfn.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), "retry.timeout") {
		t.Fatalf("negative retry timeout: %v", err)
	}
}
