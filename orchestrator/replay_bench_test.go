package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// sequenceHistory builds the stored history of an orchestration that called
// `calls` activities in sequence and is waiting on the last one: one
// ExecutionStarted, then TaskScheduled/TaskCompleted pairs, each step a
// stored batch as the executor commits them.
func sequenceHistory(calls int) [][]byte {
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var batches [][]byte
	seq := 0
	add := func(evs ...HistoryEvent) {
		for i := range evs {
			evs[i].Seq = seq
			evs[i].Timestamp = ts
			seq++
		}
		b, _ := json.Marshal(evs)
		batches = append(batches, b)
	}
	add(HistoryEvent{EventType: EventExecutionStarted, Name: "Seq", Input: json.RawMessage(`null`)},
		HistoryEvent{EventType: EventTaskScheduled, TaskID: 0, Name: "Act", Input: json.RawMessage(`0`)})
	for i := 0; i < calls-1; i++ {
		add(HistoryEvent{EventType: EventTaskCompleted, TaskID: i, Name: "Act", Result: json.RawMessage(fmt.Sprint(i))},
			HistoryEvent{EventType: EventTaskScheduled, TaskID: i + 1, Name: "Act", Input: json.RawMessage(fmt.Sprint(i + 1))})
	}
	return batches
}

func sequenceOrchestration(ctx *OrchestrationContext) (any, error) {
	sum := 0
	for i := 0; ; i++ {
		var r int
		if err := ctx.CallActivity("Act", i).Await(&r); err != nil {
			return nil, err
		}
		sum += r
	}
}

// replayStored decodes stored batches and replays them, as a new holder does.
func replayStored(tb testing.TB, batches [][]byte) int {
	c := &Client{maxPayload: DefaultMaxPayload}
	rec := &Record{Name: "Seq", InstanceID: "bench", ExecutionID: "x"}
	exec := &Execution{c: c, rec: rec, input: jsonNull}
	e := &executor{
		Engine: &Engine{ctx: context.Background(), exec: exec, rec: *rec, seen: map[string]bool{}},
		fn:     sequenceOrchestration,
	}
	e.octx = &OrchestrationContext{ctx: e.ctx, exec: exec, e: e}
	defer e.abort()
	e.replaying = true
	n := 0
	for _, b := range batches {
		var evs []HistoryEvent
		if err := json.Unmarshal(b, &evs); err != nil {
			tb.Fatal(err)
		}
		for _, ev := range evs {
			if err := e.apply(ev); err != nil {
				tb.Fatal(err)
			}
			n++
		}
	}
	if len(e.actions) != 0 || !e.blocked {
		tb.Fatalf("replay ended with %d unmatched actions, blocked=%v", len(e.actions), e.blocked)
	}
	return n
}

func TestReplayRebuildsState(t *testing.T) {
	for _, calls := range []int{1, 5, 50} {
		if n := replayStored(t, sequenceHistory(calls)); n != 2*calls {
			t.Fatalf("replayed %d events, want %d", n, 2*calls)
		}
	}
}

// BenchmarkReplay measures what a new holder spends rebuilding an
// orchestration from its stored history (decode + replay), by history size.
func BenchmarkReplay(b *testing.B) {
	for _, events := range []int{10, 100, 1000} {
		batches := sequenceHistory(events / 2)
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				replayStored(b, batches)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(events), "ns/event")
		})
	}
}
