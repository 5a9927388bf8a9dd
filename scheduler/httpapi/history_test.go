package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

func TestHistoryBody(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600)) // 11:00 UTC
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	fire := at(60)
	ev := func(seq int, typ orchestrator.EventType, s int, f func(*orchestrator.HistoryEvent)) orchestrator.HistoryEvent {
		e := orchestrator.HistoryEvent{Seq: seq, EventType: typ, Timestamp: at(s)}
		if f != nil {
			f(&e)
		}
		return e
	}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	sequence := []orchestrator.HistoryEvent{
		ev(0, orchestrator.EventExecutionStarted, 0, func(e *orchestrator.HistoryEvent) { e.Name, e.Input = "seq", raw(`"Tokyo"`) }),
		ev(1, orchestrator.EventTaskScheduled, 1, func(e *orchestrator.HistoryEvent) { e.Name, e.Input = "say", raw(`"Tokyo"`) }),
		ev(2, orchestrator.EventTaskCompleted, 2, func(e *orchestrator.HistoryEvent) { e.Name, e.Result = "say", raw(`"Hello Tokyo"`) }),
		ev(3, orchestrator.EventTaskScheduled, 3, func(e *orchestrator.HistoryEvent) { e.TaskID, e.Name, e.Input = 1, "fail", raw(`7`) }),
		ev(4, orchestrator.EventTaskFailed, 4, func(e *orchestrator.HistoryEvent) { e.TaskID, e.Name, e.Failure = 1, "fail", "boom" }),
		ev(5, orchestrator.EventTimerCreated, 5, func(e *orchestrator.HistoryEvent) { e.TaskID, e.FireAt = 2, &fire }),
		ev(6, orchestrator.EventTimerFired, 60, func(e *orchestrator.HistoryEvent) { e.TaskID = 2 }),
		ev(7, orchestrator.EventEventRaised, 61, func(e *orchestrator.HistoryEvent) { e.Name, e.Input = "go", raw(`{"ok":true}`) }),
		ev(8, orchestrator.EventExecutionSuspended, 62, func(e *orchestrator.HistoryEvent) { e.Reason = "maintenance" }),
		ev(9, orchestrator.EventExecutionResumed, 63, nil),
		ev(10, orchestrator.EventExecutionCompleted, 64, func(e *orchestrator.HistoryEvent) {
			e.Status, e.Result = orchestrator.StatusCompleted, raw(`["Hello Tokyo"]`)
		}),
	}
	for _, c := range []struct {
		name               string
		events             []orchestrator.HistoryEvent
		showInput, showOut bool
		want               string
	}{
		{"nil history", nil, true, true, `[]`},
		{"every type, with payloads", sequence, true, true, `[
			{"EventType":"ExecutionStarted","Timestamp":"2026-03-01T11:00:00Z","FunctionName":"seq","Input":"Tokyo"},
			{"EventType":"TaskCompleted","Timestamp":"2026-03-01T11:00:02Z","FunctionName":"say","ScheduledTime":"2026-03-01T11:00:01Z","Result":"Hello Tokyo"},
			{"EventType":"TaskFailed","Timestamp":"2026-03-01T11:00:04Z","FunctionName":"fail","ScheduledTime":"2026-03-01T11:00:03Z","Reason":"boom","FailureDetails":{"ErrorMessage":"boom"}},
			{"EventType":"TimerCreated","Timestamp":"2026-03-01T11:00:05Z","FireAt":"2026-03-01T11:01:00Z"},
			{"EventType":"TimerFired","Timestamp":"2026-03-01T11:01:00Z","FireAt":"2026-03-01T11:01:00Z"},
			{"EventType":"EventRaised","Timestamp":"2026-03-01T11:01:01Z","Name":"go","Input":{"ok":true}},
			{"EventType":"ExecutionSuspended","Timestamp":"2026-03-01T11:01:02Z","Reason":"maintenance"},
			{"EventType":"ExecutionResumed","Timestamp":"2026-03-01T11:01:03Z"},
			{"EventType":"ExecutionCompleted","Timestamp":"2026-03-01T11:01:04Z","OrchestrationStatus":"Completed","Result":["Hello Tokyo"]}]`},
		{"without showHistoryOutput or showInput: no payloads", sequence, false, false, `[
			{"EventType":"ExecutionStarted","Timestamp":"2026-03-01T11:00:00Z","FunctionName":"seq"},
			{"EventType":"TaskCompleted","Timestamp":"2026-03-01T11:00:02Z","FunctionName":"say","ScheduledTime":"2026-03-01T11:00:01Z"},
			{"EventType":"TaskFailed","Timestamp":"2026-03-01T11:00:04Z","FunctionName":"fail","ScheduledTime":"2026-03-01T11:00:03Z","Reason":"boom","FailureDetails":{"ErrorMessage":"boom"}},
			{"EventType":"TimerCreated","Timestamp":"2026-03-01T11:00:05Z","FireAt":"2026-03-01T11:01:00Z"},
			{"EventType":"TimerFired","Timestamp":"2026-03-01T11:01:00Z","FireAt":"2026-03-01T11:01:00Z"},
			{"EventType":"EventRaised","Timestamp":"2026-03-01T11:01:01Z","Name":"go"},
			{"EventType":"ExecutionSuspended","Timestamp":"2026-03-01T11:01:02Z","Reason":"maintenance"},
			{"EventType":"ExecutionResumed","Timestamp":"2026-03-01T11:01:03Z"},
			{"EventType":"ExecutionCompleted","Timestamp":"2026-03-01T11:01:04Z","OrchestrationStatus":"Completed"}]`},
		{"showInput alone shows only the orchestration input", sequence[:3], true, false, `[
			{"EventType":"ExecutionStarted","Timestamp":"2026-03-01T11:00:00Z","FunctionName":"seq","Input":"Tokyo"},
			{"EventType":"TaskCompleted","Timestamp":"2026-03-01T11:00:02Z","FunctionName":"say","ScheduledTime":"2026-03-01T11:00:01Z"}]`},
		{"an activity in flight keeps its TaskScheduled; null payloads stay null", []orchestrator.HistoryEvent{
			ev(0, orchestrator.EventExecutionStarted, 0, func(e *orchestrator.HistoryEvent) { e.Name = "seq" }),
			ev(1, orchestrator.EventTaskScheduled, 1, func(e *orchestrator.HistoryEvent) { e.Name, e.Input = "say", raw(`null`) }),
		}, true, true, `[
			{"EventType":"ExecutionStarted","Timestamp":"2026-03-01T11:00:00Z","FunctionName":"seq","Input":null},
			{"EventType":"TaskScheduled","Timestamp":"2026-03-01T11:00:01Z","FunctionName":"say","Name":"say","Input":null}]`},
		{"a failed execution has FailureDetails and no Result", []orchestrator.HistoryEvent{
			ev(0, orchestrator.EventExecutionCompleted, 9, func(e *orchestrator.HistoryEvent) {
				e.Status, e.Failure = orchestrator.StatusFailed, "activity fail failed: boom"
			}),
		}, true, true, `[
			{"EventType":"ExecutionCompleted","Timestamp":"2026-03-01T11:00:09Z","OrchestrationStatus":"Failed","FailureDetails":{"ErrorMessage":"activity fail failed: boom"}}]`},
		{"ContinuedAsNew and types this version does not know", []orchestrator.HistoryEvent{
			ev(0, orchestrator.EventContinuedAsNew, 1, func(e *orchestrator.HistoryEvent) { e.Input = raw(`{"n":2}`) }),
			ev(1, "SomethingNew", 2, func(e *orchestrator.HistoryEvent) { e.Name, e.Reason, e.Input = "x", "why", raw(`1`) }),
		}, true, true, `[
			{"EventType":"ContinuedAsNew","Timestamp":"2026-03-01T11:00:01Z","Input":{"n":2}},
			{"EventType":"SomethingNew","Timestamp":"2026-03-01T11:00:02Z","Name":"x","Reason":"why"}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(historyBody(c.events, c.showInput, c.showOut))
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, []byte(c.want)); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if string(got) != want.String() {
				t.Errorf("historyBody =\n%s\nwant\n%s", got, want.String())
			}
		})
	}
}

// TestHistoryEndToEnd runs an orchestration on a scheduler node in this
// process, raises its event through the API and reads its history.
func TestHistoryEndToEnd(t *testing.T) {
	t.Parallel()
	reg := orchestrator.NewRegistry()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.AddActivity("say", orchestrator.Activity(func(ctx context.Context, name string) (string, error) {
		return "Hello " + name, nil
	})))
	must(reg.AddOrchestrator("seq", func(ctx *orchestrator.OrchestrationContext) (any, error) {
		var city string
		if err := ctx.GetInput(&city); err != nil {
			return nil, err
		}
		var a, b string
		if err := ctx.CallActivity("say", city).Await(&a); err != nil {
			return nil, err
		}
		if err := ctx.CallActivity("say", "Seattle").Await(&b); err != nil {
			return nil, err
		}
		var signal struct {
			OK bool `json:"ok"`
		}
		if err := ctx.WaitForExternalEvent("go", 0).Await(&signal); err != nil {
			return nil, err
		}
		return []any{a, b, signal.OK}, nil
	}))
	e := newEnv(t, func(c *Config) {
		c.Function = RegistryFunction(reg)
	})
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

	e.do("POST", "/api/orchestrators/seq/h1", `"Tokyo"`).want(t, http.StatusAccepted)
	types := func(evs []HistoryEvent) string {
		var s []string
		for _, ev := range evs {
			s = append(s, ev.EventType)
		}
		return strings.Join(s, ",")
	}
	// Wait until both activities are done and the orchestration waits for
	// "go", so the event lands after them in the history.
	var st InstanceStatus
	deadline := time.Now().Add(15 * time.Second)
	for {
		st = InstanceStatus{}
		e.do("GET", BasePath+"/instances/h1?showHistory=true", "").want(t, http.StatusAccepted).decode(t, &st)
		if types(st.HistoryEvents) == "ExecutionStarted,TaskCompleted,TaskCompleted" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history never reached two completed activities: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.RuntimeStatus != "Running" || st.Node != "n1" || st.FencingToken <= 0 {
		t.Errorf("held instance: status %s node %q fencingToken %d", st.RuntimeStatus, st.Node, st.FencingToken)
	}
	held := st.FencingToken
	// List items carry the holder too.
	var items []InstanceStatus
	e.do("GET", BasePath+"/instances?instanceIdPrefix=h1", "").want(t, http.StatusOK).decode(t, &items)
	if len(items) != 1 || items[0].Node != "n1" || items[0].FencingToken != st.FencingToken || items[0].HistoryEvents != nil {
		t.Errorf("list items %+v, want h1 held by n1 with fencingToken %d and no history", items, st.FencingToken)
	}

	e.do("POST", BasePath+"/instances/h1/raiseEvent/go", `{"ok":true}`).want(t, http.StatusAccepted)
	for {
		r := e.do("GET", BasePath+"/instances/h1", "")
		if r.code == http.StatusOK {
			break
		}
		r.want(t, http.StatusAccepted)
		if time.Now().After(deadline) {
			t.Fatalf("h1 never finished: %s", r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	r := e.do("GET", BasePath+"/instances/h1?showHistory=true&showHistoryOutput=true", "").want(t, http.StatusOK)
	t.Logf("status body: %s", r.body)
	st = InstanceStatus{}
	r.decode(t, &st)
	// Durable Functions' compressed form: no TaskScheduled for finished activities.
	if got, want := types(st.HistoryEvents), "ExecutionStarted,TaskCompleted,TaskCompleted,EventRaised,ExecutionCompleted"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	// Released: no holder, and the token of the holding that wrote the result.
	if st.RuntimeStatus != "Completed" || string(st.Output) != `["Hello Tokyo","Hello Seattle",true]` || st.Node != "" || st.FencingToken != held {
		t.Errorf("final status %s output %s node %q fencingToken %d, want Completed, no node, token %d",
			st.RuntimeStatus, st.Output, st.Node, st.FencingToken, held)
	}
	h := st.HistoryEvents
	check := func(i int, field, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("history[%d] (%s) %s = %s, want %s", i, h[i].EventType, field, got, want)
		}
	}
	check(0, "FunctionName", h[0].FunctionName, "seq")
	check(0, "Input", string(h[0].Input), `"Tokyo"`)
	for i, res := range map[int]string{1: `"Hello Tokyo"`, 2: `"Hello Seattle"`} {
		check(i, "FunctionName", h[i].FunctionName, "say")
		check(i, "Result", string(h[i].Result), res)
		if h[i].ScheduledTime == nil || h[i].ScheduledTime.After(h[i].Timestamp) {
			t.Errorf("history[%d] ScheduledTime %v, want one at or before %v", i, h[i].ScheduledTime, h[i].Timestamp)
		}
	}
	check(3, "Name", h[3].Name, "go")
	check(3, "Input", string(h[3].Input), `{"ok":true}`)
	check(4, "OrchestrationStatus", h[4].OrchestrationStatus, "Completed")
	check(4, "Result", string(h[4].Result), string(st.Output))
	for i := range h {
		if i > 0 && h[i].Timestamp.Before(h[i-1].Timestamp) {
			t.Errorf("history[%d] at %v is before history[%d] at %v", i, h[i].Timestamp, i-1, h[i-1].Timestamp)
		}
		if h[i].Timestamp.Location() != time.UTC || h[i].Timestamp.IsZero() {
			t.Errorf("history[%d] Timestamp %v is not a UTC time", i, h[i].Timestamp)
		}
	}
	// The raw JSON: RFC 3339 UTC times, PascalCase names.
	var rawBody struct {
		HistoryEvents []map[string]any `json:"historyEvents"`
	}
	if err := json.Unmarshal(r.body, &rawBody); err != nil {
		t.Fatal(err)
	}
	for i, m := range rawBody.HistoryEvents {
		for _, f := range []string{"Timestamp", "ScheduledTime"} {
			if s, ok := m[f].(string); ok {
				if _, err := time.Parse(time.RFC3339Nano, s); err != nil || !strings.HasSuffix(s, "Z") {
					t.Errorf("history[%d] %s %q is not RFC 3339 UTC", i, f, s)
				}
			}
		}
	}

	// Without showHistoryOutput the payloads of history events are left out,
	// and without showInput the orchestration input too.
	st = InstanceStatus{}
	e.do("GET", BasePath+"/instances/h1?showHistory=true&showInput=false", "").want(t, http.StatusOK).decode(t, &st)
	for i, ev := range st.HistoryEvents {
		if ev.Input != nil || ev.Result != nil {
			t.Errorf("history[%d] (%s) has a payload without showHistoryOutput: %s %s", i, ev.EventType, ev.Input, ev.Result)
		}
	}
	if len(st.HistoryEvents) != 5 || st.HistoryEvents[1].FunctionName != "say" {
		t.Errorf("history without output: %+v", st.HistoryEvents)
	}
	e.do("GET", BasePath+"/instances/h1?showHistoryOutput=yes", "").want(t, http.StatusBadRequest).errorMessage(t)

	// Terminal: no more events; purge deletes the history.
	e.do("POST", BasePath+"/instances/h1/raiseEvent/go", `{}`).want(t, http.StatusGone).errorMessage(t)
	e.do("DELETE", BasePath+"/instances/h1", "").want(t, http.StatusOK)
	e.do("GET", BasePath+"/instances/h1?showHistory=true", "").want(t, http.StatusNotFound).errorMessage(t)
	if evs, err := e.client.History(e.ctx(), "h1", st.ExecutionID); err != nil || len(evs) != 0 {
		t.Errorf("history after purge: %v %v", evs, err)
	}
}
