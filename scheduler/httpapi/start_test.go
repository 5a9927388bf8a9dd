package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestStartThenConflict(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := e.do("POST", "/api/orchestrators/hello/job-1", `{"a":1}`).want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	base := e.instanceURL("job-1")
	want := CheckStatus{
		ID:                    "job-1",
		StatusQueryGetURI:     base,
		SendEventPostURI:      base + "/raiseEvent/{eventName}",
		TerminatePostURI:      base + "/terminate?reason={text}",
		RewindPostURI:         base + "/rewind?reason={text}",
		PurgeHistoryDeleteURI: base,
		RestartPostURI:        base + "/restart",
		SuspendPostURI:        base + "/suspend?reason={text}",
		ResumePostURI:         base + "/resume?reason={text}",
	}
	if cs != want {
		t.Errorf("check-status body\n got %+v\nwant %+v", cs, want)
	}
	if loc := r.header.Get("Location"); loc != base {
		t.Errorf("Location %q, want %q", loc, base)
	}
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
	}
	// The 202 came after the commit: the record is there, as sent.
	st := e.status("job-1")
	if st.Name != "hello" || st.RuntimeStatus != orchestrator.StatusPending || string(st.Input) != `{"a":1}` {
		t.Fatalf("stored record %+v", st)
	}

	r = e.do("POST", "/api/orchestrators/hello/job-1", `{"a":2}`).want(t, http.StatusConflict)
	wantBody := `{"error":"An instance with ID 'job-1' already exists.","id":"job-1","runtimeStatus":"Pending","statusQueryGetUri":"` + base + `"}`
	if got := strings.TrimSpace(string(r.body)); got != wantBody {
		t.Errorf("409 body\n got %s\nwant %s", got, wantBody)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("409 Content-Type %q", ct)
	}
	if again := e.status("job-1"); again.ExecutionID != st.ExecutionID || string(again.Input) != `{"a":1}` {
		t.Errorf("the refused start changed the record: %+v", again)
	}
	e.wantStartCount("hello", "started", 1)
	e.wantStartCount("hello", "conflict", 1)
	if !strings.Contains(e.logs.String(), "instance_id=job-1") || !strings.Contains(e.logs.String(), "execution_id="+st.ExecutionID) {
		t.Errorf("the start was not logged with instance_id and execution_id:\n%s", e.logs.String())
	}
}

func TestStartGeneratedID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := map[string]bool{}
	for i := 0; i < 2; i++ {
		r := e.do("POST", "/api/orchestrators/hello", "").want(t, http.StatusAccepted)
		var cs CheckStatus
		r.decode(t, &cs)
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(cs.ID) {
			t.Fatalf("generated ID %q is not 32 hex characters", cs.ID)
		}
		ids[cs.ID] = true
		if cs.StatusQueryGetURI != e.instanceURL(cs.ID) {
			t.Errorf("statusQueryGetUri %q", cs.StatusQueryGetURI)
		}
		var body InstanceStatus
		e.get("GET", cs.StatusQueryGetURI).want(t, http.StatusAccepted).decode(t, &body)
		if body.InstanceID != cs.ID || body.Name != "hello" || string(body.Input) != "null" {
			t.Errorf("status of the generated instance: %+v", body)
		}
	}
	if len(ids) != 2 {
		t.Errorf("two starts generated the same ID: %v", ids)
	}
	e.wantStartCount("hello", "started", 2)
}

func TestStartPolicies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/p1", `"in"`).want(t, http.StatusAccepted)
	first := e.status("p1")

	// useExisting: 200 with the existing instance's check-status body, nothing new.
	r := e.do("POST", "/api/orchestrators/hello/p1?conflictPolicy=useExisting", `"other"`).want(t, http.StatusOK)
	var cs CheckStatus
	r.decode(t, &cs)
	if cs.ID != "p1" || cs.StatusQueryGetURI != e.instanceURL("p1") || cs.TerminatePostURI != e.instanceURL("p1")+"/terminate?reason={text}" {
		t.Errorf("useExisting body %+v", cs)
	}
	if st := e.status("p1"); st.ExecutionID != first.ExecutionID || string(st.Input) != `"in"` {
		t.Errorf("useExisting changed the instance: %+v", st)
	}
	e.wantStartCount("hello", "existing", 1)

	// terminateExisting: a new execution replaces the active one.
	e.do("POST", "/api/orchestrators/hello/p1?conflictPolicy=terminateExisting", `"second"`).want(t, http.StatusAccepted)
	second := e.status("p1")
	if second.ExecutionID == first.ExecutionID || string(second.Input) != `"second"` {
		t.Errorf("terminateExisting did not start a new execution: %+v", second)
	}

	// reusePolicy=reject on a terminal ID: 409.
	e.do("POST", BasePath+"/instances/p1/terminate", "").want(t, http.StatusAccepted)
	r = e.do("POST", "/api/orchestrators/hello/p1?reusePolicy=reject", "").want(t, http.StatusConflict)
	var conflict ConflictResponse
	r.decode(t, &conflict)
	if conflict.RuntimeStatus != "Terminated" || conflict.ID != "p1" {
		t.Errorf("409 body %+v", conflict)
	}
	// The default reusePolicy=allow starts it again.
	e.do("POST", "/api/orchestrators/hello/p1", "").want(t, http.StatusAccepted)
	if st := e.status("p1"); st.RuntimeStatus != orchestrator.StatusPending || st.ExecutionID == second.ExecutionID {
		t.Errorf("reuse of a terminal ID: %+v", st)
	}
	e.wantStartCount("hello", "started", 3)
	e.wantStartCount("hello", "conflict", 1)
}

func TestStartRefusesBadRequestsAndWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	limit := orchestrator.DefaultMaxPayload
	cases := []struct {
		name, path, body string
		code             int
		msg              string // a substring of the error message
	}{
		{"empty ID", "/api/orchestrators/hello/", "", 400, "empty"},
		{"starts with @", "/api/orchestrators/hello/@x", "", 400, "'@'"},
		{"hash", "/api/orchestrators/hello/a%23b", "", 400, "'#'"},
		{"question mark", "/api/orchestrators/hello/a%3Fb", "", 400, "'?'"},
		{"backslash", "/api/orchestrators/hello/a%5Cb", "", 400, `'\'`},
		{"control character", "/api/orchestrators/hello/a%01", "", 400, "control character"},
		{"257 characters", "/api/orchestrators/hello/" + strings.Repeat("x", 257), "", 400, "longer than 256"},
		{"encoded slash", "/api/orchestrators/hello/a%2Fb", "", 400, "'/'"},
		{"literal slash", "/api/orchestrators/hello/a/b", "", 400, "'/'"},
		{"dot", "/api/orchestrators/hello/%2E", "", 400, "path segment"},
		{"dot dot", "/api/orchestrators/hello/%2E%2E", "", 400, "path segment"},
		{"body not UTF-8", "/api/orchestrators/hello/ok", "\"\xff\"", 400, "UTF-8"},
		{"body not JSON", "/api/orchestrators/hello/ok", "not json", 400, "not valid JSON"},
		{"body truncated JSON", "/api/orchestrators/hello/ok", `{"a":`, 400, "not valid JSON"},
		{"generated ID, body not JSON", "/api/orchestrators/hello", "{", 400, "not valid JSON"},
		{"body too large", "/api/orchestrators/hello/ok", `"` + strings.Repeat("x", limit) + `"`, 413, strconv.Itoa(limit)},
		{"bad conflictPolicy", "/api/orchestrators/hello/ok?conflictPolicy=bogus", "", 400, "useExisting"},
		{"bad reusePolicy", "/api/orchestrators/hello/ok?reusePolicy=never", "", 400, "allowFailedOnly"},
		{"unknown function", "/api/orchestrators/nope/ok", "", 404, "nope"},
		{"unknown function, generated ID", "/api/orchestrators/Hello", "", 404, "Hello"},
	}
	for _, c := range cases {
		r := e.do("POST", c.path, c.body).want(t, c.code)
		msg := r.errorMessage(t)
		if !strings.Contains(msg, c.msg) {
			t.Errorf("%s: message %q does not mention %q", c.name, msg, c.msg)
		}
		if n := e.keyCount(); n != 0 {
			t.Fatalf("%s: %d keys written to etcd, want none", c.name, n)
		}
	}
	e.wantStartCount("hello", "invalid", float64(len(cases)-2))
	e.wantStartCount("", "invalid", 2)
	e.wantStartCount("nope", "invalid", 0)
	e.wantStartCount("hello", "started", 0)
}

func TestStartUnusualValidIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, id := range []string{strings.Repeat("y", 256), "día 1+2=3;ok", "...", ".x", "%"} {
		escaped := url.PathEscape(id)
		r := e.do("POST", "/api/orchestrators/hello/"+escaped, "").want(t, http.StatusAccepted)
		var cs CheckStatus
		r.decode(t, &cs)
		if cs.ID != id {
			t.Fatalf("id %q, want %q", cs.ID, id)
		}
		// The handed-out URL reaches the instance.
		var st InstanceStatus
		e.get("GET", cs.StatusQueryGetURI).want(t, http.StatusAccepted).decode(t, &st)
		if st.InstanceID != id {
			t.Errorf("status via %s: instanceId %q, want %q", cs.StatusQueryGetURI, st.InstanceID, id)
		}
	}
}

func TestStartIsAtomicUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 16
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/orchestrators/hello/race", strings.NewReader(fmt.Sprint(i)))
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusConflict] != n-1 {
		t.Errorf("status codes of %d racing starts: %v; want one 202 and the rest 409", n, count)
	}
	e.wantStartCount("hello", "started", 1)
	e.wantStartCount("hello", "conflict", n-1)
}

func TestStartWhileNotReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.setReady(errDraining)
	r := e.do("POST", "/api/orchestrators/hello/x", `{}`).want(t, http.StatusServiceUnavailable)
	if msg := r.errorMessage(t); !strings.Contains(msg, "draining") {
		t.Errorf("503 message %q does not say why", msg)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if n := e.keyCount(); n != 0 {
		t.Fatalf("%d keys written while not ready", n)
	}
	e.wantStartCount("hello", "error", 1)

	e.setReady(nil)
	e.do("POST", "/api/orchestrators/hello/x", `{}`).want(t, http.StatusAccepted)
	e.wantStartCount("hello", "started", 1)
}

func TestCheckStatusURLsFollowTheRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/api/orchestrators/hello/fwd", "", "Host", "api.example.com:8443", "X-Forwarded-Proto", "https").
		want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if want := "https://api.example.com:8443" + BasePath + "/instances/fwd"; cs.StatusQueryGetURI != want || r.header.Get("Location") != want {
		t.Errorf("statusQueryGetUri %q, Location %q, want %q", cs.StatusQueryGetURI, r.header.Get("Location"), want)
	}
	// A forwarded proto that is neither http nor https is ignored.
	r = e.do("POST", "/api/orchestrators/hello/fwd2", "", "Host", "h.example", "X-Forwarded-Proto", "javascript").
		want(t, http.StatusAccepted)
	r.decode(t, &cs)
	if want := "http://h.example" + BasePath + "/instances/fwd2"; cs.StatusQueryGetURI != want {
		t.Errorf("statusQueryGetUri %q, want %q", cs.StatusQueryGetURI, want)
	}
}

func TestStartLimitFromConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxPayload = 64 })
	e.do("POST", "/api/orchestrators/hello/small", `"`+strings.Repeat("x", 62)+`"`).want(t, http.StatusAccepted)
	r := e.do("POST", "/api/orchestrators/hello/big", `"`+strings.Repeat("x", 63)+`"`).want(t, http.StatusRequestEntityTooLarge)
	if msg := r.errorMessage(t); !strings.Contains(msg, "64 bytes") {
		t.Errorf("413 message %q does not state the limit", msg)
	}
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/small", "").want(t, http.StatusAccepted).decode(t, &st)
	var in string
	if err := json.Unmarshal(st.Input, &in); err != nil || len(in) != 62 {
		t.Errorf("input %s", st.Input)
	}
	if _, err := e.client.Status(e.ctx(), "big"); err == nil {
		t.Error("the refused start was written")
	}
}

// reusePolicy=ignore on a terminal ID: 200 naming the existing instance and
// its executionId, nothing written, also for 64 racing starts; a status not
// in ignoreStatuses is replaced (202); bad ignoreStatuses are a 400.
func TestStartReuseIgnore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/ig", `"in"`).want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/ig/terminate", "").want(t, http.StatusAccepted)
	first := e.status("ig")
	if first.RuntimeStatus != orchestrator.StatusTerminated {
		t.Fatalf("setup: %s", first.RuntimeStatus)
	}

	const n = 64
	type answer struct {
		code int
		cs   CheckStatus
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/orchestrators/hello/ig?reusePolicy=ignore", strings.NewReader(fmt.Sprint(i)))
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var a answer
			a.code = resp.StatusCode
			if err := json.NewDecoder(resp.Body).Decode(&a.cs); err != nil {
				t.Error(err)
			}
			answers <- a
		}()
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.code != http.StatusOK || a.cs.ID != "ig" || a.cs.ExecutionID != first.ExecutionID || a.cs.StatusQueryGetURI != e.instanceURL("ig") {
			t.Fatalf("ignored start answered %d %+v; want 200 naming ig and execution %s", a.code, a.cs, first.ExecutionID)
		}
	}
	if st := e.status("ig"); st.ExecutionID != first.ExecutionID || st.RuntimeStatus != orchestrator.StatusTerminated || string(st.Input) != `"in"` {
		t.Fatalf("ignored starts changed the instance: %+v", st)
	}
	e.wantStartCount("hello", "existing", n)

	// Terminated is not listed: the start replaces it.
	r := e.do("POST", "/api/orchestrators/hello/ig?reusePolicy=ignore&ignoreStatuses=Completed,Failed", `"again"`).want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if st := e.status("ig"); st.ExecutionID == first.ExecutionID || string(st.Input) != `"again"` || cs.ExecutionID != "" {
		t.Fatalf("unlisted status not replaced: %+v (answer %+v)", st, cs)
	}

	for _, q := range []string{"reusePolicy=ignore&ignoreStatuses=Running", "ignoreStatuses=Completed", "reusePolicy=ignore&ignoreStatuses=Bogus"} {
		r := e.do("POST", "/api/orchestrators/hello/ig-bad?"+q, "").want(t, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "ignoreStatuses") {
			t.Errorf("%s: 400 body %s does not name ignoreStatuses", q, r.body)
		}
	}
	e.do("GET", BasePath+"/instances/ig-bad", "").want(t, http.StatusNotFound)
}
