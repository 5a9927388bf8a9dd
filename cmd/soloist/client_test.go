package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer records requests and answers with the handler's response.
type fakeServer struct {
	t    *testing.T
	mu   sync.Mutex
	reqs []recorded
	srv  *httptest.Server
}

type recorded struct {
	method, path, rawPath, query, auth, body, continuation string
}

func newFakeServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request, n int)) *fakeServer {
	f := &fakeServer{t: t}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery,
			r.Header.Get("Authorization"), string(b), r.Header.Get(continuationHeader)})
		f.mu.Unlock()
		h(w, r, n)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// runCLI runs the command line against the fake server.
func runCLI(t *testing.T, server string, extraEnv []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e strings.Builder
	code = run(context.Background(), args, mapEnv(append([]string{"SOLOIST_SERVER", server}, extraEnv...)...), &o, &e)
	return o.String(), e.String(), code
}

func reply(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

func TestClientStart(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 0 {
			reply(w, 202, `{"id":"my id","statusQueryGetUri":"http://x"}`)
			return
		}
		reply(w, 409, `{"error":"An instance with ID 'my id' already exists.","id":"my id","runtimeStatus":"Running"}`)
	})
	out, errOut, code := runCLI(t, f.srv.URL, []string{"SOLOIST_API_KEY", "env-key"},
		"start", "HelloCities", "my id", "--input", `{"n": 1}`, "--conflict-policy", "fail", "--reuse-policy", "reject")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if out != "{\n  \"id\": \"my id\",\n  \"statusQueryGetUri\": \"http://x\"\n}\n" {
		t.Fatalf("stdout %q", out)
	}
	r := f.requests()[0]
	if r.method != "POST" || r.path != "/api/orchestrators/HelloCities/my id" || r.rawPath != "/api/orchestrators/HelloCities/my%20id" ||
		r.query != "conflictPolicy=fail&reusePolicy=reject" || r.body != `{"n": 1}` || r.auth != "Bearer env-key" {
		t.Fatalf("request %+v", r)
	}

	_, errOut, code = runCLI(t, f.srv.URL, []string{"SOLOIST_API_KEY", "env-key"}, "start", "HelloCities", "my id", "--api-key", "flag-key")
	if code != 1 || errOut != "soloist: An instance with ID 'my id' already exists. (HTTP 409)\n" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if r := f.requests()[1]; r.auth != "Bearer flag-key" || r.body != "null" {
		t.Fatalf("second request %+v: the flag must beat SOLOIST_API_KEY, and no --input sends null", r)
	}
}

func TestClientUsageErrors(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) { reply(w, 500, `{}`) })
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"start"}, "missing arguments"},
		{[]string{"start", "fn", "id", "extra"}, `unexpected argument "extra"`},
		{[]string{"start", "fn", "--input", "{not json}"}, "--input is not valid JSON"},
		{[]string{"raise", "id", "ev", "--data", "text"}, "--data is not valid JSON"},
		{[]string{"status"}, "missing arguments"},
		{[]string{"wait", "id", "--timeout", "soon"}, `invalid argument "soon" for "--timeout" flag`},
		{[]string{"status", "x", "-o", "xml"}, `invalid --output "xml": use table, json or yaml`},
		{[]string{"status", "x", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "x", "--server", "ftp://host"}, `invalid --server "ftp://host"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{nil, "Usage:"},
	} {
		_, errOut, code := runCLI(t, f.srv.URL, nil, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", c.args, code, errOut, c.want)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}

func TestClientServerErrors(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0:
			reply(w, 404, `{"error":"no instance 'x'; list instances with soloist list"}`)
		case 1:
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "bad gateway from proxy")
		default:
			w.WriteHeader(401)
		}
	})
	for _, want := range []string{
		"soloist: no instance 'x'; list instances with soloist list (HTTP 404)\n",
		"soloist: bad gateway from proxy (HTTP 502)\n",
		"soloist: the server needs an API key: pass --api-key KEY or set SOLOIST_API_KEY (HTTP 401)\n",
	} {
		_, errOut, code := runCLI(t, f.srv.URL, nil, "status", "x")
		if code != 1 || errOut != want {
			t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, want)
		}
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, errOut, code := runCLI(t, dead.URL, nil, "status", "x")
	if code != exitUnreachable || !strings.Contains(errOut, "cannot reach the Soloist server at "+dead.URL) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestClientControlVerbs(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Method == "DELETE" {
			reply(w, 200, `{"instancesDeleted":1}`)
			return
		}
		w.WriteHeader(202)
	})
	for _, c := range []struct {
		args                []string
		method, path, query string
		body                string
		out                 string // "" means not checked
	}{
		{[]string{"terminate", "a b", "--reason", "done now"}, "POST", "/runtime/webhooks/durabletask/instances/a%20b/terminate", "reason=done+now", "",
			"{\n  \"instanceId\": \"a b\",\n  \"operation\": \"terminate\",\n  \"reason\": \"done now\"\n}\n"},
		{[]string{"terminate", "a b", "-o", "table"}, "POST", "/runtime/webhooks/durabletask/instances/a%20b/terminate", "", "", "Terminated instance 'a b'.\n"},
		{[]string{"suspend", "i", "--reason", "r", "-o", "yaml"}, "POST", "/runtime/webhooks/durabletask/instances/i/suspend", "reason=r", "",
			"instanceId: i\noperation: suspend\nreason: r\n"},
		{[]string{"suspend", "i", "-o", "table"}, "POST", "/runtime/webhooks/durabletask/instances/i/suspend", "", "",
			"Suspended instance 'i'; 'soloist resume i' lets it run again.\n"},
		{[]string{"suspend", "--reason", "first", "i", "--output", "table"}, "POST", "/runtime/webhooks/durabletask/instances/i/suspend", "reason=first", "",
			"Suspended instance 'i'; 'soloist resume i' lets it run again.\n"},
		{[]string{"resume", "--", "-i-"}, "POST", "/runtime/webhooks/durabletask/instances/-i-/resume", "", "", ""},
		{[]string{"resume", "i"}, "POST", "/runtime/webhooks/durabletask/instances/i/resume", "", "", "{\n  \"instanceId\": \"i\",\n  \"operation\": \"resume\"\n}\n"},
		{[]string{"raise", "i", "ev 1", "--data", `{"ok":true}`}, "POST", "/runtime/webhooks/durabletask/instances/i/raiseEvent/ev%201", "", `{"ok":true}`,
			"{\n  \"instanceId\": \"i\",\n  \"operation\": \"raiseEvent\",\n  \"event\": \"ev 1\"\n}\n"},
		{[]string{"raise", "i", "ev", "--output=table"}, "POST", "/runtime/webhooks/durabletask/instances/i/raiseEvent/ev", "", "null", "Raised event 'ev' on instance 'i'.\n"},
		{[]string{"restart", "i"}, "POST", "/runtime/webhooks/durabletask/instances/i/restart", "", "", ""},
		{[]string{"purge", "i"}, "DELETE", "/runtime/webhooks/durabletask/instances/i", "", "", ""},
		{[]string{"purge", "i", "-o", "table"}, "DELETE", "/runtime/webhooks/durabletask/instances/i", "", "", "Purged instance 'i'.\n"},
		{[]string{"status", "i", "--history"}, "GET", "/runtime/webhooks/durabletask/instances/i", "showHistory=true", "", ""},
	} {
		before := len(f.requests())
		out, errOut, code := runCLI(t, f.srv.URL, nil, c.args...)
		if code != 0 {
			t.Errorf("%q: exit %d, %s", c.args, code, errOut)
			continue
		}
		r := f.requests()[before]
		if r.method != c.method || r.rawPath != c.path || r.query != c.query || r.body != c.body {
			t.Errorf("%q: sent %s %s?%s body %q; want %s %s?%s body %q", c.args, r.method, r.rawPath, r.query, r.body, c.method, c.path, c.query, c.body)
		}
		if c.method == "DELETE" && c.out == "" && out != "{\n  \"instancesDeleted\": 1\n}\n" {
			t.Errorf("purge printed %q", out)
		}
		if c.out != "" && out != c.out {
			t.Errorf("%q printed %q, want %q", c.args, out, c.out)
		}
	}
}

func TestClientList(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Header.Get(continuationHeader) == "" {
			w.Header().Set(continuationHeader, "page2")
			reply(w, 200, `[{"instanceId":"a"},{"instanceId":"b"}]`)
			return
		}
		reply(w, 200, `[{"instanceId":"c"}]`)
	})
	out, errOut, code := runCLI(t, f.srv.URL, nil, "list", "--status", "Running,Pending", "--prefix", "a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got []struct{ InstanceID string }
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 3 || got[2].InstanceID != "c" {
		t.Fatalf("list printed %s (%v)", out, err)
	}
	reqs := f.requests()
	if reqs[0].query != "instanceIdPrefix=a&runtimeStatus=Running%2CPending" || reqs[0].continuation != "" || reqs[1].continuation != "page2" {
		t.Fatalf("requests %+v", reqs)
	}

	before := len(f.requests())
	out, _, code = runCLI(t, f.srv.URL, nil, "list", "--top", "2")
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 2 {
		t.Fatalf("list --top 2 printed %s", out)
	}
	if reqs := f.requests()[before:]; len(reqs) != 1 || reqs[0].query != "top=2" {
		t.Fatalf("list --top 2 sent %+v; want one request with top=2", reqs)
	}
}

func TestClientWait(t *testing.T) {
	t.Parallel()
	status := func(s string) string {
		return fmt.Sprintf(`{"instanceId":"i","runtimeStatus":%q,"output":"x"}`, s)
	}
	for _, c := range []struct {
		final string
		code  int
		err   string
	}{
		{"Completed", 0, ""},
		{"Failed", 1, "soloist: instance 'i' is Failed\n"},
		{"Terminated", 1, "soloist: instance 'i' is Terminated\n"},
	} {
		f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
			if n < 2 {
				reply(w, 202, status("Running"))
				return
			}
			reply(w, 200, status(c.final))
		})
		out, errOut, code := runCLI(t, f.srv.URL, nil, "wait", "i", "--timeout", "30s")
		if code != c.code || errOut != c.err || !strings.Contains(out, `"runtimeStatus": "`+c.final+`"`) {
			t.Errorf("%s: exit %d, stderr %q, stdout %q", c.final, code, errOut, out)
		}
		reqs := f.requests()
		if n := len(reqs); n != 3 {
			t.Errorf("%s: %d polls, want 3", c.final, n)
		}
		// Each request asks the server to wait (a long poll, on the server's
		// watch), at most until --timeout runs out.
		for _, r := range reqs {
			q, _ := url.ParseQuery(r.query)
			d, err := time.ParseDuration(q.Get("waitForCompletion"))
			if err != nil || d <= 0 || d > 30*time.Second || q.Get("showInput") != "true" || r.path != durableBase+"/instances/i" {
				t.Errorf("%s: request %s?%s, want a status long poll of at most 30s", c.final, r.path, r.query)
			}
		}
	}

	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) { reply(w, 202, status("Running")) })
	out, errOut, code := runCLI(t, f.srv.URL, nil, "wait", "i", "--timeout", "300ms")
	if code != exitTimeout || errOut != "soloist: timed out after 300ms waiting for 'i'; it is still Running\n" || !strings.Contains(out, "Running") {
		t.Fatalf("timeout: exit %d, stderr %q, stdout %q", code, errOut, out)
	}

	f = newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) { reply(w, 404, `{"error":"no such instance"}`) })
	_, errOut, code = runCLI(t, f.srv.URL, nil, "wait", "i")
	if code != 1 || errOut != "soloist: no such instance (HTTP 404)\n" || len(f.requests()) != 1 {
		t.Fatalf("404: exit %d, stderr %q after %d polls", code, errOut, len(f.requests()))
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, _, code := runCLI(t, "", nil, "version")
	if code != 0 || !strings.HasPrefix(out, "soloist dev\ncommit: ") || !strings.Contains(out, "\ngo: go1.") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
	out, _, code = runCLI(t, "", nil, "--help")
	if code != 0 || !strings.Contains(out, "soloist serve") || !strings.Contains(out, "wait ID [--timeout D]") {
		t.Fatalf("help: exit %d, %q", code, out)
	}
	out, _, code = runCLI(t, "", nil, "--help")
	for _, w := range []string{"Exit codes:", "3  unreachable", "4  timeout", "completion"} {
		if !strings.Contains(out, w) {
			t.Errorf("--help lacks %q:\n%s", w, out)
		}
	}
	out, errOut, code := runCLI(t, "", nil, "help", "start")
	if code != 0 || errOut != "" || !strings.Contains(out, "--conflict-policy") || !strings.Contains(out, "[$SOLOIST_SERVER]") {
		t.Fatalf("help start: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = runCLI(t, "", nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "soloist dev\ncommit: ") {
		t.Fatalf("--version: exit %d, %q", code, out)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI(t, "", nil, "completion", shell)
		if code != 0 || errOut != "" || !strings.Contains(out, "soloist") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes", shell, code, errOut, len(out))
		}
	}
}

// wait says once that the server cannot be reached, and once that it
// answers again, however many polls fail in between.
func TestClientWaitUnreachableOnce(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch {
		case n < 6: // the connection drops: no answer at all
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case n < 8:
			reply(w, 202, `{"instanceId":"i","runtimeStatus":"Running"}`)
		default:
			reply(w, 200, `{"instanceId":"i","runtimeStatus":"Completed"}`)
		}
	})
	_, errOut, code := runCLI(t, f.srv.URL, nil, "wait", "i", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if n := len(f.requests()); n < 9 {
		t.Fatalf("%d polls, want at least 9", n)
	}
	if c := strings.Count(errOut, "cannot reach the Soloist server"); c != 1 {
		t.Errorf("stderr says %d times that the server cannot be reached, want once:\n%s", c, errOut)
	}
	if c := strings.Count(errOut, "answers again"); c != 1 {
		t.Errorf("stderr says %d times that the server answers again, want once:\n%s", c, errOut)
	}
	if strings.Count(errOut, "\n") != 2 {
		t.Errorf("stderr has more than the two lines:\n%s", errOut)
	}
}

// Server messages written for HTTP clients are rewritten for the CLI.
func TestClientErrorsForCLIUsers(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch {
		case r.Header.Get("Authorization") == "Bearer wrong":
			reply(w, 401, `{"error":"missing or invalid API key: send it as 'Authorization: Bearer <key>', as the 'x-functions-key' header, or as the query parameter code=<key>"}`)
		case r.Method == "DELETE":
			reply(w, 409, `{"error":"instance is active: 'job 1' is Running; terminate it before purging"}`)
		case strings.HasPrefix(r.URL.Path, "/bogus"):
			reply(w, 404, `{"error":"no route for GET /x/bogus; the API serves ..."}`)
		default:
			reply(w, 404, `{"error":"no instance with ID 'job 1' exists; check the ID, or list the instances with GET /runtime/webhooks/durabletask/instances"}`)
		}
	})
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"status", "job 1"}, nil, "soloist: no instance 'job 1'; check the ID, or run 'soloist list' to see the instances (HTTP 404)\n"},
		{[]string{"terminate", "job 1"}, nil, "soloist: no instance 'job 1'; check the ID, or run 'soloist list' to see the instances (HTTP 404)\n"},
		{[]string{"purge", "job 1"}, nil, "soloist: instance is active: 'job 1' is Running; terminate it before purging (soloist terminate 'job 1'), or wait until it finishes (HTTP 409)\n"},
		{[]string{"status", "x"}, []string{"SOLOIST_API_KEY", "wrong"},
			"soloist: the server refused the API key given with --api-key or SOLOIST_API_KEY; check it against the server's --api-keys-file (HTTP 401)\n"},
	} {
		_, errOut, code := runCLI(t, f.srv.URL, c.env, c.args...)
		if code != exitFailed || errOut != c.want {
			t.Errorf("%q: exit %d, stderr\n%q\nwant\n%q", c.args, code, errOut, c.want)
		}
		if strings.Contains(errOut, "GET /") || strings.Contains(errOut, "x-functions-key") {
			t.Errorf("%q: the message points at HTTP: %s", c.args, errOut)
		}
	}
	_, errOut, code := runCLI(t, f.srv.URL+"/bogus", nil, "list")
	if code != exitFailed || !strings.Contains(errOut, "is --server the base URL of a Soloist node?") {
		t.Errorf("wrong --server path: exit %d, %q", code, errOut)
	}
}
