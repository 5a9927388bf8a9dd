package orchestrator

import (
	"encoding/json"
	"testing"
	"time"
)

// helloCitiesStep is the events of HelloCities' one commit after its
// acquire: ExecutionStarted, then three activities scheduled and
// completed, then ExecutionCompleted.
func helloCitiesStep() step {
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	evs := []HistoryEvent{{EventType: EventExecutionStarted, Name: "HelloCities", Input: json.RawMessage(`null`)}}
	for i, city := range []string{"Tokyo", "Seattle", "London"} {
		evs = append(evs,
			HistoryEvent{EventType: EventTaskScheduled, TaskID: i, Name: "SayHello", Input: json.RawMessage(`"` + city + `"`)},
			HistoryEvent{EventType: EventTaskCompleted, TaskID: i, Result: json.RawMessage(`"Hello ` + city + `!"`)})
	}
	evs = append(evs, HistoryEvent{EventType: EventExecutionCompleted, Status: StatusCompleted,
		Result: json.RawMessage(`["Hello Tokyo!","Hello Seattle!","Hello London!"]`)})
	for i := range evs {
		evs[i].Seq, evs[i].Timestamp = i, ts
	}
	return step{events: evs}
}

func planExecution() *Execution {
	c := &Client{keys: NewKeys("/soloist/"), limits: Limits{}.withDefaults(), maxPayload: DefaultMaxPayload}
	return &Execution{c: c, rec: &Record{Name: "HelloCities", InstanceID: "bench", ExecutionID: "x"}}
}

// The history key a step writes is the JSON array of its events, each as
// json.Marshal encodes it (HTML characters and U+2028 escaped, raw
// payloads compacted), and reads back.
func TestPlanHistoryChunk(t *testing.T) {
	s := helloCitiesStep()
	s.events = append(s.events, HistoryEvent{Seq: len(s.events), EventType: EventEventRaised, Name: "<&>\u2028",
		Input: json.RawMessage(`{"a": "<b>\u2029"}`)})
	parts, err := planExecution().plan(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || len(parts[0].ops) != 1 {
		t.Fatalf("got %d parts, want one part of one put", len(parts))
	}
	want := []byte{'['}
	for i, ev := range s.events {
		b, _ := json.Marshal(ev)
		if i > 0 {
			want = append(want, ',')
		}
		want = append(want, b...)
	}
	want = append(want, ']')
	if got := parts[0].ops[0].ValueBytes(); string(got) != string(want) {
		t.Fatalf("history chunk\n got %s\nwant %s", got, want)
	}
	var back []HistoryEvent
	if err := json.Unmarshal(parts[0].ops[0].ValueBytes(), &back); err != nil || len(back) != len(s.events) || back[len(back)-1].Name != "<&>\u2028" {
		t.Fatalf("read back %d events (%v), want %d", len(back), err, len(s.events))
	}
}

// BenchmarkPlan cuts HelloCities' one commit after its acquire into
// transactions (Execution.plan): the events' encoding is most of it.
func BenchmarkPlan(b *testing.B) {
	x, s := planExecution(), helloCitiesStep()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.plan(s); err != nil {
			b.Fatal(err)
		}
	}
}
