package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestStatusActiveThenTerminal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/s1", `{"n":1}`).want(t, http.StatusAccepted)
	stored := e.status("s1")

	r := e.do("GET", BasePath+"/instances/s1", "").want(t, http.StatusAccepted)
	if loc := r.header.Get("Location"); loc != e.instanceURL("s1") {
		t.Errorf("Location %q", loc)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("202 without Retry-After")
	}
	// The raw body has every field, node even when empty, and no history.
	var raw map[string]any
	r.decode(t, &raw)
	for _, f := range []string{"name", "instanceId", "runtimeStatus", "input", "customStatus", "output",
		"createdTime", "lastUpdatedTime", "executionId", "node", "fencingToken"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("status body has no %q: %s", f, r.body)
		}
	}
	if _, ok := raw["historyEvents"]; ok {
		t.Errorf("historyEvents without showHistory=true: %s", r.body)
	}
	var st InstanceStatus
	r.decode(t, &st)
	if st.Name != "hello" || st.InstanceID != "s1" || st.RuntimeStatus != "Pending" || string(st.Input) != `{"n":1}` ||
		st.ExecutionID != stored.ExecutionID || st.Node != "" || st.FencingToken != 0 || string(st.Output) != "null" {
		t.Errorf("status body %+v", st)
	}
	for _, f := range []string{"createdTime", "lastUpdatedTime"} {
		s, _ := raw[f].(string)
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !strings.HasSuffix(s, "Z") || !tm.Equal(stored.CreatedTime) && f == "createdTime" {
			t.Errorf("%s %q is not the RFC 3339 UTC creation time %v (%v)", f, s, stored.CreatedTime, err)
		}
	}

	// showInput=false hides the input; showHistory=true adds an empty history.
	r = e.do("GET", BasePath+"/instances/s1?showInput=false&showHistory=true", "").want(t, http.StatusAccepted)
	raw = nil
	r.decode(t, &raw)
	if raw["input"] != nil {
		t.Errorf("input with showInput=false: %s", r.body)
	}
	if h, ok := raw["historyEvents"].([]any); !ok || len(h) != 0 {
		t.Errorf("historyEvents with showHistory=true: %s", r.body)
	}
	r = e.do("GET", BasePath+"/instances/s1?showInput=maybe", "").want(t, http.StatusBadRequest)
	if msg := r.errorMessage(t); !strings.Contains(msg, "showInput") {
		t.Errorf("message %q", msg)
	}

	e.do("POST", BasePath+"/instances/s1/terminate?reason=enough", "").want(t, http.StatusAccepted)
	r = e.do("GET", BasePath+"/instances/s1", "").want(t, http.StatusOK)
	st = InstanceStatus{}
	r.decode(t, &st)
	if st.RuntimeStatus != "Terminated" || string(st.Output) != `"enough"` {
		t.Errorf("after terminate: %+v", st)
	}
	if r.header.Get("Location") != "" {
		t.Errorf("a terminal status has Location %q", r.header.Get("Location"))
	}

	r = e.do("GET", BasePath+"/instances/missing", "").want(t, http.StatusNotFound)
	if msg := r.errorMessage(t); !strings.Contains(msg, "missing") {
		t.Errorf("404 message %q does not name the ID", msg)
	}
}

func TestStatusShowsHolder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/held", "").want(t, http.StatusAccepted)
	st := e.status("held")
	owner := `{"node":"node-a","leaseId":"1","executionId":"` + st.ExecutionID + `","acquiredTime":"2020-01-01T00:00:00Z"}`
	resp, err := e.etcd.Put(e.ctx(), e.client.Keys().Owner("held"), owner)
	if err != nil {
		t.Fatal(err)
	}
	var body InstanceStatus
	e.do("GET", BasePath+"/instances/held", "").want(t, http.StatusAccepted).decode(t, &body)
	if body.Node != "node-a" || body.FencingToken != resp.Header.Revision {
		t.Errorf("node %q fencingToken %d, want node-a and %d", body.Node, body.FencingToken, resp.Header.Revision)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, id := range []string{"batch-1", "batch-2", "batch-3", "batch-4", "batch-5", "other-1"} {
		e.do("POST", "/api/orchestrators/hello/"+id, `"`+id+`"`).want(t, http.StatusAccepted)
	}
	for _, id := range []string{"batch-2", "batch-4"} {
		e.do("POST", BasePath+"/instances/"+id+"/terminate", "").want(t, http.StatusAccepted)
	}

	ids := func(items []InstanceStatus) string {
		var s []string
		for _, it := range items {
			s = append(s, it.InstanceID)
		}
		return strings.Join(s, ",")
	}
	// Pending ones, two a page, following the continuation header.
	var got []string
	token := ""
	for page := 0; ; page++ {
		if page > 3 {
			t.Fatal("continuation never ended")
		}
		hdr := []string{}
		if token != "" {
			hdr = []string{ContinuationHeader, token}
		}
		r := e.do("GET", BasePath+"/instances?runtimeStatus=Pending&instanceIdPrefix=batch-&top=2", "", hdr...).want(t, http.StatusOK)
		var items []InstanceStatus
		r.decode(t, &items)
		if len(items) > 2 {
			t.Fatalf("page of %d items with top=2", len(items))
		}
		for _, it := range items {
			if it.RuntimeStatus != "Pending" {
				t.Errorf("%s is %s in a Pending list", it.InstanceID, it.RuntimeStatus)
			}
		}
		got = append(got, ids(items))
		token = r.header.Get(ContinuationHeader)
		if token == "" {
			break
		}
	}
	if g := strings.Join(got, "|"); g != "batch-1,batch-3|batch-5" {
		t.Errorf("pages %q, want batch-1,batch-3|batch-5", g)
	}

	cases := map[string]string{
		"?runtimeStatus=Terminated,Completed":            "batch-2,batch-4",
		"?runtimeStatus=terminated&runtimeStatus=Failed": "batch-2,batch-4",
		"?instanceIdPrefix=other-":                       "other-1",
		"":                                               "batch-1,batch-2,batch-3,batch-4,batch-5,other-1",
		"?runtimeStatus=Running":                         "",
	}
	for q, want := range cases {
		r := e.do("GET", BasePath+"/instances"+q, "").want(t, http.StatusOK)
		var items []InstanceStatus
		r.decode(t, &items)
		if ids(items) != want {
			t.Errorf("list%s = %q, want %q", q, ids(items), want)
		}
		if want == "" && strings.TrimSpace(string(r.body)) != "[]" {
			t.Errorf("an empty list is %s, want []", r.body)
		}
		if r.header.Get(ContinuationHeader) != "" {
			t.Errorf("list%s: continuation token on the only page", q)
		}
	}
	var items []InstanceStatus
	e.do("GET", BasePath+"/instances?instanceIdPrefix=batch-1&showInput=false", "").want(t, http.StatusOK).decode(t, &items)
	if len(items) != 1 || string(items[0].Input) != "null" {
		t.Errorf("showInput=false list: %+v", items)
	}
	e.do("GET", BasePath+"/instances?instanceIdPrefix=batch-1", "").want(t, http.StatusOK).decode(t, &items)
	if len(items) != 1 || string(items[0].Input) != `"batch-1"` {
		t.Errorf("list input: %+v", items)
	}

	for _, bad := range []struct{ query, token, mention string }{
		{"?runtimeStatus=Bogus", "", "runtimeStatus"},
		{"?top=0", "", "top"},
		{"?top=1001", "", "top"},
		{"?top=ten", "", "top"},
		{"", "not-a-token", "continuation"},
	} {
		hdr := []string{}
		if bad.token != "" {
			hdr = []string{ContinuationHeader, bad.token}
		}
		r := e.do("GET", BasePath+"/instances"+bad.query, "", hdr...).want(t, http.StatusBadRequest)
		if msg := r.errorMessage(t); !strings.Contains(msg, bad.mention) {
			t.Errorf("list%s: message %q does not mention %q", bad.query, msg, bad.mention)
		}
	}
}

func TestControl(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/c1", "").want(t, http.StatusAccepted)

	e.do("POST", BasePath+"/instances/c1/suspend?reason=wait", "").want(t, http.StatusAccepted)
	if st := e.status("c1"); st.RuntimeStatus != orchestrator.StatusSuspended {
		t.Fatalf("after suspend: %s", st.RuntimeStatus)
	}
	var st InstanceStatus
	e.do("GET", BasePath+"/instances/c1", "").want(t, http.StatusAccepted).decode(t, &st)
	if st.RuntimeStatus != "Suspended" {
		t.Errorf("GET after suspend: %s", st.RuntimeStatus)
	}
	e.do("POST", BasePath+"/instances/c1/resume", "").want(t, http.StatusAccepted)
	if st := e.status("c1"); st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("after resume: %s", st.RuntimeStatus)
	}

	e.do("POST", BasePath+"/instances/c1/terminate", "").want(t, http.StatusAccepted)
	for _, verb := range []string{"terminate", "suspend", "resume"} {
		r := e.do("POST", BasePath+"/instances/c1/"+verb, "").want(t, http.StatusGone)
		if msg := r.errorMessage(t); !strings.Contains(msg, "Terminated") {
			t.Errorf("%s of a terminal instance: message %q", verb, msg)
		}
	}
	for _, verb := range []string{"terminate", "suspend", "resume", "restart"} {
		e.do("POST", BasePath+"/instances/nope/"+verb, "").want(t, http.StatusNotFound).errorMessage(t)
		e.do("POST", BasePath+"/instances/a%2Fb/"+verb, "").want(t, http.StatusBadRequest).errorMessage(t)
		e.do("POST", BasePath+"/instances/%40x/"+verb, "").want(t, http.StatusBadRequest).errorMessage(t)
	}
	e.do("GET", BasePath+"/instances/a%2Fb", "").want(t, http.StatusBadRequest).errorMessage(t)
	e.do("DELETE", BasePath+"/instances/a%3Fb", "").want(t, http.StatusBadRequest).errorMessage(t)
}

func TestPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/p", "").want(t, http.StatusAccepted)
	r := e.do("DELETE", BasePath+"/instances/p", "").want(t, http.StatusConflict)
	if msg := r.errorMessage(t); !strings.Contains(msg, "terminate") {
		t.Errorf("409 message %q does not say to terminate first", msg)
	}
	e.do("POST", BasePath+"/instances/p/terminate", "").want(t, http.StatusAccepted)
	r = e.do("DELETE", BasePath+"/instances/p", "").want(t, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"instancesDeleted":1}` {
		t.Errorf("purge body %s", got)
	}
	resp, err := e.etcd.Get(e.ctx(), e.client.Keys().Instance("p"), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("record still in etcd after purge: %v %v", resp, err)
	}
	e.do("GET", BasePath+"/instances/p", "").want(t, http.StatusNotFound)
	e.do("DELETE", BasePath+"/instances/p", "").want(t, http.StatusNotFound).errorMessage(t)
}

func TestRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/r1", `{"keep":true}`).want(t, http.StatusAccepted)
	first := e.status("r1")

	// The default, as in Durable Functions: a new instance with a new ID.
	r := e.do("POST", BasePath+"/instances/r1/restart", "").want(t, http.StatusAccepted)
	var cs CheckStatus
	r.decode(t, &cs)
	if cs.ID == "r1" || r.header.Get("Location") != e.instanceURL(cs.ID) {
		t.Errorf("restart body %+v, Location %q: want a new instance", cs, r.header.Get("Location"))
	}
	if st := e.status(cs.ID); st.RuntimeStatus != orchestrator.StatusPending || string(st.Input) != `{"keep":true}` || st.Name != "hello" {
		t.Errorf("the new instance: %+v", st)
	}
	if st := e.status("r1"); st.ExecutionID != first.ExecutionID {
		t.Error("a restart with a new ID changed the original instance")
	}

	// The same ID: refused while the instance is active, unless asked to
	// terminate it.
	r = e.do("POST", BasePath+"/instances/r1/restart?restartWithNewInstanceId=false", "").want(t, http.StatusConflict)
	var conflict ConflictResponse
	r.decode(t, &conflict)
	if !strings.Contains(conflict.Error, "terminateExisting") || conflict.RuntimeStatus != "Pending" {
		t.Errorf("409 body %+v does not say how to restart anyway", conflict)
	}
	r = e.do("POST", BasePath+"/instances/r1/restart?restartWithNewInstanceId=false&conflictPolicy=terminateExisting", "").
		want(t, http.StatusAccepted)
	r.decode(t, &cs)
	st := e.status("r1")
	if cs.ID != "r1" || st.ExecutionID == first.ExecutionID || st.RuntimeStatus != orchestrator.StatusPending || string(st.Input) != `{"keep":true}` {
		t.Errorf("after restart: %+v (body %+v)", st, cs)
	}
	e.do("POST", BasePath+"/instances/r1/restart?restartWithNewInstanceId=maybe", "").want(t, http.StatusBadRequest).errorMessage(t)
	e.do("POST", BasePath+"/instances/r1/restart?conflictPolicy=useExisting", "").want(t, http.StatusBadRequest).errorMessage(t)

	e.setReady(errDraining)
	e.do("POST", BasePath+"/instances/r1/restart", "").want(t, http.StatusServiceUnavailable).errorMessage(t)
	if again := e.status("r1"); again.ExecutionID != st.ExecutionID {
		t.Error("a restart refused with 503 changed the instance")
	}
}

func TestRestartOfUnregisteredFunction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.client.Start(e.ctx(), "gone", orchestrator.StartOptions{InstanceID: "g"}); err != nil {
		t.Fatal(err)
	}
	before := e.status("g")
	r := e.do("POST", BasePath+"/instances/g/restart", "").want(t, http.StatusNotFound)
	if msg := r.errorMessage(t); !strings.Contains(msg, "gone") {
		t.Errorf("message %q does not name the function", msg)
	}
	if after := e.status("g"); after.ExecutionID != before.ExecutionID {
		t.Error("the refused restart changed the instance")
	}
}

func TestRaiseEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.do("POST", "/api/orchestrators/hello/ev", "").want(t, http.StatusAccepted)
	inbox := func() int64 {
		t.Helper()
		resp, err := e.etcd.Get(e.ctx(), e.client.Keys().InboxPrefix("ev"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}

	// Refusals store nothing.
	r := e.do("POST", BasePath+"/instances/ev/raiseEvent/Approval", "yes please").want(t, http.StatusBadRequest)
	if msg := r.errorMessage(t); !strings.Contains(msg, "JSON") {
		t.Errorf("message %q", msg)
	}
	e.do("POST", BasePath+"/instances/missing/raiseEvent/Approval", `1`).want(t, http.StatusNotFound).errorMessage(t)
	e.do("POST", BasePath+"/instances/ev/raiseEvent/a%01", `1`).want(t, http.StatusBadRequest).errorMessage(t)
	e.do("POST", BasePath+"/instances/a%2Fb/raiseEvent/Approval", `1`).want(t, http.StatusBadRequest).errorMessage(t)
	e.do("POST", BasePath+"/instances/ev/raiseEvent/Approval", `"`+strings.Repeat("x", orchestrator.DefaultMaxPayload)+`"`).
		want(t, http.StatusRequestEntityTooLarge).errorMessage(t)
	if n := inbox(); n != 0 {
		t.Fatalf("%d inbox keys after refused raises", n)
	}

	// 202 only after the commit: the event is in the inbox when it comes.
	r = e.do("POST", BasePath+"/instances/ev/raiseEvent/Approval", `{"ok":true}`).want(t, http.StatusAccepted)
	if len(r.body) != 0 {
		t.Errorf("202 body %s", r.body)
	}
	if n := inbox(); n != 1 {
		t.Fatalf("%d inbox keys after a raise, want 1", n)
	}
	resp, err := e.etcd.Get(e.ctx(), e.client.Keys().InboxPrefix("ev"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var stored orchestrator.HistoryEvent
	if err := json.Unmarshal(resp.Kvs[0].Value, &stored); err != nil ||
		stored.EventType != orchestrator.EventEventRaised || stored.Name != "Approval" || string(stored.Input) != `{"ok":true}` {
		t.Errorf("stored event %s (%v)", resp.Kvs[0].Value, err)
	}
	e.do("POST", BasePath+"/instances/ev/raiseEvent/Approval", "").want(t, http.StatusAccepted) // empty body: null data

	e.do("POST", BasePath+"/instances/ev/terminate", "").want(t, http.StatusAccepted)
	r = e.do("POST", BasePath+"/instances/ev/raiseEvent/Approval", `{"ok":true}`).want(t, http.StatusGone)
	if msg := r.errorMessage(t); !strings.Contains(msg, "Terminated") {
		t.Errorf("410 message %q does not say the instance is terminated", msg)
	}
	if n := inbox(); n != 0 {
		t.Errorf("%d inbox keys after terminate and a refused raise, want 0", n)
	}
}

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A client of an etcd that does not answer: every request runs out of
	// OperationTimeout.
	down, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = down.Close() })
	var reported atomic.Int32
	h, err := New(Config{
		Client:           orchestrator.NewClient(down, orchestrator.ClientConfig{Prefix: testPrefix}),
		Function:         anyFunction,
		Gatherer:         e.reg,
		Registerer:       e.reg,
		Logger:           e.cfg.Logger,
		OperationTimeout: 1500 * time.Millisecond,
		ReadTimeout:      200 * time.Millisecond,
		EtcdEndpoints:    []string{"http://127.0.0.1:1"},
		StoreUnreachable: func(error) { reported.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e2 := &env{t: t, etcd: e.etcd, reg: e.reg, logs: e.logs, srv: srv}
	// Reads fail fast (ReadTimeout, not OperationTimeout) and name etcd.
	for _, path := range []string{BasePath + "/instances/x", BasePath + "/instances"} {
		began := time.Now()
		r := e2.do("GET", path, "").want(t, http.StatusServiceUnavailable)
		if took := time.Since(began); took > time.Second {
			t.Errorf("GET %s took %s to fail; want about ReadTimeout (200ms)", path, took)
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, "etcd at http://127.0.0.1:1 did not answer in time") {
			t.Errorf("GET %s: 503 message %q does not name the etcd endpoints", path, msg)
		}
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
	r := e2.do("POST", "/api/orchestrators/hello/x", "").want(t, http.StatusServiceUnavailable)
	if msg := r.errorMessage(t); !strings.Contains(msg, "unavailable") || !strings.Contains(msg, "http://127.0.0.1:1") {
		t.Errorf("503 message %q", msg)
	}
	e.wantStartCount("hello", "error", 1)
	if n := reported.Load(); n != 3 {
		t.Errorf("StoreUnreachable called %d times, want 3 (once per failed request)", n)
	}
}

func TestPurgeMany(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	since := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	for _, id := range []string{"pm-1", "pm-2", "pm-3", "other"} {
		e.do("POST", "/api/orchestrators/hello/"+id, "").want(t, http.StatusAccepted)
	}
	for _, id := range []string{"pm-1", "pm-2", "other"} {
		e.do("POST", BasePath+"/instances/"+id+"/terminate", "").want(t, http.StatusAccepted)
	}
	// Refusals delete nothing.
	e.do("DELETE", BasePath+"/instances", "").want(t, http.StatusBadRequest).errorMessage(t)
	e.do("DELETE", BasePath+"/instances?createdTimeFrom=yesterday", "").want(t, http.StatusBadRequest).errorMessage(t)
	e.do("DELETE", BasePath+"/instances?createdTimeFrom="+since+"&runtimeStatus=Running", "").want(t, http.StatusBadRequest).errorMessage(t)
	future := time.Now().UTC().Add(time.Hour).Format(time.RFC3339)
	e.do("DELETE", BasePath+"/instances?createdTimeFrom="+future, "").want(t, http.StatusNotFound).errorMessage(t)

	var out map[string]int
	e.do("DELETE", BasePath+"/instances?createdTimeFrom="+since+"&runtimeStatus=Terminated&instanceIdPrefix=pm-", "").
		want(t, http.StatusOK).decode(t, &out)
	if out["instancesDeleted"] != 2 {
		t.Fatalf("instancesDeleted %v, want 2", out)
	}
	for id, code := range map[string]int{"pm-1": 404, "pm-2": 404, "pm-3": 202, "other": 200} {
		e.do("GET", BasePath+"/instances/"+id, "").want(t, code)
	}
}
