package orchestrator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// StartIf: a failing caller compare refuses the start with
// ErrConditionFailed and writes nothing; a holding one commits the record
// and the caller's ops in one revision, on every path (absent, terminal,
// terminateExisting).
func TestStartIf(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	guard, side := v.keys.Prefix()+"guard", v.keys.Prefix()+"side"
	if _, err := v.raw.Put(ctxT(t), guard, "no"); err != nil {
		t.Fatal(err)
	}
	guardIs := func(val string) []clientv3.Cmp {
		return []clientv3.Cmp{clientv3.Compare(clientv3.Value(guard), "=", val)}
	}
	var seen *orchestrator.Record
	ops := func(rec *orchestrator.Record) []clientv3.Op {
		seen = rec
		return []clientv3.Op{clientv3.OpPut(side, rec.ExecutionID)}
	}
	opts := orchestrator.StartOptions{InstanceID: "s", Input: json.RawMessage(`{"n":1}`)}

	// Absent record, caller's compare fails.
	before := v.prefixCount(t)
	if _, err := v.c.StartIf(ctxT(t), "fn", opts, guardIs("yes"), ops); !errors.Is(err, orchestrator.ErrConditionFailed) {
		t.Fatalf("failing compare on an absent record: %v, want ErrConditionFailed", err)
	}
	if n := v.prefixCount(t); n != before {
		t.Fatalf("a refused StartIf wrote %d keys", n-before)
	}

	// Caller's compare holds: record and op land in the same revision.
	r, err := v.c.StartIf(ctxT(t), "fn", opts, guardIs("no"), ops)
	if err != nil || !r.Started {
		t.Fatalf("StartIf: %+v, %v", r, err)
	}
	rec, sk := v.record(t, "s"), v.get(t, side)
	if sk == nil || sk.Value != r.Status.ExecutionID || seen.ExecutionID != r.Status.ExecutionID || sk.ModRevision != rec.ModRevision {
		t.Fatalf("ops not applied with the start: record %s, side %s, ops saw %+v", rec, sk, seen)
	}
	// The result carries the commit's revision and the responses of the caller's ops.
	if r.Revision != rec.ModRevision || len(r.Extra) != 1 || r.Extra[0].GetResponsePut() == nil {
		t.Fatalf("StartResult revision %d (record at %d), extra %v: want the commit's revision and the one put's response", r.Revision, rec.ModRevision, r.Extra)
	}

	// Active: the policy refuses before the caller's compares matter.
	if _, err := v.c.StartIf(ctxT(t), "fn", opts, guardIs("no"), ops); !errors.Is(err, orchestrator.ErrInstanceExists) {
		t.Fatalf("active instance: %v, want ErrInstanceExists", err)
	}

	// terminateExisting with a failing compare leaves the running instance.
	term := opts
	term.ConflictPolicy = orchestrator.ConflictTerminateExisting
	if _, err := v.c.StartIf(ctxT(t), "fn", term, guardIs("yes"), ops); !errors.Is(err, orchestrator.ErrConditionFailed) {
		t.Fatalf("terminateExisting, failing compare: %v", err)
	}
	if after := v.record(t, "s"); after.String() != rec.String() {
		t.Fatal("a refused terminateExisting changed the record")
	}

	// Terminal record, reuse allowed: the compare decides again.
	if _, err := v.c.Terminate(ctxT(t), "s", "done"); err != nil {
		t.Fatal(err)
	}
	terminal := v.record(t, "s")
	if _, err := v.c.StartIf(ctxT(t), "fn", opts, guardIs("yes"), ops); !errors.Is(err, orchestrator.ErrConditionFailed) {
		t.Fatalf("failing compare on a terminal record: %v", err)
	}
	if v.record(t, "s").String() != terminal.String() || v.get(t, side).String() != sk.String() {
		t.Fatal("a refused StartIf over a terminal record wrote something")
	}
	r2, err := v.c.StartIf(ctxT(t), "fn", opts, guardIs("no"), ops)
	if err != nil || r2.Replaced != r.Status.ExecutionID {
		t.Fatalf("StartIf over a terminal record: %+v, %v", r2, err)
	}
	if len(r2.Extra) != 1 || r2.Extra[0].GetResponsePut() == nil {
		t.Fatalf("replacing StartIf: extra %v, want the put's response after the replace's own ops", r2.Extra)
	}
	if rec2, sk2 := v.record(t, "s"), v.get(t, side); sk2.Value != r2.Status.ExecutionID || sk2.ModRevision != rec2.ModRevision {
		t.Fatalf("replacing start and ops not atomic: record %s, side %s", rec2, sk2)
	}

	// Start is StartIf without conditions: unchanged behaviour.
	if _, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "plain"}); err != nil {
		t.Fatal(err)
	}
}

// ClaimTick handles each tick once: started, then skipped while active,
// taken for a tick already claimed or older than the last one (a restarted
// node, a slow clock), started again once the instance is terminal.
func TestClaimTick(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tick := func(at time.Time, node string) orchestrator.Tick {
		return orchestrator.Tick{Schedule: "nightly", Function: "report", InstanceID: "nightly-run",
			Input: json.RawMessage(`{"full":true}`), At: at, Node: node}
	}
	claim := func(at time.Time, want orchestrator.TickResult) *orchestrator.TickClaim {
		t.Helper()
		c, err := v.c.ClaimTick(ctxT(t), tick(at, "n1"))
		if err != nil || c.Result != want {
			t.Fatalf("claim %s: %+v, %v; want %s", at.Format(time.TimeOnly), c, err, want)
		}
		return c
	}
	first := claim(t0, orchestrator.TickStarted)
	st := v.decode(t, "nightly-run")
	if st.ExecutionID != first.Status.ExecutionID || st.Name != "report" || !jsonEqual(t, st.Input, `{"full":true}`) {
		t.Fatalf("started record %+v", st)
	}
	state := v.get(t, v.keys.Schedule("nightly"))
	if state == nil || state.ModRevision != v.record(t, "nightly-run").ModRevision {
		t.Fatalf("state %s not written with the start", state)
	}
	var fields map[string]any
	_ = json.Unmarshal([]byte(state.Value), &fields)
	if fields["lastTick"] != "2030-01-02T03:04:05Z" || fields["result"] != "started" || fields["executionId"] != st.ExecutionID ||
		fields["instanceId"] != "nightly-run" || fields["node"] != "n1" {
		t.Fatalf("state value %s", state.Value)
	}

	claim(t0, orchestrator.TickTaken)                   // the same tick again
	claim(t0.Add(-time.Minute), orchestrator.TickTaken) // an older tick
	sk := claim(t0.Add(time.Second), orchestrator.TickSkipped)
	if sk.Status.ExecutionID != st.ExecutionID || sk.State.ExecutionID != st.ExecutionID {
		t.Fatalf("skip %+v does not name the active execution", sk)
	}
	if now := v.decode(t, "nightly-run"); now.ExecutionID != st.ExecutionID || now.RuntimeStatus != orchestrator.StatusPending {
		t.Fatalf("a skip changed the record: %+v", now)
	}
	claim(t0.Add(time.Second), orchestrator.TickTaken)
	if s, err := v.c.ScheduleState(ctxT(t), "nightly"); err != nil || !s.LastTick.Equal(t0.Add(time.Second)) || s.Result != orchestrator.TickSkipped {
		t.Fatalf("ScheduleState: %+v, %v", s, err)
	}
	if _, err := v.c.Terminate(ctxT(t), "nightly-run", "done"); err != nil {
		t.Fatal(err)
	}
	again := claim(t0.Add(2*time.Second), orchestrator.TickStarted)
	if again.Status.ExecutionID == st.ExecutionID {
		t.Fatal("a new tick reused the execution ID")
	}
	if s, err := v.c.ScheduleState(ctxT(t), "never"); s != nil || err != nil {
		t.Fatalf("state of a schedule never claimed: %+v, %v", s, err)
	}
}

// Many claimers of one tick, on separate connections: exactly one starts
// it, and exactly one skips the next while the instance is active.
func TestClaimTickRace(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	var clients []*orchestrator.Client
	for i := 0; i < 4; i++ {
		clients = append(clients, orchestrator.NewClient(v.e.Client(), orchestrator.ClientConfig{Prefix: v.keys.Prefix(), Logger: quiet}))
	}
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for step, want := range []orchestrator.TickResult{orchestrator.TickStarted, orchestrator.TickSkipped} {
		at := t0.Add(time.Duration(step) * time.Second)
		const racers = 24
		results := make(chan orchestrator.TickResult, racers)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := 0; i < racers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-gate
				c, err := clients[i%len(clients)].ClaimTick(ctxT(t), orchestrator.Tick{
					Schedule: "race", Function: "fn", InstanceID: "race", At: at, Node: fmt.Sprint("n", i)})
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				results <- c.Result
			}(i)
		}
		close(gate)
		wg.Wait()
		close(results)
		count := map[orchestrator.TickResult]int{}
		for r := range results {
			count[r]++
		}
		t.Logf("tick %d: %v", step, count)
		if count[want] != 1 || count[orchestrator.TickTaken] != racers-1 {
			t.Fatalf("tick %d: %v; want one %s and %d taken", step, count, want, racers-1)
		}
	}
}
