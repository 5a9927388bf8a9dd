package orchestrator_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// prefixCount is how many keys exist under the env's prefix.
func (v *env) prefixCount(t testing.TB) int64 {
	t.Helper()
	resp, err := v.raw.Get(ctxT(t), v.keys.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func TestStartRecord(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	before := time.Now().UTC().Add(-time.Second)
	r, err := v.c.Start(ctxT(t), "report", orchestrator.StartOptions{InstanceID: "nightly", Input: json.RawMessage(`  {"full": true}  `)})
	if err != nil || !r.Started || r.Replaced != "" {
		t.Fatalf("Start: %+v, %v", r, err)
	}
	st := v.decode(t, "nightly")
	if st.Name != "report" || st.InstanceID != "nightly" || st.RuntimeStatus != orchestrator.StatusPending ||
		!jsonEqual(t, st.Input, `{"full":true}`) || string(st.Output) != "null" || string(st.CustomStatus) != "null" ||
		st.ExecutionID != r.Status.ExecutionID || st.FencingToken != 0 || st.Node != "" {
		t.Fatalf("stored record: %+v", st)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(st.ExecutionID) {
		t.Fatalf("executionId %q", st.ExecutionID)
	}
	if st.CreatedTime.Before(before) || !st.CreatedTime.Equal(st.LastUpdatedTime) || st.CreatedTime.Location() != time.UTC {
		t.Fatalf("times: created %v updated %v", st.CreatedTime, st.LastUpdatedTime)
	}
	// The stored control record uses the field names of docs/contract.md and is small:
	// the input lives in its own key, written once.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(v.record(t, "nightly").Value), &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"name", "instanceId", "runtimeStatus", "createdTime", "lastUpdatedTime", "executionId", "fencingToken"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("stored record lacks %q: %s", f, v.record(t, "nightly").Value)
		}
	}
	for _, f := range []string{"node", "input", "output", "customStatus"} {
		if _, ok := fields[f]; ok {
			t.Errorf("stored record has a %s field: %s", f, v.record(t, "nightly").Value)
		}
	}
	if in := v.get(t, v.keys.Input("nightly")); in == nil || !jsonEqual(t, json.RawMessage(in.Value), `{"full":true}`) {
		t.Errorf("input key: %v", in)
	}

	// An empty ID generates one; no input stores null.
	r2, err := v.c.Start(ctxT(t), "report", orchestrator.StartOptions{})
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(r2.Status.InstanceID) {
		t.Fatalf("Start without ID: %+v, %v", r2, err)
	}
	if st := v.decode(t, r2.Status.InstanceID); string(st.Input) != "null" {
		t.Fatalf("input without input: %s", st.Input)
	}
	// A null input is no key (readers take a missing one for null): the
	// start is one write less.
	if in := v.get(t, v.keys.Input(r2.Status.InstanceID)); in != nil {
		t.Fatalf("a start without input wrote the input key: %s", in.Value)
	}
	// Replacing an execution that had an input by one without removes the
	// old input rather than leaving it for the new execution.
	if _, err := v.c.Start(ctxT(t), "report", orchestrator.StartOptions{InstanceID: "nightly", Input: json.RawMessage(`null`),
		ConflictPolicy: orchestrator.ConflictTerminateExisting}); err != nil {
		t.Fatal(err)
	}
	if in := v.get(t, v.keys.Input("nightly")); in != nil {
		t.Fatalf("the replacing start without input left the old input: %s", in.Value)
	}
	if st := v.decode(t, "nightly"); string(st.Input) != "null" {
		t.Fatalf("input of the replacing execution: %s", st.Input)
	}
	if r2.Status.ExecutionID == r2.Status.InstanceID {
		t.Fatal("generated instance ID reused as execution ID")
	}
}

// A refused start writes nothing.
func TestStartRefusals(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.c = orchestrator.NewClient(v.cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), MaxPayload: 1024, Logger: quiet})
	if v.c.MaxPayload() != 1024 {
		t.Fatalf("MaxPayload %d", v.c.MaxPayload())
	}
	exact := `"` + strings.Repeat("a", 1022) + `"`
	cases := []struct {
		name string
		fn   string
		opts orchestrator.StartOptions
		is   error
	}{
		{"empty function", "", orchestrator.StartOptions{InstanceID: "a"}, orchestrator.ErrInvalidInput},
		{"invalid ID", "fn", orchestrator.StartOptions{InstanceID: "a/b"}, orchestrator.ErrInvalidInstanceID},
		{"reserved ID", "fn", orchestrator.StartOptions{InstanceID: "@a"}, orchestrator.ErrInvalidInstanceID},
		{"bad conflict policy", "fn", orchestrator.StartOptions{InstanceID: "a", ConflictPolicy: "replace"}, orchestrator.ErrInvalidInput},
		{"bad reuse policy", "fn", orchestrator.StartOptions{InstanceID: "a", ReusePolicy: "never"}, orchestrator.ErrInvalidInput},
		{"input not JSON", "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(`{"a":`)}, orchestrator.ErrInvalidInput},
		{"input two values", "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(`1 2`)}, orchestrator.ErrInvalidInput},
		{"input bare word", "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(`hello`)}, orchestrator.ErrInvalidInput},
		{"input too large", "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(`"` + strings.Repeat("a", 1023) + `"`)}, orchestrator.ErrPayloadTooLarge},
		{"input too large and invalid", "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(strings.Repeat("{", 2000))}, orchestrator.ErrPayloadTooLarge},
	}
	for _, c := range cases {
		_, err := v.c.Start(ctxT(t), c.fn, c.opts)
		if !errors.Is(err, c.is) {
			t.Errorf("%s: %v, want %v", c.name, err, c.is)
		}
		if errors.Is(c.is, orchestrator.ErrInvalidInput) {
			var ve *orchestrator.ValidationError
			if !errors.As(err, &ve) || ve.Reason == "" {
				t.Errorf("%s: %v is not a ValidationError with a reason", c.name, err)
			}
		}
	}
	if n := v.prefixCount(t); n != 0 {
		t.Fatalf("refused starts wrote %d keys", n)
	}
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(exact)}); err != nil {
		t.Fatalf("input of exactly MaxPayload bytes: %v", err)
	}
	// The refusal of an existing instance writes nothing either.
	before := v.record(t, "a")
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "a", Input: json.RawMessage(`{`)}); !errors.Is(err, orchestrator.ErrInvalidInput) {
		t.Fatalf("invalid input on an existing ID: %v", err)
	}
	if after := v.record(t, "a"); after.String() != before.String() {
		t.Fatal("refused start changed the record")
	}
}

func TestDefaultMaxPayload(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if v.c.MaxPayload() != 256<<10 || orchestrator.DefaultMaxPayload != 256<<10 {
		t.Fatalf("default MaxPayload %d", v.c.MaxPayload())
	}
	ok := json.RawMessage(`"` + strings.Repeat("a", 256<<10-2) + `"`)
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "max", Input: ok}); err != nil {
		t.Fatalf("256 KiB input: %v", err)
	}
	big := json.RawMessage(`"` + strings.Repeat("a", 256<<10-1) + `"`)
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "big", Input: big}); !errors.Is(err, orchestrator.ErrPayloadTooLarge) {
		t.Fatalf("256 KiB + 1 input: %v", err)
	}
	if v.record(t, "big") != nil {
		t.Fatal("oversized start wrote a record")
	}
}

// Status fills node and fencing token from the owners key only when it
// belongs to the record's execution.
func TestStatus(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if _, err := v.c.Status(ctxT(t), "nope"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Status of a missing instance: %v", err)
	}
	if _, err := v.c.Status(ctxT(t), "a#b"); !errors.Is(err, orchestrator.ErrInvalidInstanceID) {
		t.Fatalf("Status of an invalid ID: %v", err)
	}
	x, h := v.running(t, "s", `1`)
	st, err := v.c.Status(ctxT(t), "s")
	if err != nil || st.Node != "test-node" || st.FencingToken != h.fence.Token || st.RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("Status of a held instance: %+v, %v", st, err)
	}
	if _, err := v.raw.Put(ctxT(t), v.keys.Owner("s"), `{"node":"other","executionId":"stale"}`, clientv3.WithIgnoreLease()); err != nil {
		t.Fatal(err)
	}
	st, err = v.c.Status(ctxT(t), "s")
	if err != nil || st.Node != "" {
		t.Fatalf("Status with an owners key of another execution: node %q, %v", st.Node, err)
	}
	_ = x
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if _, err := v.c.Terminate(ctxT(t), "missing", "r"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Terminate missing: %v", err)
	}
	if _, err := v.c.Terminate(ctxT(t), "@bad", "r"); !errors.Is(err, orchestrator.ErrInvalidInstanceID) {
		t.Fatalf("Terminate invalid ID: %v", err)
	}
	small := orchestrator.NewClient(v.cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), MaxPayload: 32, Logger: quiet})
	v.start(t, "t-long-reason", `1`)
	before := v.record(t, "t-long-reason")
	if _, err := small.Terminate(ctxT(t), "t-long-reason", strings.Repeat("r", 40)); !errors.Is(err, orchestrator.ErrPayloadTooLarge) {
		t.Fatalf("Terminate with a reason over the limit: %v", err)
	}
	if after := v.record(t, "t-long-reason"); after.String() != before.String() {
		t.Fatal("refused Terminate wrote")
	}
	for _, from := range []initialState{"Pending", stRunning, stSuspended} {
		id := "t-" + string(from)
		var exec string
		if from == "Pending" {
			exec = v.start(t, id, `1`).Status.ExecutionID
		} else {
			exec = v.setup(t, id, from)
		}
		if err := v.c.RaiseEvent(ctxT(t), id, "pending-event", nil); err != nil {
			t.Fatal(err)
		}
		st, err := v.c.Terminate(ctxT(t), id, `operator said "stop"`)
		if err != nil || st.RuntimeStatus != orchestrator.StatusTerminated {
			t.Fatalf("Terminate %s: %+v, %v", from, st, err)
		}
		rec := v.decode(t, id)
		var reason string
		if rec.RuntimeStatus != orchestrator.StatusTerminated || json.Unmarshal(rec.Output, &reason) != nil || reason != `operator said "stop"` || rec.ExecutionID != exec {
			t.Fatalf("record after Terminate from %s: %+v", from, rec)
		}
		if !rec.LastUpdatedTime.After(rec.CreatedTime) && !rec.LastUpdatedTime.Equal(rec.CreatedTime) {
			t.Fatalf("lastUpdatedTime not updated")
		}
		if n := len(v.inbox(t, id)); n != 0 {
			t.Fatalf("Terminate from %s left %d inbox events", from, n)
		}
	}
	for _, terminal := range []initialState{stCompleted, stFailed, stTerminated} {
		id := "t-" + string(terminal)
		v.setup(t, id, terminal)
		before := v.record(t, id)
		_, err := v.c.Terminate(ctxT(t), id, "again")
		var te *orchestrator.TerminalError
		if !errors.As(err, &te) || !errors.Is(err, orchestrator.ErrInstanceTerminal) || string(te.Status) != string(terminal) || te.InstanceID != id {
			t.Fatalf("Terminate %s: %v, want a TerminalError", terminal, err)
		}
		if after := v.record(t, id); after.String() != before.String() {
			t.Fatalf("refused Terminate wrote: %v -> %v", before, after)
		}
	}
}

func TestSuspendResume(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "sr", `1`)
	st, err := v.c.Suspend(ctxT(t), "sr", "maintenance")
	if err != nil || st.RuntimeStatus != orchestrator.StatusSuspended || v.decode(t, "sr").RuntimeStatus != orchestrator.StatusSuspended {
		t.Fatalf("Suspend: %+v, %v", st, err)
	}
	st, err = v.c.Resume(ctxT(t), "sr", "done")
	if err != nil || st.RuntimeStatus != orchestrator.StatusRunning || v.decode(t, "sr").RuntimeStatus != orchestrator.StatusRunning {
		t.Fatalf("Resume: %+v, %v", st, err)
	}
	if v.decode(t, "sr").ExecutionID != x.Status().ExecutionID {
		t.Fatal("Suspend/Resume changed the execution")
	}
	// Both are recorded for the holder, with their reasons, in order.
	evs := v.inbox(t, "sr")
	if len(evs) != 2 || evs[0].EventType != orchestrator.EventExecutionSuspended || evs[0].Reason != "maintenance" ||
		evs[1].EventType != orchestrator.EventExecutionResumed || evs[1].Reason != "done" {
		t.Fatalf("inbox after Suspend and Resume: %+v", evs)
	}
	for _, op := range []string{"suspend", "resume"} {
		if _, err := callSR(v, t, op, "missing"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			t.Fatalf("%s missing: %v", op, err)
		}
		for _, terminal := range []initialState{stCompleted, stFailed, stTerminated} {
			id := op + "-" + string(terminal)
			v.setup(t, id, terminal)
			before := v.record(t, id)
			_, err := callSR(v, t, op, id)
			var te *orchestrator.TerminalError
			if !errors.As(err, &te) || !errors.Is(err, orchestrator.ErrInstanceTerminal) {
				t.Fatalf("%s %s: %v, want TerminalError", op, terminal, err)
			}
			if after := v.record(t, id); after.String() != before.String() {
				t.Fatalf("refused %s wrote", op)
			}
		}
	}
}

func callSR(v *env, t *testing.T, op, id string) (*orchestrator.Status, error) {
	if op == "suspend" {
		return v.c.Suspend(ctxT(t), id, "r")
	}
	return v.c.Resume(ctxT(t), id, "r")
}

// Resume documents that resuming an instance that is not suspended
// "changes nothing": its record (and so its revision, which every watcher
// and holder compares) must stay as it is.
//
// The same holds for Suspend of an instance that is already suspended.
func TestResumeNotSuspendedChangesNothing(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	v.running(t, "r", `1`)
	before := v.record(t, "r")
	time.Sleep(5 * time.Millisecond) // let the millisecond clock move, so a rewrite shows in lastUpdatedTime
	if _, err := v.c.Resume(ctxT(t), "r", ""); err != nil {
		t.Fatal(err)
	}
	if after := v.record(t, "r"); after.String() != before.String() {
		t.Fatalf("Resume of a Running instance rewrote its record: %v -> %v", before, after)
	}
	if _, err := v.c.Suspend(ctxT(t), "r", ""); err != nil {
		t.Fatal(err)
	}
	before = v.record(t, "r")
	inbox := len(v.inbox(t, "r"))
	time.Sleep(5 * time.Millisecond)
	if _, err := v.c.Suspend(ctxT(t), "r", "again"); err != nil {
		t.Fatal(err)
	}
	if after := v.record(t, "r"); after.String() != before.String() || len(v.inbox(t, "r")) != inbox {
		t.Fatalf("Suspend of a Suspended instance rewrote its record: %v -> %v", before, after)
	}
}

func TestRestart(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if _, err := v.c.Restart(ctxT(t), "missing", orchestrator.RestartOptions{}); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Restart missing: %v", err)
	}
	for _, from := range []initialState{stRunning, stSuspended, stCompleted, stFailed, stTerminated} {
		id := "r-" + string(from)
		old := v.setup(t, id, from)
		for _, k := range []string{v.keys.History(id, old) + "0000000000", v.keys.InboxPrefix(id) + "x", v.keys.Blobs(id, old) + "b"} {
			if _, err := v.raw.Put(ctxT(t), k, `{}`); err != nil {
				t.Fatal(err)
			}
		}
		r, err := v.c.Restart(ctxT(t), id, orchestrator.RestartOptions{TerminateExisting: true})
		if err != nil || !r.Started || r.Replaced != old || r.Status.ExecutionID == old {
			t.Fatalf("Restart from %s: %+v, %v", from, r, err)
		}
		st := v.decode(t, id)
		if st.ExecutionID != r.Status.ExecutionID || st.RuntimeStatus != orchestrator.StatusPending || !jsonEqual(t, st.Input, `{"initial":true}`) ||
			st.Name != "fn" || string(st.Output) != "null" || string(st.CustomStatus) != "null" || st.FencingToken != 0 {
			t.Fatalf("record after Restart from %s: %+v", from, st)
		}
		// The owners key is its holder's to release: it sees the new
		// execution and stops, so the new one starts only after the old
		// one's effects ended.
		if o := v.get(t, v.keys.Owner(id)); (o != nil) != (from == stRunning) {
			t.Fatalf("Restart from %s: owners key %v", from, o)
		}
		if v.get(t, v.keys.History(id, old)+"0000000000") != nil || v.get(t, v.keys.InboxPrefix(id)+"x") != nil || v.get(t, v.keys.Blobs(id, old)+"b") != nil {
			t.Fatalf("Restart from %s left the old execution's history, inbox or blobs", from)
		}
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if err := v.c.Purge(ctxT(t), "missing"); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Purge missing: %v", err)
	}
	if err := v.c.Purge(ctxT(t), "a?b"); !errors.Is(err, orchestrator.ErrInvalidInstanceID) {
		t.Fatalf("Purge invalid: %v", err)
	}
	for _, from := range []initialState{"Pending", stRunning, stSuspended} {
		id := "p-" + string(from)
		if from == "Pending" {
			v.start(t, id, `1`)
		} else {
			v.setup(t, id, from)
		}
		before := v.record(t, id)
		if err := v.c.Purge(ctxT(t), id); !errors.Is(err, orchestrator.ErrInstanceActive) {
			t.Fatalf("Purge %s: %v, want ErrInstanceActive", from, err)
		}
		if after := v.record(t, id); after.String() != before.String() {
			t.Fatal("refused Purge wrote")
		}
	}
	for _, from := range []initialState{stCompleted, stFailed, stTerminated} {
		id := "p-" + string(from)
		v.setup(t, id, from)
		for _, k := range []string{v.keys.HistoryPrefix(id) + "old-exec/0000000000", v.keys.InboxPrefix(id) + "x",
			v.keys.BlobPrefix(id) + "old-exec/b", v.keys.CustomStatus(id)} {
			if _, err := v.raw.Put(ctxT(t), k, `{}`); err != nil {
				t.Fatal(err)
			}
		}
		// A neighbour whose ID extends this one must survive.
		neighbour := id + "-2"
		v.setup(t, neighbour, from)
		if _, err := v.raw.Put(ctxT(t), v.keys.HistoryPrefix(neighbour)+"e/0000000000", `[]`); err != nil {
			t.Fatal(err)
		}
		if err := v.c.Purge(ctxT(t), id); err != nil {
			t.Fatalf("Purge %s: %v", from, err)
		}
		if v.record(t, id) != nil || v.get(t, v.keys.Input(id)) != nil {
			t.Fatalf("Purge %s left the record or its input", from)
		}
		for _, pfx := range []string{v.keys.HistoryPrefix(id), v.keys.InboxPrefix(id)} {
			if resp, err := v.raw.Get(ctxT(t), pfx, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
				t.Fatalf("Purge %s left keys under %s", from, pfx)
			}
		}
		if v.record(t, neighbour) == nil || v.get(t, v.keys.HistoryPrefix(neighbour)+"e/0000000000") == nil {
			t.Fatalf("Purge of %q deleted its neighbour %q", id, neighbour)
		}
		if _, err := v.c.Status(ctxT(t), id); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			t.Fatalf("Status after Purge: %v", err)
		}
		if err := v.c.Purge(ctxT(t), id); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			t.Fatalf("second Purge: %v", err)
		}
		// The ID can start afresh, even with reusePolicy=reject.
		if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: id, ReusePolicy: orchestrator.ReuseReject}); err != nil {
			t.Fatalf("Start after Purge: %v", err)
		}
	}
}

func (v *env) inbox(t testing.TB, id string) []orchestrator.HistoryEvent {
	t.Helper()
	resp, err := v.raw.Get(ctxT(t), v.keys.InboxPrefix(id), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var out []orchestrator.HistoryEvent
	for _, kv := range resp.Kvs {
		var ev orchestrator.HistoryEvent
		if err := json.Unmarshal(kv.Value, &ev); err != nil {
			t.Fatalf("inbox %s: %v", kv.Key, err)
		}
		out = append(out, ev)
	}
	return out
}

func TestRaiseEvent(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	if err := v.c.RaiseEvent(ctxT(t), "missing", "e", nil); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("RaiseEvent missing: %v", err)
	}
	r := v.start(t, "ev", `1`)
	before := v.record(t, "ev")
	for _, c := range []struct {
		name, id, event, data string
		is                    error
	}{
		{"empty event name", "ev", "", `1`, orchestrator.ErrInvalidInput},
		{"data not JSON", "ev", "e", `{`, orchestrator.ErrInvalidInput},
		{"data too large", "ev", "e", `"` + strings.Repeat("d", orchestrator.DefaultMaxPayload) + `"`, orchestrator.ErrPayloadTooLarge},
		{"invalid ID", "e/v", "e", `1`, orchestrator.ErrInvalidInstanceID},
	} {
		if err := v.c.RaiseEvent(ctxT(t), c.id, c.event, json.RawMessage(c.data)); !errors.Is(err, c.is) {
			t.Errorf("%s: %v, want %v", c.name, err, c.is)
		}
	}
	if n := len(v.inbox(t, "ev")); n != 0 {
		t.Fatalf("refused events stored: %d", n)
	}
	if err := v.c.RaiseEvent(ctxT(t), "ev", "approve", json.RawMessage(` {"by":"ann"} `)); err != nil {
		t.Fatalf("RaiseEvent: %v", err)
	}
	if err := v.c.RaiseEvent(ctxT(t), "ev", "approve", nil); err != nil {
		t.Fatalf("RaiseEvent without data: %v", err)
	}
	if after := v.record(t, "ev"); after.String() != before.String() {
		t.Fatalf("RaiseEvent rewrote the record: %v -> %v", before, after)
	}
	evs := v.inbox(t, "ev")
	if len(evs) != 2 || evs[0].EventType != orchestrator.EventEventRaised || evs[0].Name != "approve" ||
		!jsonEqual(t, evs[0].Input, `{"by":"ann"}`) || string(evs[1].Input) != "null" {
		t.Fatalf("inbox: %+v", evs)
	}
	resp, err := v.raw.Get(ctxT(t), v.keys.InboxPrefix("ev"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 2 {
		t.Fatalf("events not in the instance's inbox: %v, %v", resp, err)
	}
	_ = r
	// Suspended instances keep receiving events; terminal ones refuse them
	// and their inbox is cleared.
	if _, err := v.c.Suspend(ctxT(t), "ev", ""); err != nil {
		t.Fatal(err)
	}
	if err := v.c.RaiseEvent(ctxT(t), "ev", "while-suspended", nil); err != nil {
		t.Fatalf("RaiseEvent while suspended: %v", err)
	}
	if _, err := v.c.Terminate(ctxT(t), "ev", ""); err != nil {
		t.Fatal(err)
	}
	if n := len(v.inbox(t, "ev")); n != 0 {
		t.Fatalf("Terminate left %d inbox events", n)
	}
	before = v.record(t, "ev")
	err = v.c.RaiseEvent(ctxT(t), "ev", "late", nil)
	var te *orchestrator.TerminalError
	if !errors.As(err, &te) || te.Status != orchestrator.StatusTerminated {
		t.Fatalf("RaiseEvent on a terminated instance: %v, want TerminalError", err)
	}
	if after := v.record(t, "ev"); after.String() != before.String() || len(v.inbox(t, "ev")) != 0 {
		t.Fatal("refused RaiseEvent wrote")
	}
}

// listAll pages through List and returns every ID in order.
func listAll(t *testing.T, c *orchestrator.Client, opts orchestrator.ListOptions) ([]string, int) {
	t.Helper()
	var ids []string
	pages := 0
	for {
		page, next, err := c.List(ctxT(t), opts)
		if err != nil {
			t.Fatalf("List %+v: %v", opts, err)
		}
		pages++
		if len(page) > opts.Top && opts.Top > 0 {
			t.Fatalf("page of %d with top %d", len(page), opts.Top)
		}
		if next != "" && len(page) == 0 {
			t.Fatalf("empty page with a continuation token")
		}
		for _, st := range page {
			ids = append(ids, st.InstanceID)
			if len(opts.Statuses) > 0 {
				found := false
				for _, s := range opts.Statuses {
					found = found || st.RuntimeStatus == s
				}
				if !found {
					t.Fatalf("List %v returned %s in %s", opts.Statuses, st.InstanceID, st.RuntimeStatus)
				}
			}
			if !strings.HasPrefix(st.InstanceID, opts.InstanceIDPrefix) {
				t.Fatalf("List prefix %q returned %q", opts.InstanceIDPrefix, st.InstanceID)
			}
		}
		if next == "" {
			return ids, pages
		}
		if pages > 10000 {
			t.Fatal("List does not end")
		}
		opts.ContinuationToken = next
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	// 30 instances: a-00..a-19 and b-00..b-09; every third terminated,
	// every fifth suspended.
	want := map[orchestrator.RuntimeStatus][]string{}
	var all []string
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("a-%02d", i)
		if i >= 20 {
			id = fmt.Sprintf("b-%02d", i-20)
		}
		v.start(t, id, fmt.Sprint(i))
		s := orchestrator.StatusPending
		switch {
		case i%3 == 0:
			if _, err := v.c.Terminate(ctxT(t), id, ""); err != nil {
				t.Fatal(err)
			}
			s = orchestrator.StatusTerminated
		case i%5 == 0:
			if _, err := v.c.Suspend(ctxT(t), id, ""); err != nil {
				t.Fatal(err)
			}
			s = orchestrator.StatusSuspended
		}
		want[s] = append(want[s], id)
		all = append(all, id)
	}
	// Keys of other kinds and other prefixes are not listed; holders of the
	// listed execution are filled in, stale owners keys are not.
	v.hold(t, "a-01", "x")
	held := v.hold(t, "a-02", v.decode(t, "a-02").ExecutionID)
	other := orchestrator.NewClient(v.cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix() + "nested/", Logger: quiet})
	if _, err := other.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "a-99"}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(all)
	filter := func(pfx string, statuses ...orchestrator.RuntimeStatus) []string {
		var out []string
		for _, id := range all {
			if !strings.HasPrefix(id, pfx) {
				continue
			}
			if len(statuses) == 0 {
				out = append(out, id)
				continue
			}
			for _, s := range statuses {
				for _, w := range want[s] {
					if w == id {
						out = append(out, id)
					}
				}
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		opts orchestrator.ListOptions
		want []string
	}{
		{"all default top", orchestrator.ListOptions{}, all},
		{"all top 1", orchestrator.ListOptions{Top: 1}, all},
		{"all top 4", orchestrator.ListOptions{Top: 4}, all},
		{"all top 30", orchestrator.ListOptions{Top: 30}, all},
		{"all top 29", orchestrator.ListOptions{Top: 29}, all},
		{"all top 1000", orchestrator.ListOptions{Top: 1000}, all},
		{"terminated top 3", orchestrator.ListOptions{Top: 3, Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusTerminated}}, filter("", orchestrator.StatusTerminated)},
		{"terminated or suspended top 2", orchestrator.ListOptions{Top: 2, Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusTerminated, orchestrator.StatusSuspended}}, filter("", orchestrator.StatusTerminated, orchestrator.StatusSuspended)},
		{"pending", orchestrator.ListOptions{Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusPending}}, filter("", orchestrator.StatusPending)},
		{"completed: none", orchestrator.ListOptions{Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusCompleted}}, nil},
		{"prefix a- top 5", orchestrator.ListOptions{Top: 5, InstanceIDPrefix: "a-"}, filter("a-")},
		{"prefix b top 3", orchestrator.ListOptions{Top: 3, InstanceIDPrefix: "b"}, filter("b")},
		{"prefix a-1 terminated top 1", orchestrator.ListOptions{Top: 1, InstanceIDPrefix: "a-1", Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusTerminated}}, filter("a-1", orchestrator.StatusTerminated)},
		{"prefix matches nothing", orchestrator.ListOptions{InstanceIDPrefix: "c"}, nil},
	} {
		got, pages := listAll(t, v.c, c.opts)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if top := c.opts.Top; top > 0 && len(c.want) > 0 {
			if wantPages := (len(c.want) + top - 1) / top; pages != wantPages {
				t.Errorf("%s: %d pages, want %d", c.name, pages, wantPages)
			}
		}
	}

	page, next, err := v.c.List(ctxT(t), orchestrator.ListOptions{Top: 7})
	if err != nil || len(page) != 7 || next == "" {
		t.Fatalf("first page: %d, %q, %v", len(page), next, err)
	}
	for _, st := range page {
		wantNode, wantToken := "", int64(0)
		if st.InstanceID == "a-02" {
			wantNode, wantToken = "test-node", held.fence.Token
		}
		if st.Node != wantNode || (wantToken != 0 && st.FencingToken != wantToken) {
			t.Fatalf("List: %s node %q token %d, want %q %d", st.InstanceID, st.Node, st.FencingToken, wantNode, wantToken)
		}
	}

	for _, c := range []struct {
		name string
		opts orchestrator.ListOptions
	}{
		{"top 1001", orchestrator.ListOptions{Top: 1001}},
		{"garbage token", orchestrator.ListOptions{ContinuationToken: "!!not base64!!"}},
		{"token of another prefix", orchestrator.ListOptions{ContinuationToken: base64.RawURLEncoding.EncodeToString([]byte("/elsewhere/v1/instances/x"))}},
		{"token used with another instance prefix", orchestrator.ListOptions{InstanceIDPrefix: "b-", ContinuationToken: next}},
	} {
		_, _, err := v.c.List(ctxT(t), c.opts)
		var ve *orchestrator.ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("%s: %v, want a ValidationError", c.name, err)
		}
	}
}

// Paging with a status filter across more records than one internal batch
// (500), with the matches sparse, returns every match exactly once.
func TestListManyFiltered(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	const n = 1200
	var wg sync.WaitGroup
	ids := make(chan int)
	var mu sync.Mutex
	var terminated []string
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				id := fmt.Sprintf("i-%04d", i)
				if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: id}); err != nil {
					t.Error(err)
					continue
				}
				if i%97 == 0 || i >= n-3 {
					if _, err := v.c.Terminate(ctxT(t), id, ""); err != nil {
						t.Error(err)
					}
					mu.Lock()
					terminated = append(terminated, id)
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	sort.Strings(terminated)
	for _, top := range []int{1, 4, 5, 1000} {
		got, _ := listAll(t, v.c, orchestrator.ListOptions{Top: top, Statuses: []orchestrator.RuntimeStatus{orchestrator.StatusTerminated}})
		if strings.Join(got, ",") != strings.Join(terminated, ",") {
			t.Fatalf("top %d: got %d %v, want %d %v", top, len(got), got, len(terminated), terminated)
		}
	}
	got, pages := listAll(t, v.c, orchestrator.ListOptions{Top: 1000})
	if len(got) != n || pages != 2 {
		t.Fatalf("all: %d in %d pages", len(got), pages)
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("%s listed twice", id)
		}
		seen[id] = true
	}
}

// A start whose transaction applies after its caller saw a timeout: Start
// reads until it knows, so it reports the start it made when the write
// lands within its context, and otherwise says the outcome is unknown -
// never that the start was not committed, which would invite a retry that
// (with terminateExisting, or a restart) ends the first execution.
func TestStartAppliedLate(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	late := leasetest.NewLateTxns(cli, 500*time.Millisecond)
	v := envOn(t, e, cli, e.Client())

	// Lands within the start's context: reported as started.
	applied := late.Arm(1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r, err := v.c.Start(ctx, "fn", orchestrator.StartOptions{InstanceID: "late-1"})
	cancel()
	<-applied
	if err != nil || !r.Started {
		t.Fatalf("Start whose write landed late: %+v, %v; want the start it made", r, err)
	}
	if st := v.decode(t, "late-1"); st.ExecutionID != r.Status.ExecutionID {
		t.Fatalf("record %s, Start reported %s", st.ExecutionID, r.Status.ExecutionID)
	}

	// Lands after the start's context ended: the outcome is unknown.
	applied = late.Arm(1, nil)
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = v.c.Start(ctx, "fn", orchestrator.StartOptions{InstanceID: "late-2"})
	cancel()
	if !errors.Is(err, orchestrator.ErrUnavailable) || !strings.Contains(err.Error(), "unknown") || strings.Contains(err.Error(), "not committed") {
		t.Fatalf("Start whose write lands after its context: %v; want ErrUnavailable saying the outcome is unknown", err)
	}
	<-applied
	if v.record(t, "late-2") == nil {
		t.Fatal("the late write did not land (the test did not make the case)")
	}
}

// etcd answers NOSPACE both for a write it refused (its alarm was up) and
// for one it applied and found over the quota while applying it (the
// write that raises the alarm). Starts that race into a small quota: each
// one answered with ErrNoSpace wrote nothing, and each one that succeeded
// is there.
func TestStartNoSpaceAnswersWhatHappened(t *testing.T) {
	t.Parallel()
	e := leasetest.StartWith(t, func(cfg *embed.Config) { cfg.QuotaBackendBytes = 8 << 20 })
	v := envOn(t, e, e.Client(), e.Client())
	input := json.RawMessage(`"` + strings.Repeat("x", 60<<10) + `"`)
	var (
		mu               sync.Mutex
		started, refused []string
	)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("fill-%d-%d", w, i)
				_, err := v.c.Start(ctxT(t), "report", orchestrator.StartOptions{InstanceID: id, Input: input})
				mu.Lock()
				switch {
				case err == nil:
					started = append(started, id)
				case errors.Is(err, orchestrator.ErrNoSpace):
					refused = append(refused, id)
				default:
					mu.Unlock()
					t.Errorf("start %s: %v", id, err)
					return
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(refused) == 0 {
		t.Fatalf("no start was refused (%d started)", len(started))
	}
	for _, id := range refused {
		if rec := v.record(t, id); rec != nil {
			t.Errorf("start %s was answered NOSPACE, but its record is there", id)
		}
	}
	for _, id := range started {
		if v.record(t, id) == nil {
			t.Errorf("start %s succeeded, but its record is missing", id)
		}
	}
	t.Logf("%d started, %d refused", len(started), len(refused))
}
