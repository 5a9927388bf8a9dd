package httpapi

// Tests of the Durable Functions HTTP API parity (docs/http-api.md, "Parity
// with Durable Functions": the table of every route and parameter of the
// reference): each route and parameter of that table has a test here or in
// the older tests of the package (start_test.go, instances_test.go, history_test.go).

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// newNodeEnv is an env with a scheduler node that runs its functions:
//
//	echo       completes with its input
//	approve    waits for the event "go" and completes with its data
//	boom       fails (ApplicationError of type Boom)
//	flaky      fails the first time its activity runs for an instance, then completes with "ok" (for rewind)
//	parent     starts approve as its sub-orchestration "<id>-child" and completes with the child's output
//	versioned  versions v1 and v2 (the default), each completing with its version
func newNodeEnv(t *testing.T, opts ...func(*Config)) *env {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	reg := orchestrator.NewRegistry()
	must(reg.AddOrchestrator("echo", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return ctx.RawInput(), nil
	}))
	must(reg.AddOrchestrator("approve", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v any
		if err := ctx.WaitForExternalEvent("go", 0).Await(&v); err != nil {
			return nil, err
		}
		return v, nil
	}))
	must(reg.AddOrchestrator("boom", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		return nil, &orchestrator.ApplicationError{Type: "Boom", Message: "it went boom"}
	}))
	var mu sync.Mutex
	runs := map[string]int{}
	must(reg.AddActivity("once", orchestrator.Activity(func(ctx context.Context, id string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		runs[id]++
		if runs[id] == 1 {
			return "", errors.New("the first run fails")
		}
		return "ok", nil
	})))
	must(reg.AddOrchestrator("flaky", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var s string
		err := ctx.CallActivity("once", ctx.InstanceID()).Await(&s)
		return s, err
	}))
	must(reg.AddOrchestrator("parent", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var v any
		err := ctx.CallSubOrchestrator("approve", orchestrator.WithSubOrchestrationInstanceID(ctx.InstanceID()+"-child")).Await(&v)
		return v, err
	}))
	for _, v := range []string{"v1", "v2"} {
		must(reg.AddOrchestratorVersion("versioned", v, func(ctx *orchestrator.OrchestrationContext) (any, error) {
			return ctx.Version(), nil
		}, v == "v2"))
	}
	e := newEnv(t, append([]func(*Config){func(c *Config) { c.Function = RegistryFunction(reg) }}, opts...)...)
	node, err := scheduler.New(scheduler.Config{
		Etcd: e.etcd, Prefix: testPrefix, NodeID: "n1", LeaseTTL: 2 * time.Second,
		Registry: reg, Registerer: prometheus.NewRegistry(), Logger: e.cfg.Logger,
	})
	must(err)
	must(node.Start(e.ctx()))
	// Registered after newEnv's etcd, so it runs before the etcd closes.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := node.Drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	return e
}

// waitDone waits (on the client's watch) until id is terminal.
func (e *env) waitDone(id string) *orchestrator.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := e.client.WaitForOrchestrationCompletion(ctx, id)
	if err != nil {
		e.t.Fatalf("wait for %q: %v", id, err)
	}
	return st
}

// waitRunning waits until id exists (another request or an orchestration
// may be about to start it) and is no longer Pending.
func (e *env) waitRunning(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, err := e.client.WaitForOrchestrationStart(ctx, id)
		if err == nil {
			return
		}
		if !errors.Is(err, orchestrator.ErrInstanceNotFound) || ctx.Err() != nil {
			e.t.Fatalf("wait for %q to start: %v", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The built-in start route: the same start as /api/orchestrators, with
// Durable Functions' 400 for an unknown function.
func TestBuiltinStartRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", BasePath+"/orchestrators/hello/b1?taskHub=MyHub&connection=Storage", `{"a":1}`).want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	base := e.instanceURL("b1")
	if cs.ID != "b1" || cs.StatusQueryGetURI != base || cs.RewindPostURI != base+"/rewind?reason={text}" ||
		cs.PurgeHistoryDeleteURI != base || cs.RestartPostURI != base+"/restart" {
		t.Errorf("check-status body %+v", cs)
	}
	if r.header.Get("Location") != base || r.header.Get("Retry-After") == "" {
		t.Errorf("202 headers Location %q Retry-After %q", r.header.Get("Location"), r.header.Get("Retry-After"))
	}
	if st := e.status("b1"); st.Name != "hello" || string(st.Input) != `{"a":1}` {
		t.Errorf("stored %+v", st)
	}
	// A generated ID.
	r = e.do("POST", BasePath+"/orchestrators/hello", "").want(t, http.StatusAccepted)
	r.decode(t, &cs)
	if len(cs.ID) != 32 || e.status(cs.ID).Name != "hello" {
		t.Errorf("generated start %+v", cs)
	}
	// The same singleton semantics: 409, useExisting, policies.
	e.do("POST", BasePath+"/orchestrators/hello/b1", "").want(t, http.StatusConflict)
	e.do("POST", BasePath+"/orchestrators/hello/b1?conflictPolicy=useExisting", "").want(t, http.StatusOK).decode(t, &cs)
	if cs.ID != "b1" {
		t.Errorf("useExisting %+v", cs)
	}
	e.do("POST", BasePath+"/orchestrators/hello/b1?reusePolicy=sometimes", "").want(t, http.StatusBadRequest).errorMessage(t)

	// Unknown function: 400 here (the reference), 404 on /api (the starter
	// function of the samples); neither writes anything.
	keys := e.keyCount()
	r = e.do("POST", BasePath+"/orchestrators/nope/x", "").want(t, http.StatusBadRequest)
	if msg := r.errorMessage(t); !strings.Contains(msg, "'nope'") {
		t.Errorf("400 message %q", msg)
	}
	e.do("POST", "/api/orchestrators/nope/x", "").want(t, http.StatusNotFound).errorMessage(t)
	e.do("POST", BasePath+"/orchestrators/hello/a%2Fb", "").want(t, http.StatusBadRequest).errorMessage(t)
	e.do("POST", BasePath+"/orchestrators/hello/b2", "{").want(t, http.StatusBadRequest).errorMessage(t)
	if n := e.keyCount(); n != keys {
		t.Errorf("refused starts wrote %d keys", n-keys)
	}
	e.wantStartCount("", "invalid", 2)
	e.wantStartCount("hello", "started", 2)
}

// Query parameters: every route refuses one it does not take (400, with
// what it takes), matches names in any letter case, refuses repeats, and
// takes taskHub and connection (no effect) and code (the key).
func TestQueryParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/q1", `"in"`).want(t, http.StatusAccepted)
	for _, c := range []struct{ method, path, mention string }{
		{"POST", "/api/orchestrators/hello/q2?conflictPolicyy=fail", "conflictPolicy"},
		{"POST", BasePath + "/orchestrators/hello/q2?showInput=true", "timeout"},
		{"GET", BasePath + "/instances/q1?showHistroy=true", "showHistory"},
		{"GET", BasePath + "/instances/q1?createdTimeFrom=2026-01-01", "GET " + BasePath + "/instances?createdTimeFrom"},
		{"GET", BasePath + "/instances/q1?runtimeStatus=Running", "filters lists"},
		{"GET", BasePath + "/instances?showHistory=true", "list items carry no history"},
		{"GET", BasePath + "/instances?showHistoryOutput=true", "list items carry no history"},
		{"GET", BasePath + "/instances?systemKey=k", "code=<key>"},
		{"POST", BasePath + "/instances/q1/suspend?recursive=true", "reason"},
		{"POST", BasePath + "/instances/q1/terminate?why=x", "recursive"},
		{"POST", BasePath + "/instances/q1/raiseEvent/go?reason=x", "no query parameters"},
		{"POST", BasePath + "/instances/q1/restart?reason=x", "restartWithNewInstanceId"},
		{"DELETE", BasePath + "/instances/q1?force=true", "recursive"},
		{"DELETE", BasePath + "/instances?createdTimeFrom=2026-01-01&tag=a:b", "instanceIdPrefix"},
		{"GET", BasePath + "/instances?showInput=true&showInput=false", "once"},
		{"GET", BasePath + "/instances?top=%zz", "URL encoding"},
	} {
		r := e.do(c.method, c.path, "").want(t, http.StatusBadRequest)
		if msg := r.errorMessage(t); !strings.Contains(msg, c.mention) {
			t.Errorf("%s %s: message %q does not mention %q", c.method, c.path, msg, c.mention)
		}
	}
	if st := e.status("q1"); st.RuntimeStatus != orchestrator.StatusPending {
		t.Errorf("a refused request changed q1: %s", st.RuntimeStatus)
	}
	// Any letter case, as Durable Functions reads them.
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/q1?SHOWINPUT=false&taskhub=x", "").want(t, http.StatusAccepted).decode(t, &st)
	if string(st.Input) != "null" {
		t.Errorf("SHOWINPUT=false: input %s", st.Input)
	}
	// taskHub and connection on every route.
	hub := "taskHub=DurableFunctionsHub&connection=AzureWebJobsStorage"
	e.do("GET", BasePath+"/instances?"+hub, "").want(t, http.StatusOK)
	e.do("POST", BasePath+"/instances/q1/raiseEvent/go?"+hub, "1").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/q1/suspend?"+hub, "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/q1/resume?"+hub, "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/q1/terminate?"+hub, "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/q1/rewind?"+hub, "").want(t, http.StatusGone)
	e.do("DELETE", BasePath+"/instances/q1?"+hub, "").want(t, http.StatusOK)
}

// scheduledStartTime keeps the instance Pending until then, and the status
// shows it.
func TestScheduledStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	at := time.Now().UTC().Add(time.Hour).Truncate(time.Second)
	e.do("POST", BasePath+"/orchestrators/hello/s1?scheduledStartTime="+url.QueryEscape(at.Format(time.RFC3339)), "").want(t, http.StatusAccepted)
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/s1", "").want(t, http.StatusAccepted).decode(t, &st)
	if st.RuntimeStatus != "Pending" || st.ScheduledStartTime == nil || !st.ScheduledStartTime.Equal(at) {
		t.Errorf("status %+v, want Pending until %v", st, at)
	}
	if got := e.status("s1").ScheduledStartTime; got == nil || !got.Equal(at) {
		t.Errorf("stored scheduledStartTime %v", got)
	}
	// A zone offset whose + was not encoded (it arrives as a space), and a
	// time without a zone (UTC).
	local := at.In(time.FixedZone("", 2*3600)).Format("2006-01-02T15:04:05-07:00")
	e.do("POST", "/api/orchestrators/hello/s2?scheduledStartTime="+local, "").want(t, http.StatusAccepted)
	e.do("POST", "/api/orchestrators/hello/s3?scheduledStartTime="+at.Format("2006-01-02T15:04:05"), "").want(t, http.StatusAccepted)
	for _, id := range []string{"s2", "s3"} {
		if got := e.status(id).ScheduledStartTime; got == nil || !got.Equal(at) {
			t.Errorf("%s: scheduledStartTime %v, want %v", id, got, at)
		}
	}
	// A time in the past starts at once: no scheduledStartTime.
	e.do("POST", "/api/orchestrators/hello/s4?scheduledStartTime=2020-01-01T00:00:00Z", "").want(t, http.StatusAccepted)
	var raw map[string]any
	e.do("GET", BasePath+"/instances/s4", "").want(t, http.StatusAccepted).decode(t, &raw)
	if _, ok := raw["scheduledStartTime"]; ok {
		t.Errorf("a past scheduledStartTime is shown: %v", raw)
	}
	keys := e.keyCount()
	r := e.do("POST", BasePath+"/orchestrators/hello/s5?scheduledStartTime=tomorrow", "").want(t, http.StatusBadRequest)
	if msg := r.errorMessage(t); !strings.Contains(msg, "scheduledStartTime") || !strings.Contains(msg, "RFC 3339") {
		t.Errorf("message %q", msg)
	}
	if e.keyCount() != keys {
		t.Error("a refused scheduled start wrote keys")
	}
}

// tag=key:value on a start and on a list; version on a start, the
// registry's default version without it.
func TestTagsAndVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", BasePath+"/orchestrators/hello/t1?tag=team:search&tag=env:prod&tag=url:http://x", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/orchestrators/hello/t2?tag=team:search&tag=env:dev", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/orchestrators/hello/t3", "").want(t, http.StatusAccepted)
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/t1", "").want(t, http.StatusAccepted).decode(t, &st)
	if len(st.Tags) != 3 || st.Tags["team"] != "search" || st.Tags["env"] != "prod" || st.Tags["url"] != "http://x" {
		t.Errorf("tags %v", st.Tags)
	}
	list := func(q string) string {
		t.Helper()
		var items []InstanceStatus
		e.do("GET", BasePath+"/instances?"+q, "").want(t, http.StatusOK).decode(t, &items)
		var ids []string
		for _, it := range items {
			ids = append(ids, it.InstanceID)
		}
		return strings.Join(ids, ",")
	}
	for q, want := range map[string]string{
		"tag=team:search":                      "t1,t2",
		"tag=team:search&tag=env:prod":         "t1",
		"tag=env:staging":                      "",
		"tag=team:search&instanceIdPrefix=t2":  "t2",
		"tag=team:search&runtimeStatus=Failed": "",
	} {
		if got := list(q); got != want {
			t.Errorf("list?%s = %q, want %q", q, got, want)
		}
	}
	for _, q := range []string{"tag=team", "tag=:x", "tag=a:1&tag=a:2"} {
		e.do("GET", BasePath+"/instances?"+q, "").want(t, http.StatusBadRequest).errorMessage(t)
		e.do("POST", "/api/orchestrators/hello/t9?"+q, "").want(t, http.StatusBadRequest).errorMessage(t)
	}
	e.do("POST", "/api/orchestrators/hello/t9?tag="+strings.Repeat("k", 65)+":v", "").want(t, http.StatusBadRequest).errorMessage(t)

	// Versions: "other" has v1 and v2, v2 the default.
	e.do("POST", BasePath+"/orchestrators/other/v-default", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/orchestrators/other/v-one?version=v1", "").want(t, http.StatusAccepted)
	e.do("GET", BasePath+"/instances/v-default", "").want(t, http.StatusAccepted).decode(t, &st)
	if st.Version != "v2" || e.status("v-one").Version != "v1" {
		t.Errorf("versions %q and %q, want v2 (the default) and v1", st.Version, e.status("v-one").Version)
	}
	r := e.do("POST", BasePath+"/orchestrators/other/v-nine?version=v9", "").want(t, http.StatusBadRequest)
	if msg := r.errorMessage(t); !strings.Contains(msg, "v9") || !strings.Contains(msg, "'v2'") {
		t.Errorf("unknown version: message %q", msg)
	}
	e.do("POST", "/api/orchestrators/hello/v-hello?version=v1", "").want(t, http.StatusBadRequest).errorMessage(t)
	var raw map[string]any
	e.do("GET", BasePath+"/instances/t3", "").want(t, http.StatusAccepted).decode(t, &raw)
	for _, f := range []string{"version", "tags", "scheduledStartTime", "parentInstanceId", "failureDetails"} {
		if _, ok := raw[f]; ok {
			t.Errorf("an unversioned, untagged instance shows %q: %v", f, raw)
		}
	}
}

// timeout on a start: 200 with the output if the instance completes in
// time, its status if it fails or is terminated, 202 if not; waiting is on
// the watch (pollingInterval has no effect).
func TestStartAndWait(t *testing.T) {
	t.Parallel()
	e := newNodeEnv(t)

	began := time.Now()
	r := e.do("POST", BasePath+"/orchestrators/echo/w1?timeout=20&pollingInterval=5", `{"x":[1,2]}`).want(t, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"x":[1,2]}` {
		t.Errorf("start and wait: body %s, want the output", got)
	}
	if time.Since(began) > 10*time.Second || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Errorf("answered after %v with Content-Type %q", time.Since(began), r.header.Get("Content-Type"))
	}
	// The /api route and a Go duration.
	e.do("POST", "/api/orchestrators/echo/w2?timeout=15s", `"s"`).want(t, http.StatusOK)

	// Still running when the time runs out: 202 and the check-status body.
	began = time.Now()
	r = e.do("POST", BasePath+"/orchestrators/approve/w3?timeout=0.5", "").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if waited := time.Since(began); waited < 500*time.Millisecond || cs.ID != "w3" || r.header.Get("Location") != e.instanceURL("w3") {
		t.Errorf("after %v: %+v, Location %q", waited, cs, r.header.Get("Location"))
	}
	// useExisting waits for the existing instance; its timeout is a 202 too.
	e.do("POST", BasePath+"/orchestrators/approve/w3?conflictPolicy=useExisting&timeout=0.2", "").want(t, http.StatusAccepted)
	// Completed while the start waits.
	done := make(chan *response, 1)
	go func() {
		done <- e.do("POST", BasePath+"/orchestrators/approve/w3?conflictPolicy=useExisting&timeout=20", "")
	}()
	time.Sleep(200 * time.Millisecond)
	e.do("POST", BasePath+"/instances/w3/raiseEvent/go", `"yes"`).want(t, http.StatusAccepted)
	if r := <-done; r.code != http.StatusOK || strings.TrimSpace(string(r.body)) != `"yes"` {
		t.Errorf("useExisting and wait: %d %s", r.code, r.body)
	}

	// Failed: its status, 200, or 500 with returnInternalServerErrorOnFailure.
	r = e.do("POST", BasePath+"/orchestrators/boom/w4?timeout=20", "").want(t, http.StatusOK)
	var st InstanceStatus
	r.decode(t, &st)
	if st.RuntimeStatus != "Failed" || st.FailureDetails == nil || st.FailureDetails.ErrorType != "Boom" {
		t.Errorf("failed start and wait: %+v", st)
	}
	r = e.do("POST", BasePath+"/orchestrators/boom/w5?timeout=20&returnInternalServerErrorOnFailure=true", "").want(t, http.StatusInternalServerError)
	st = InstanceStatus{}
	r.decode(t, &st)
	if st.RuntimeStatus != "Failed" || st.InstanceID != "w5" {
		t.Errorf("500 body %+v", st)
	}
	// Terminated while the start waits: its status.
	go func() { done <- e.do("POST", BasePath+"/orchestrators/approve/w6?timeout=20", "") }()
	e.waitRunning("w6")
	e.do("POST", BasePath+"/instances/w6/terminate?reason=stop", "").want(t, http.StatusAccepted)
	r = <-done
	st = InstanceStatus{}
	r.want(t, http.StatusOK).decode(t, &st)
	if st.RuntimeStatus != "Terminated" || string(st.Output) != `"stop"` {
		t.Errorf("terminated start and wait: %+v", st)
	}

	// pollingInterval alone does not wait; bad values are refused.
	e.do("POST", BasePath+"/orchestrators/approve/w7?pollingInterval=1", "").want(t, http.StatusAccepted)
	for _, q := range []string{"timeout=-1", "timeout=301", "timeout=soon", "timeout=NaN", "pollingInterval=-2", "pollingInterval=later", "timeout=10m"} {
		r := e.do("POST", BasePath+"/orchestrators/echo/w8?"+q, "").want(t, http.StatusBadRequest)
		name, _, _ := strings.Cut(q, "=")
		if msg := r.errorMessage(t); !strings.Contains(msg, name) {
			t.Errorf("%s: message %q", q, msg)
		}
	}
	if _, err := e.client.Status(e.ctx(), "w8"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Errorf("refused starts started w8: %v", err)
	}
}

// A 202 of a start asked for returnInternalServerErrorOnFailure carries it
// in statusQueryGetUri, as Durable Functions' CreateCheckStatusResponse does.
func TestStartCheckStatusAsksFor500(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", BasePath+"/orchestrators/hello/f1?returnInternalServerErrorOnFailure=true", "").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	want := e.instanceURL("f1") + "?returnInternalServerErrorOnFailure=true"
	if cs.StatusQueryGetURI != want || r.header.Get("Location") != want || cs.TerminatePostURI != e.instanceURL("f1")+"/terminate?reason={text}" {
		t.Errorf("check-status %+v, Location %q", cs, r.header.Get("Location"))
	}
	e.get("GET", cs.StatusQueryGetURI).want(t, http.StatusAccepted)
	// Without a wait, with the time running out.
	r = e.do("POST", BasePath+"/orchestrators/hello/f2?returnInternalServerErrorOnFailure=true&timeout=0.1", "").want(t, http.StatusAccepted)
	r.decode(t, &cs)
	if cs.StatusQueryGetURI != e.instanceURL("f2")+"?returnInternalServerErrorOnFailure=true" {
		t.Errorf("check-status after a wait %+v", cs)
	}
	e.do("POST", BasePath+"/orchestrators/hello/f3?returnInternalServerErrorOnFailure=maybe", "").want(t, http.StatusBadRequest).errorMessage(t)
}

// The status route: returnInternalServerErrorOnFailure, failureDetails,
// waitForCompletion (a long poll on the watch), and the Soloist fields.
func TestStatusOfFinishedInstances(t *testing.T) {
	t.Parallel()
	e := newNodeEnv(t)
	e.do("POST", BasePath+"/orchestrators/boom/f1", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/orchestrators/echo/c1", `"out"`).want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/orchestrators/approve/t1", "").want(t, http.StatusAccepted)
	e.waitDone("f1")
	e.waitDone("c1")
	e.do("POST", BasePath+"/instances/t1/terminate", "").want(t, http.StatusAccepted)

	var st InstanceStatus
	e.do("GET", BasePath+"/instances/f1", "").want(t, http.StatusOK).decode(t, &st)
	if st.RuntimeStatus != "Failed" || st.FailureDetails == nil || st.FailureDetails.ErrorType != "Boom" ||
		st.FailureDetails.ErrorMessage != "it went boom" || !strings.Contains(string(st.Output), "boom") {
		t.Errorf("failed status %+v (failureDetails %+v)", st, st.FailureDetails)
	}
	r := e.do("GET", BasePath+"/instances/f1?returnInternalServerErrorOnFailure=true&showHistory=true", "").want(t, http.StatusInternalServerError)
	st = InstanceStatus{}
	r.decode(t, &st)
	if st.RuntimeStatus != "Failed" || st.FailureDetails == nil || len(st.HistoryEvents) == 0 || r.header.Get("Location") != "" {
		t.Errorf("500 body %+v", st)
	}
	for _, id := range []string{"c1", "t1"} {
		e.do("GET", BasePath+"/instances/"+id+"?returnInternalServerErrorOnFailure=true", "").want(t, http.StatusOK)
	}
	var raw map[string]any
	e.do("GET", BasePath+"/instances/c1", "").want(t, http.StatusOK).decode(t, &raw)
	if _, ok := raw["failureDetails"]; ok {
		t.Errorf("a Completed instance has failureDetails: %v", raw)
	}
	// A terminal instance answers a long poll at once.
	began := time.Now()
	e.do("GET", BasePath+"/instances/c1?waitForCompletion=30", "").want(t, http.StatusOK)
	if time.Since(began) > 5*time.Second {
		t.Errorf("a long poll of a terminal instance took %v", time.Since(began))
	}
}

func TestStatusLongPoll(t *testing.T) {
	t.Parallel()
	e := newNodeEnv(t)
	e.do("POST", BasePath+"/orchestrators/approve/lp", "").want(t, http.StatusAccepted)
	e.waitRunning("lp")

	// Completed while the request waits: answered then, with the final status.
	done := make(chan *response, 1)
	began := time.Now()
	go func() { done <- e.do("GET", BasePath+"/instances/lp?waitForCompletion=20s&showHistory=true", "") }()
	time.Sleep(300 * time.Millisecond)
	e.do("POST", BasePath+"/instances/lp/raiseEvent/go", `{"ok":1}`).want(t, http.StatusAccepted)
	r := <-done
	var st InstanceStatus
	r.want(t, http.StatusOK).decode(t, &st)
	waited := time.Since(began)
	if st.RuntimeStatus != "Completed" || string(st.Output) != `{"ok":1}` || len(st.HistoryEvents) == 0 {
		t.Errorf("long poll answer %+v", st)
	}
	if waited < 300*time.Millisecond || waited > 15*time.Second {
		t.Errorf("the long poll answered after %v: before the event, or not when it completed", waited)
	}

	// Still active when the wait runs out: 202, and a Location that keeps
	// the request's parameters (as Durable Functions' does).
	e.do("POST", BasePath+"/orchestrators/approve/lp2", "").want(t, http.StatusAccepted)
	began = time.Now()
	r = e.do("GET", BasePath+"/instances/lp2?waitForCompletion=0.5&showInput=false", "").want(t, http.StatusAccepted)
	if time.Since(began) < 500*time.Millisecond {
		t.Errorf("waitForCompletion=0.5 answered after %v", time.Since(began))
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil || loc.Query().Get("waitForCompletion") != "0.5" || loc.Query().Get("showInput") != "false" ||
		!strings.HasPrefix(loc.String(), e.instanceURL("lp2")+"?") {
		t.Errorf("Location %q", r.header.Get("Location"))
	}
	for _, q := range []string{"waitForCompletion=-1", "waitForCompletion=1h", "waitForCompletion=x"} {
		e.do("GET", BasePath+"/instances/lp2?"+q, "").want(t, http.StatusBadRequest).errorMessage(t)
	}
	e.do("GET", BasePath+"/instances/nope?waitForCompletion=5", "").want(t, http.StatusNotFound).errorMessage(t)
	// Terminated while it waits: 200 with the final status.
	e.do("POST", BasePath+"/orchestrators/approve/lp3", "").want(t, http.StatusAccepted)
	go func() { done <- e.do("GET", BasePath+"/instances/lp3?waitForCompletion=20", "") }()
	time.Sleep(200 * time.Millisecond)
	e.do("POST", BasePath+"/instances/lp3/terminate", "").want(t, http.StatusAccepted)
	if r := <-done; r.code != http.StatusOK {
		t.Errorf("terminated during a long poll: %d %s", r.code, r.body)
	}
}

// A node that begins to stop ends the waits at once.
func TestWaitsEndWhenStopping(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	e := newEnv(t, func(c *Config) { c.Stopping = stop })
	e.do("POST", BasePath+"/orchestrators/hello/s1", "").want(t, http.StatusAccepted)
	status := make(chan *response, 1)
	start := make(chan *response, 1)
	began := time.Now()
	go func() { status <- e.do("GET", BasePath+"/instances/s1?waitForCompletion=60", "") }()
	go func() { start <- e.do("POST", BasePath+"/orchestrators/hello/s2?timeout=60", "") }()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	(<-status).want(t, http.StatusAccepted)
	(<-start).want(t, http.StatusAccepted)
	if waited := time.Since(began); waited > 10*time.Second {
		t.Errorf("the waits ended %v after they began, not when the node stopped", waited)
	}
	// Later waits answer at once.
	began = time.Now()
	e.do("GET", BasePath+"/instances/s1?waitForCompletion=60", "").want(t, http.StatusAccepted)
	if time.Since(began) > 5*time.Second {
		t.Errorf("a wait on a stopping node took %v", time.Since(began))
	}
}

// The Soloist fields of the status body: version, tags,
// scheduledStartTime, parentInstanceId, unrunnable, node, fencingToken.
func TestStatusSoloistFields(t *testing.T) {
	t.Parallel()
	e := newNodeEnv(t)
	r := e.do("POST", BasePath+"/orchestrators/versioned/v2?timeout=20&tag=a:b", "").want(t, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `"v2"` {
		t.Errorf("the default version ran: %s", r.body)
	}
	r = e.do("POST", BasePath+"/orchestrators/versioned/v1?timeout=20&version=v1", "").want(t, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `"v1"` {
		t.Errorf("version=v1 ran: %s", r.body)
	}
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/v2", "").want(t, http.StatusOK).decode(t, &st)
	if st.Version != "v2" || st.Tags["a"] != "b" {
		t.Errorf("status %+v", st)
	}

	e.do("POST", BasePath+"/orchestrators/parent/p", "").want(t, http.StatusAccepted)
	e.waitRunning("p-child")
	st = InstanceStatus{}
	e.do("GET", BasePath+"/instances/p-child", "").want(t, http.StatusAccepted).decode(t, &st)
	if st.ParentInstanceID != "p" || st.Name != "approve" {
		t.Errorf("child status %+v", st)
	}
	e.do("POST", BasePath+"/instances/p-child/raiseEvent/go", `"child done"`).want(t, http.StatusAccepted)
	st = InstanceStatus{}
	e.do("GET", BasePath+"/instances/p?waitForCompletion=20", "").want(t, http.StatusOK).decode(t, &st)
	if st.RuntimeStatus != "Completed" || string(st.Output) != `"child done"` || st.ParentInstanceID != "" {
		t.Errorf("parent status %+v", st)
	}

	// An instance of a function no live node runs says so.
	if _, err := e.client.Start(e.ctx(), "ghost", orchestrator.StartOptions{InstanceID: "g"}); err != nil {
		t.Fatal(err)
	}
	st = InstanceStatus{}
	e.do("GET", BasePath+"/instances/g", "").want(t, http.StatusAccepted).decode(t, &st)
	if !strings.Contains(st.Unrunnable, "ghost") || st.Node != "" {
		t.Errorf("unrunnable %q node %q", st.Unrunnable, st.Node)
	}
}

// Rewind (202, 404, 409 active, 410 completed or terminated), terminate and
// purge with recursive=true, restart with timeout.
func TestRewindRecursiveAndRestartWait(t *testing.T) {
	t.Parallel()
	e := newNodeEnv(t)
	e.do("POST", BasePath+"/orchestrators/flaky/fl", "").want(t, http.StatusAccepted)
	if st := e.waitDone("fl"); st.RuntimeStatus != orchestrator.StatusFailed {
		t.Fatalf("flaky: %s", st.RuntimeStatus)
	}
	e.do("POST", BasePath+"/instances/fl/rewind?reason=fixed", "").want(t, http.StatusAccepted)
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/fl?waitForCompletion=20", "").want(t, http.StatusOK).decode(t, &st)
	if st.RuntimeStatus != "Completed" || string(st.Output) != `"ok"` {
		t.Errorf("after rewind: %+v", st)
	}
	e.do("POST", BasePath+"/instances/fl/rewind", "").want(t, http.StatusGone).errorMessage(t)
	e.do("POST", BasePath+"/instances/nope/rewind", "").want(t, http.StatusNotFound).errorMessage(t)
	e.do("POST", BasePath+"/orchestrators/approve/act", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/act/rewind", "").want(t, http.StatusConflict).errorMessage(t)

	// recursive: the parent and its child.
	e.do("POST", BasePath+"/orchestrators/parent/tree", "").want(t, http.StatusAccepted)
	e.waitRunning("tree-child")
	e.do("POST", BasePath+"/instances/tree/terminate?recursive=true&reason=all", "").want(t, http.StatusAccepted)
	if st := e.waitDone("tree-child"); st.RuntimeStatus != orchestrator.StatusTerminated {
		t.Errorf("child after a recursive terminate: %s", st.RuntimeStatus)
	}
	e.do("POST", BasePath+"/instances/tree/terminate?recursive=maybe", "").want(t, http.StatusBadRequest).errorMessage(t)
	var out map[string]int
	e.do("DELETE", BasePath+"/instances/tree?recursive=true", "").want(t, http.StatusOK).decode(t, &out)
	if out["instancesDeleted"] != 2 {
		t.Errorf("recursive purge: %v", out)
	}
	e.do("GET", BasePath+"/instances/tree-child", "").want(t, http.StatusNotFound)

	// Restart and wait: the output of the new execution.
	e.do("POST", BasePath+"/orchestrators/echo/re", `"again"`).want(t, http.StatusAccepted)
	e.waitDone("re")
	r := e.do("POST", BasePath+"/instances/re/restart?restartWithNewInstanceId=false&timeout=20&pollingInterval=1", "").want(t, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `"again"` {
		t.Errorf("restart and wait: %s", r.body)
	}
	r = e.do("POST", BasePath+"/instances/act/restart?timeout=0.2&returnInternalServerErrorOnFailure=true", "").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if cs.ID == "act" || !strings.HasSuffix(cs.StatusQueryGetURI, "?returnInternalServerErrorOnFailure=true") {
		t.Errorf("restart with a new ID and a wait that ran out: %+v", cs)
	}
	e.do("POST", BasePath+"/instances/act/restart?timeout=forever", "").want(t, http.StatusBadRequest).errorMessage(t)
}

// The list filters of the reference: createdTimeFrom and createdTimeTo
// (honoured, bounds included), runtimeStatus with Canceled, and the 400s.
func TestListTimeAndStatusFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		e.do("POST", "/api/orchestrators/hello/"+id, "").want(t, http.StatusAccepted)
		time.Sleep(5 * time.Millisecond)
	}
	created := func(id string) time.Time { return e.status(id).CreatedTime }
	ids := func(q string) string {
		t.Helper()
		var items []InstanceStatus
		e.do("GET", BasePath+"/instances?"+q, "").want(t, http.StatusOK).decode(t, &items)
		var s []string
		for _, it := range items {
			s = append(s, it.InstanceID)
		}
		return strings.Join(s, ",")
	}
	f := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }
	for q, want := range map[string]string{
		"createdTimeFrom=" + f(created("a2")):                                        "a2,a3",
		"createdTimeTo=" + f(created("a2")):                                          "a1,a2",
		"createdTimeFrom=" + f(created("a2")) + "&createdTimeTo=" + f(created("a2")): "a2",
		"createdTimeFrom=" + f(created("a3").Add(time.Second)):                       "",
		"createdTimeFrom=2020-01-01":                                                 "a1,a2,a3",
		"runtimeStatus=Canceled":                                                     "",
		"runtimeStatus=Canceled,Pending":                                             "a1,a2,a3",
	} {
		if got := ids(q); got != want {
			t.Errorf("list?%s = %q, want %q", q, got, want)
		}
	}
	for _, q := range []string{"createdTimeFrom=yesterday", "createdTimeTo=2026-13-01",
		"createdTimeFrom=" + f(created("a3")) + "&createdTimeTo=" + f(created("a1"))} {
		e.do("GET", BasePath+"/instances?"+q, "").want(t, http.StatusBadRequest).errorMessage(t)
	}
	// Purge many: Canceled matches nothing, an empty range is refused.
	e.do("DELETE", BasePath+"/instances?createdTimeFrom=2020-01-01&runtimeStatus=Canceled", "").want(t, http.StatusNotFound)
	e.do("DELETE", BasePath+"/instances?createdTimeFrom=2026-01-02&createdTimeTo=2026-01-01", "").want(t, http.StatusBadRequest).errorMessage(t)
}

// The entity routes are not served.
func TestEntitiesAreNotSupported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct{ method, path string }{
		{"GET", BasePath + "/entities"},
		{"GET", BasePath + "/entities/Counter"},
		{"GET", BasePath + "/entities/Counter/steps"},
		{"POST", BasePath + "/entities/Counter/steps?op=Add"},
		{"DELETE", BasePath + "/entities/Counter/steps"},
	} {
		r := e.do(c.method, c.path, "5").want(t, http.StatusNotFound)
		if msg := r.errorMessage(t); !strings.Contains(msg, "entities") {
			t.Errorf("%s %s: message %q", c.method, c.path, msg)
		}
	}
}

// The rest of the table: 413 on the built-in route, the list filters the
// reference lists on the status route, idempotent suspend and resume, any
// Content-Type on raiseEvent, and the legacy 1.x paths.
func TestParityOddsAndEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	big := `"` + strings.Repeat("x", orchestrator.DefaultMaxPayload) + `"`
	e.do("POST", BasePath+"/orchestrators/hello/big", big).want(t, http.StatusRequestEntityTooLarge).errorMessage(t)

	e.do("POST", BasePath+"/orchestrators/hello/o1", "").want(t, http.StatusAccepted)
	for _, q := range []string{"createdTimeFrom=2026-01-01", "createdTimeTo=2026-01-01", "runtimeStatus=Pending", "top=1", "instanceIdPrefix=o"} {
		r := e.do("GET", BasePath+"/instances/o1?"+q, "").want(t, http.StatusBadRequest)
		if msg := r.errorMessage(t); !strings.Contains(msg, BasePath+"/instances?") {
			t.Errorf("%s on a status: message %q does not name the list route", q, msg)
		}
	}
	// Resuming a running (here Pending) instance and suspending a suspended
	// one are 202s that change nothing.
	e.do("POST", BasePath+"/instances/o1/resume?reason=no-op", "").want(t, http.StatusAccepted)
	if st := e.status("o1"); st.RuntimeStatus != orchestrator.StatusPending {
		t.Errorf("resume of a Pending instance: %s", st.RuntimeStatus)
	}
	e.do("POST", BasePath+"/instances/o1/suspend", "").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/o1/suspend", "").want(t, http.StatusAccepted)
	if st := e.status("o1"); st.RuntimeStatus != orchestrator.StatusSuspended {
		t.Errorf("after two suspends: %s", st.RuntimeStatus)
	}
	// Any Content-Type, as long as the body is JSON.
	e.do("POST", BasePath+"/instances/o1/raiseEvent/go", `{"a":1}`, "Content-Type", "text/plain").want(t, http.StatusAccepted)
	e.do("POST", BasePath+"/instances/o1/raiseEvent/go", `{"a":1}`, "Content-Type", "application/json").want(t, http.StatusAccepted)

	for _, p := range []string{"/admin/extensions/DurableTaskExtension/instances/o1", "/admin/extensions/DurableTaskExtension/orchestrators/hello"} {
		e.do("GET", p, "").want(t, http.StatusNotFound).errorMessage(t)
	}
}

// A wait longer than the server's WriteTimeout still gets its answer: the
// handler extends its connection's write deadline.
func TestWaitOutlastsWriteTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()
	e.do("POST", BasePath+"/orchestrators/hello/wt", "").want(t, http.StatusAccepted)
	resp, err := srv.Client().Get(srv.URL + BasePath + "/instances/wt?waitForCompletion=0.8")
	if err != nil {
		t.Fatalf("a long poll past the WriteTimeout got no answer: %v", err)
	}
	defer resp.Body.Close()
	var st InstanceStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusAccepted || st.InstanceID != "wt" {
		t.Errorf("long poll: %d %+v %v", resp.StatusCode, st, err)
	}
}
