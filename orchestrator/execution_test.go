package orchestrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease"
	"github.com/soloist-dev/soloist/orchestrator"
)

// leaseHeld is an execution run under a real lease.Session holding of the
// owners key, the way a node runs it.
type leaseHeld struct {
	s       *lease.Session
	h       *lease.Holding
	x       *orchestrator.Execution
	rejects atomic.Int32
	exec    string
}

func (v *env) leaseHold(t testing.TB, cli *clientv3.Client, id string) *leaseHeld {
	t.Helper()
	r := v.start(t, id, `{"n":1}`)
	s, err := lease.NewSession(ctxT(t), cli, lease.Config{TTL: 5 * time.Second, Logger: quiet, Prefix: v.keys.Owners()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	owner, _ := json.Marshal(orchestrator.Owner{Node: "n1", ExecutionID: r.Status.ExecutionID})
	h, err := s.Acquire(ctxT(t), lease.Claim{Key: v.keys.Owner(id), Value: string(owner)})
	if err != nil {
		t.Fatal(err)
	}
	lh := &leaseHeld{s: s, h: h, exec: r.Status.ExecutionID}
	fence := orchestrator.Fence{Cmp: h.Cmp(), Token: h.Token(), Release: h.ReleaseOp(), OnReject: func(err error) {
		lh.rejects.Add(1)
		h.Lose(err)
	}}
	if lh.x, err = v.c.Open(ctxT(t), id, r.Status.ExecutionID, fence); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if lh.x.Token() != h.Token() {
		t.Fatalf("Execution.Token %d != holding token %d", lh.x.Token(), h.Token())
	}
	if err := lh.x.MarkRunning(ctxT(t)); err != nil {
		t.Fatalf("MarkRunning: %v", err)
	}
	if err := lh.x.SetCustomStatus(ctxT(t), json.RawMessage(`{"step":1}`)); err != nil {
		t.Fatalf("SetCustomStatus: %v", err)
	}
	st := v.decode(t, id)
	if st.RuntimeStatus != orchestrator.StatusRunning || string(st.CustomStatus) != `{"step":1}` || st.FencingToken != h.Token() {
		t.Fatalf("record after the holder's writes: %+v", st)
	}
	return lh
}

// After the owners key is gone (deleted by an operator, or the lease
// revoked), every write of the old holder is refused with ErrFenced,
// OnReject is called, and the record is left exactly as it was.
func TestExecutionFenced(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"owners key deleted", "lease revoked"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			id := "fenced"
			lh := v.leaseHold(t, v.cli, id)
			before := v.record(t, id)
			switch how {
			case "owners key deleted":
				if _, err := v.raw.Delete(ctxT(t), v.keys.Owner(id)); err != nil {
					t.Fatal(err)
				}
			case "lease revoked":
				if _, err := v.raw.Revoke(ctxT(t), lh.s.LeaseID()); err != nil {
					t.Fatal(err)
				}
			}
			writes := []struct {
				name string
				do   func() error
			}{
				{"SetCustomStatus", func() error {
					return lh.x.SetCustomStatus(ctxT(t), json.RawMessage(`{"step":2}`))
				}},
				{"MarkRunning", func() error { return lh.x.MarkRunning(ctxT(t)) }},
				{"Finish completed", func() error { return lh.x.Finish(ctxT(t), json.RawMessage(`"out"`), nil) }},
				{"Finish failed", func() error { return lh.x.Finish(ctxT(t), nil, errors.New("boom")) }},
			}
			for i, w := range writes {
				err := w.do()
				if !errors.Is(err, orchestrator.ErrFenced) {
					t.Fatalf("%s after the owners key went: %v, want ErrFenced", w.name, err)
				}
				if got := lh.rejects.Load(); got != int32(i+1) {
					t.Fatalf("OnReject called %d times after %d fenced writes", got, i+1)
				}
			}
			if after := v.record(t, id); after.String() != before.String() {
				t.Fatalf("fenced writes changed the record: %v -> %v", before, after)
			}
			if st := lh.x.Status(); st.RuntimeStatus != orchestrator.StatusRunning || string(st.CustomStatus) != `{"step":1}` {
				t.Fatalf("the execution's view moved on after fenced writes: %+v", st)
			}
			select {
			case <-lh.h.Done():
			case <-time.After(time.Second):
				t.Fatal("holding not done after its key went")
			}
		})
	}
}

// A new holder of the same execution (after the old one's key went) writes
// with its own fence; the old holder stays fenced out.
func TestExecutionFencedByNewHolder(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	id := "taken-over"
	x1, h1 := v.running(t, id, `1`)
	if _, err := v.raw.Revoke(ctxT(t), h1.leaseID); err != nil {
		t.Fatal(err)
	}
	h2 := v.hold(t, id, x1.Status().ExecutionID)
	if h2.fence.Token <= h1.fence.Token {
		t.Fatalf("new token %d not above %d", h2.fence.Token, h1.fence.Token)
	}
	x2, err := v.c.Open(ctxT(t), id, x1.Status().ExecutionID, h2.fence)
	if err != nil {
		t.Fatal(err)
	}
	if err := x2.SetCustomStatus(ctxT(t), json.RawMessage(`"new"`)); err != nil {
		t.Fatalf("new holder's Update: %v", err)
	}
	before := v.record(t, id)
	if err := x1.SetCustomStatus(ctxT(t), json.RawMessage(`"old"`)); !errors.Is(err, orchestrator.ErrFenced) {
		t.Fatalf("old holder's Update: %v, want ErrFenced", err)
	}
	if err := x1.Finish(ctxT(t), json.RawMessage(`"old"`), nil); !errors.Is(err, orchestrator.ErrFenced) {
		t.Fatalf("old holder's Finish: %v, want ErrFenced", err)
	}
	if after := v.record(t, id); after.String() != before.String() {
		t.Fatalf("old holder changed the record: %v -> %v", before, after)
	}
	if h1.rejects.Load() != 2 || h2.rejects.Load() != 0 {
		t.Fatalf("rejects: old %d new %d", h1.rejects.Load(), h2.rejects.Load())
	}
	if v.get(t, v.keys.Owner(id)).CreateRevision != h2.fence.Token {
		t.Fatal("the old holder's Finish deleted the new holder's owners key")
	}
	st, err := v.c.Status(ctxT(t), id)
	if err != nil || st.FencingToken != h2.fence.Token || st.Node != "test-node" {
		t.Fatalf("Status: %+v, %v; want the new holder's token %d", st, err, h2.fence.Token)
	}
	if err := x2.Finish(ctxT(t), json.RawMessage(`"new"`), nil); err != nil {
		t.Fatalf("new holder's Finish: %v", err)
	}
}

// Terminate, Suspend and Purge while held: the holder's next write returns
// ErrExecutionChanged (not ErrFenced: it still holds the key), OnReject is
// not called and the record keeps the client's change.
func TestExecutionChangedWhileHeld(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	change := map[string]func(id string) error{
		"terminate": func(id string) error { _, err := v.c.Terminate(ctxT(t), id, "operator"); return err },
		"suspend":   func(id string) error { _, err := v.c.Suspend(ctxT(t), id, "operator"); return err },
		"terminate and purge": func(id string) error {
			if _, err := v.c.Terminate(ctxT(t), id, "operator"); err != nil {
				return err
			}
			return v.c.Purge(ctxT(t), id)
		},
	}
	for name, do := range change {
		t.Run(name, func(t *testing.T) {
			id := "changed-" + strings.ReplaceAll(name, " ", "-")
			x, h := v.running(t, id, `1`)
			if err := do(id); err != nil {
				t.Fatal(err)
			}
			before := v.record(t, id)
			if err := x.SetCustomStatus(ctxT(t), json.RawMessage(`"x"`)); !errors.Is(err, orchestrator.ErrExecutionChanged) {
				t.Fatalf("SetCustomStatus: %v, want ErrExecutionChanged", err)
			}
			if err := x.Finish(ctxT(t), json.RawMessage(`"x"`), nil); !errors.Is(err, orchestrator.ErrExecutionChanged) {
				t.Fatalf("Finish: %v, want ErrExecutionChanged", err)
			}
			if after := v.record(t, id); after.String() != before.String() {
				t.Fatalf("record changed: %v -> %v", before, after)
			}
			if h.rejects.Load() != 0 {
				t.Fatal("OnReject called for a holder that still holds the key")
			}
			if o := v.get(t, v.keys.Owner(id)); o == nil || o.CreateRevision != h.fence.Token {
				t.Fatalf("a refused Finish deleted the owners key: %v", o)
			}
		})
	}
}

// A restart (Start with terminateExisting) while held replaces the record
// in one transaction and leaves the owners key to its holder: the old
// holder's writes fail, and the new record is left intact.
func TestExecutionRestartedWhileHeld(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"terminateExisting", "Restart"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			id := "restarted"
			lh := v.leaseHold(t, v.cli, id)
			var r *orchestrator.StartResult
			var err error
			if how == "Restart" {
				r, err = v.c.Restart(ctxT(t), id, orchestrator.RestartOptions{TerminateExisting: true})
			} else {
				r, err = v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: id, Input: json.RawMessage(`{"n":1}`), ConflictPolicy: orchestrator.ConflictTerminateExisting})
			}
			if err != nil || !r.Started || r.Replaced != lh.exec || r.Status.ExecutionID == lh.exec {
				t.Fatalf("restart: %+v, %v", r, err)
			}
			if o := v.get(t, v.keys.Owner(id)); o == nil || o.CreateRevision != lh.h.Token() {
				t.Fatalf("the restart took the owners key from its holder: %v", o)
			}
			newRec := v.record(t, id)
			for name, write := range map[string]func() error{
				"SetCustomStatus": func() error {
					return lh.x.SetCustomStatus(ctxT(t), json.RawMessage(`"stale"`))
				},
				"Finish": func() error { return lh.x.Finish(ctxT(t), json.RawMessage(`"stale"`), nil) },
			} {
				err := write()
				if !errors.Is(err, orchestrator.ErrFenced) && !errors.Is(err, orchestrator.ErrExecutionChanged) {
					t.Fatalf("old holder's %s after the restart: %v, want ErrFenced or ErrExecutionChanged", name, err)
				}
			}
			if after := v.record(t, id); after.String() != newRec.String() {
				t.Fatalf("old holder changed the new record: %v -> %v", newRec, after)
			}
			st := v.decode(t, id)
			if st.ExecutionID != r.Status.ExecutionID || st.RuntimeStatus != orchestrator.StatusPending || !jsonEqual(t, st.Input, `{"n":1}`) {
				t.Fatalf("new record: %+v", st)
			}
		})
	}
}

// Open refuses executions that are not the record's or not runnable.
func TestOpen(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	r := v.start(t, "o", `1`)
	h := v.hold(t, "o", r.Status.ExecutionID)
	if _, err := v.c.Open(ctxT(t), "o", "someone-else", h.fence); !errors.Is(err, orchestrator.ErrExecutionChanged) {
		t.Fatalf("Open of another execution: %v", err)
	}
	if _, err := v.c.Open(ctxT(t), "missing", "x", h.fence); !errors.Is(err, orchestrator.ErrInstanceNotFound) {
		t.Fatalf("Open of a missing instance: %v", err)
	}
	x, err := v.c.Open(ctxT(t), "o", r.Status.ExecutionID, h.fence)
	if err != nil || x.Status().RuntimeStatus != orchestrator.StatusPending || x.Token() != h.fence.Token {
		t.Fatalf("Open: %+v, %v", x, err)
	}
	if _, err := v.c.Suspend(ctxT(t), "o", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.c.Open(ctxT(t), "o", r.Status.ExecutionID, h.fence); !errors.Is(err, orchestrator.ErrExecutionChanged) {
		t.Fatalf("Open of a suspended instance: %v", err)
	}
	if _, err := v.c.Terminate(ctxT(t), "o", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.c.Open(ctxT(t), "o", r.Status.ExecutionID, h.fence); !errors.Is(err, orchestrator.ErrExecutionChanged) {
		t.Fatalf("Open of a terminated instance: %v", err)
	}
}

// A write that races with an unrelated change of the record (one that
// leaves it runnable and of this execution) is applied on top of it.
func TestExecutionUpdateRetriesOnUnrelatedChange(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, h := v.running(t, "u", `1`)
	// Resume of a running instance rewrites the record (lastUpdatedTime).
	if _, err := v.c.Resume(ctxT(t), "u", ""); err != nil {
		t.Fatal(err)
	}
	// Suspend then Resume: the record is runnable again, of the same execution.
	if _, err := v.c.Suspend(ctxT(t), "u", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.c.Resume(ctxT(t), "u", ""); err != nil {
		t.Fatal(err)
	}
	if err := x.SetCustomStatus(ctxT(t), json.RawMessage(`"after"`)); err != nil {
		t.Fatalf("Update after unrelated changes: %v", err)
	}
	st := v.decode(t, "u")
	if string(st.CustomStatus) != `"after"` || st.RuntimeStatus != orchestrator.StatusRunning || st.FencingToken != h.fence.Token {
		t.Fatalf("record: %+v", st)
	}
	if h.rejects.Load() != 0 {
		t.Fatal("OnReject called")
	}
}

// Finish writes the terminal status and deletes the owners key in the same
// revision; the lease holding sees its key go.
func TestFinish(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		output     string
		runErr     error
		wantStatus orchestrator.RuntimeStatus
		wantOutput string
	}{
		{"completed", `{"rows": 42}`, nil, orchestrator.StatusCompleted, `{"rows":42}`},
		{"completed null", ``, nil, orchestrator.StatusCompleted, `null`},
		{"failed", `{"ignored":true}`, errors.New("disk full"), orchestrator.StatusFailed, `"disk full"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := newEnv(t)
			id := "finish"
			lh := v.leaseHold(t, v.cli, id)
			from := v.record(t, id).ModRevision + 1
			wctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wch := v.raw.Watch(wctx, v.keys.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(from))

			if err := lh.x.Finish(ctxT(t), json.RawMessage(c.output), c.runErr); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			want := 4
			if c.runErr != nil {
				want = 5 // and the failure details
			}
			var evs []*clientv3.Event
			for len(evs) < want {
				select {
				case wr := <-wch:
					evs = append(evs, wr.Events...)
				case <-time.After(5 * time.Second):
					t.Fatalf("events: %v", evs)
				}
			}
			if len(evs) != want {
				t.Fatalf("Finish events: %v", evs)
			}
			for _, ev := range evs {
				if ev.Kv.ModRevision != evs[0].Kv.ModRevision {
					t.Fatalf("Finish was not one revision: %v", evs)
				}
				key := string(ev.Kv.Key)
				switch {
				case key == v.keys.Instance(id), key == v.keys.Output(id), strings.HasPrefix(key, v.keys.Finished()),
					key == v.keys.FailureDetails(id) && c.runErr != nil:
					if ev.Type != clientv3.EventTypePut {
						t.Fatalf("event %v, want a put", ev)
					}
				case key == v.keys.Owner(id):
					if ev.Type != clientv3.EventTypeDelete {
						t.Fatalf("owners event %v", ev)
					}
				default:
					t.Fatalf("unexpected event %v", ev)
				}
			}
			st := v.decode(t, id)
			if st.RuntimeStatus != c.wantStatus || !jsonEqual(t, st.Output, c.wantOutput) || st.ExecutionID != lh.exec || st.FencingToken != lh.h.Token() {
				t.Fatalf("record after Finish: %+v (output %s)", st, st.Output)
			}
			if string(st.CustomStatus) != `{"step":1}` {
				t.Fatalf("Finish lost the custom status: %s", st.CustomStatus)
			}
			if (c.runErr != nil) != (st.FailureDetails != nil) || (st.FailureDetails != nil && st.FailureDetails.ErrorMessage != "disk full") {
				t.Fatalf("failure details %+v", st.FailureDetails)
			}
			if !st.LastUpdatedTime.After(st.CreatedTime) && !st.LastUpdatedTime.Equal(st.CreatedTime) {
				t.Fatalf("lastUpdatedTime %v before createdTime %v", st.LastUpdatedTime, st.CreatedTime)
			}
			if x := lh.x.Status(); x.RuntimeStatus != c.wantStatus {
				t.Fatalf("Execution.Status after Finish: %s", x.RuntimeStatus)
			}
			select {
			case <-lh.h.Done():
				if !errors.Is(lh.h.Err(), lease.ErrKeyDeleted) {
					t.Fatalf("holding ended with %v", lh.h.Err())
				}
			case <-time.After(time.Second):
				t.Fatal("holding not done after Finish deleted its key")
			}
			status, err := v.c.Status(ctxT(t), id)
			if err != nil || status.Node != "" || status.RuntimeStatus != c.wantStatus {
				t.Fatalf("Status after Finish: %+v, %v", status, err)
			}
		})
	}
}

// A write after Finish, another Finish included, must not report success:
// nothing is written.
func TestUpdateAfterFinishIsRefused(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	x, _ := v.running(t, "late", `1`)
	if err := x.Finish(ctxT(t), json.RawMessage(`"out"`), nil); err != nil {
		t.Fatal(err)
	}
	landed := v.record(t, "late")
	for name, write := range map[string]func() error{
		"custom status": func() error {
			return x.SetCustomStatus(ctxT(t), json.RawMessage(`"late"`))
		},
		"Finish with another output": func() error { return x.Finish(ctxT(t), json.RawMessage(`"other"`), nil) },
	} {
		if err := write(); err == nil {
			t.Errorf("%s after Finish returned nil, but wrote nothing (record %v)", name, v.record(t, "late"))
		} else if !errors.Is(err, orchestrator.ErrExecutionChanged) && !errors.Is(err, orchestrator.ErrFenced) {
			t.Errorf("%s after Finish: %v, want ErrExecutionChanged or ErrFenced", name, err)
		}
	}
	if after := v.record(t, "late"); after.String() != landed.String() {
		t.Fatalf("record changed: %v -> %v", landed, after)
	}
}

// Finish whose reply is lost (the commit landed, the client saw an error):
// the retry finds its own final write and succeeds without a second write.
func TestFinishUnknownOutcome(t *testing.T) {
	t.Parallel()
	v, proxy := proxiedEnv(t)
	x, h := v.running(t, "lost-reply", `1`)
	proxy.Blackhole(false, true)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := x.Finish(ctx, json.RawMessage(`{"ok":true}`), nil)
	cancel()
	if !errors.Is(err, orchestrator.ErrUnavailable) {
		t.Fatalf("Finish with its reply lost: %v, want ErrUnavailable", err)
	}
	eventually(t, 5*time.Second, "the final write landed", func() bool {
		st := v.decode(t, "lost-reply")
		return st.RuntimeStatus == orchestrator.StatusCompleted
	})
	landed := v.record(t, "lost-reply")
	proxy.Heal()
	// Wait for the client to reconnect: a request on the closed connection
	// fails with ErrUnavailable, and Run (not Finish) retries those.
	eventually(t, 5*time.Second, "the client reconnected", func() bool {
		_, err := v.cli.Get(ctxT(t), "probe")
		return err == nil
	})
	if err := x.Finish(ctxT(t), json.RawMessage(`{"ok":true}`), nil); err != nil {
		t.Fatalf("retried Finish after an unknown outcome: %v, want nil", err)
	}
	if after := v.record(t, "lost-reply"); after.String() != landed.String() {
		t.Fatalf("the retry wrote again: %v -> %v", landed, after)
	}
	if h.rejects.Load() != 0 {
		t.Fatal("the retry was counted as fenced")
	}
	if o := v.get(t, v.keys.Owner("lost-reply")); o != nil {
		t.Fatalf("owners key left: %v", o)
	}
}
