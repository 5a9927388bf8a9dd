package orchestrator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// initialState is the state of an instance ID before the racing starts.
type initialState string

const (
	stAbsent     initialState = "absent"
	stRunning    initialState = "Running"
	stSuspended  initialState = "Suspended"
	stCompleted  initialState = "Completed"
	stFailed     initialState = "Failed"
	stTerminated initialState = "Terminated"
)

// setup brings id into state s and returns its execution ID ("" if absent).
func (v *env) setup(t testing.TB, id string, s initialState) string {
	t.Helper()
	switch s {
	case stAbsent:
		return ""
	case stRunning:
		x, _ := v.running(t, id, `{"initial":true}`)
		return x.Status().ExecutionID
	case stSuspended:
		r := v.start(t, id, `{"initial":true}`)
		if _, err := v.c.Suspend(ctxT(t), id, "setup"); err != nil {
			t.Fatal(err)
		}
		return r.Status.ExecutionID
	case stCompleted, stFailed:
		x, _ := v.running(t, id, `{"initial":true}`)
		var runErr error
		if s == stFailed {
			runErr = errors.New("setup failure")
		}
		if err := x.Finish(ctxT(t), json.RawMessage(`"done"`), runErr); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		return x.Status().ExecutionID
	case stTerminated:
		r := v.start(t, id, `{"initial":true}`)
		if _, err := v.c.Terminate(ctxT(t), id, "setup"); err != nil {
			t.Fatal(err)
		}
		return r.Status.ExecutionID
	}
	t.Fatalf("unknown state %q", s)
	return ""
}

func reuseAllows(p orchestrator.ReusePolicy, s initialState) bool {
	switch p {
	case orchestrator.ReuseAllow:
		return true
	case orchestrator.ReuseAllowFailedOnly:
		return s == stFailed || s == stTerminated
	}
	return false
}

// For every initial state x conflict policy x reuse policy, 20 concurrent
// starts of one ID from 4 separate etcd clients: the policies decide, and a
// start is all or nothing.
func TestStartPolicyMatrix(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	etcds := []*clientv3.Client{e.Client(), e.Client(), e.Client(), e.Client()}
	raw := e.Client()
	states := []initialState{stAbsent, stRunning, stSuspended, stCompleted, stFailed, stTerminated}
	conflicts := []orchestrator.ConflictPolicy{orchestrator.ConflictFail, orchestrator.ConflictUseExisting, orchestrator.ConflictTerminateExisting}
	reuses := []orchestrator.ReusePolicy{orchestrator.ReuseAllow, orchestrator.ReuseAllowFailedOnly, orchestrator.ReuseReject}
	for _, st := range states {
		for _, cp := range conflicts {
			for _, rp := range reuses {
				t.Run(fmt.Sprintf("%s/%s/%s", st, cp, rp), func(t *testing.T) {
					t.Parallel()
					testStartRace(t, e, etcds, raw, st, cp, rp)
				})
			}
		}
	}
}

func testStartRace(t *testing.T, e *leasetest.Etcd, etcds []*clientv3.Client, raw *clientv3.Client,
	st initialState, cp orchestrator.ConflictPolicy, rp orchestrator.ReusePolicy) {
	const n = 20
	v := envOn(t, e, etcds[0], raw)
	clients := make([]*orchestrator.Client, len(etcds))
	for i, cli := range etcds {
		clients[i] = orchestrator.NewClient(cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), Logger: quiet})
	}
	id := "job 1 ✓"
	initExec := v.setup(t, id, st)
	before, ownerBefore := v.record(t, id), v.get(t, v.keys.Owner(id))

	type result struct {
		r   *orchestrator.StartResult
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			r, err := clients[i%len(clients)].Start(ctxT(t), "fn", orchestrator.StartOptions{
				InstanceID: id, Input: json.RawMessage(fmt.Sprintf(`{"caller":%d}`, i)),
				ConflictPolicy: cp, ReusePolicy: rp,
			})
			results[i] = result{r, err}
		}()
	}
	close(gate)
	wg.Wait()

	active := st == stRunning || st == stSuspended
	terminal := st == stCompleted || st == stFailed || st == stTerminated
	allowed := st == stAbsent || (terminal && reuseAllows(rp, st)) || (active && cp == orchestrator.ConflictTerminateExisting)

	started := map[string]int{} // execution ID -> caller
	var winners []int
	for i, r := range results {
		if r.err == nil && r.r.Started {
			if _, dup := started[r.r.Status.ExecutionID]; dup {
				t.Fatalf("two starts got execution %s", r.r.Status.ExecutionID)
			}
			started[r.r.Status.ExecutionID] = i
			winners = append(winners, i)
			if r.r.Status.RuntimeStatus != orchestrator.StatusPending || r.r.Status.InstanceID != id || r.r.Status.Name != "fn" {
				t.Fatalf("caller %d started %+v", i, r.r.Status)
			}
			if !jsonEqual(t, r.r.Status.Input, fmt.Sprintf(`{"caller":%d}`, i)) {
				t.Fatalf("caller %d started with input %s", i, r.r.Status.Input)
			}
		}
	}
	after := v.record(t, id)
	final := v.decode(t, id)

	if !allowed {
		if len(started) != 0 {
			t.Fatalf("%d starts succeeded, want none", len(started))
		}
		for i, r := range results {
			if active && cp == orchestrator.ConflictUseExisting {
				if r.err != nil || r.r.Started || r.r.Status.ExecutionID != initExec {
					t.Fatalf("caller %d: %+v, %v; want the existing execution %s", i, r.r, r.err, initExec)
				}
				if string(r.r.Status.RuntimeStatus) != string(st) {
					t.Fatalf("caller %d: existing status %s, want %s", i, r.r.Status.RuntimeStatus, st)
				}
				if st == stRunning && (r.r.Status.Node != "test-node" || r.r.Status.FencingToken == 0) {
					t.Fatalf("caller %d: existing instance without its holder: node %q token %d", i, r.r.Status.Node, r.r.Status.FencingToken)
				}
				continue
			}
			var ee *orchestrator.ExistsError
			if !errors.As(r.err, &ee) || !errors.Is(r.err, orchestrator.ErrInstanceExists) {
				t.Fatalf("caller %d: %v (%T), want *ExistsError", i, r.err, r.err)
			}
			if ee.Status.ExecutionID != initExec || string(ee.Status.RuntimeStatus) != string(st) {
				t.Fatalf("caller %d: ExistsError for %s %s, want %s %s", i, ee.Status.ExecutionID, ee.Status.RuntimeStatus, initExec, st)
			}
			wantReason := "conflictPolicy"
			if terminal {
				wantReason = "reusePolicy"
			}
			if !strings.Contains(ee.Reason, wantReason) {
				t.Fatalf("caller %d: reason %q, want %s", i, ee.Reason, wantReason)
			}
			if ee.Error() != "An instance with ID '"+id+"' already exists." {
				t.Fatalf("caller %d: message %q", i, ee.Error())
			}
		}
		if after.String() != before.String() {
			t.Fatalf("refused starts changed the record: %v -> %v", before, after)
		}
		if ownerAfter := v.get(t, v.keys.Owner(id)); ownerAfter.String() != ownerBefore.String() {
			t.Fatalf("refused starts changed the owners key: %v -> %v", ownerBefore, ownerAfter)
		}
		return
	}

	if _, ok := started[final.ExecutionID]; !ok {
		t.Fatalf("final record's execution %s is none of the %d started", final.ExecutionID, len(started))
	}
	if final.RuntimeStatus != orchestrator.StatusPending {
		t.Fatalf("final record is %s", final.RuntimeStatus)
	}
	if !jsonEqual(t, final.Input, fmt.Sprintf(`{"caller":%d}`, started[final.ExecutionID])) {
		t.Fatalf("final record's input %s is not its starter's", final.Input)
	}
	if st == stRunning {
		// The old holder releases its owners key when it sees the change;
		// until then nobody can take the new execution.
		if o := v.get(t, v.keys.Owner(id)); o.String() != ownerBefore.String() {
			t.Fatalf("terminateExisting changed the old holder's owners key: %v -> %v", ownerBefore, o)
		}
	}

	switch cp {
	case orchestrator.ConflictFail, orchestrator.ConflictUseExisting:
		if len(winners) != 1 {
			t.Fatalf("%d starts succeeded, want exactly 1", len(winners))
		}
		w := results[winners[0]].r
		if w.Replaced != initExec {
			t.Fatalf("winner replaced %q, want %q", w.Replaced, initExec)
		}
		for i, r := range results {
			if i == winners[0] {
				continue
			}
			if cp == orchestrator.ConflictFail {
				var ee *orchestrator.ExistsError
				if !errors.As(r.err, &ee) {
					t.Fatalf("caller %d: %v, %+v; want *ExistsError", i, r.err, r.r)
				}
				if ee.Status.ExecutionID != w.Status.ExecutionID || !ee.Status.RuntimeStatus.Active() {
					t.Fatalf("caller %d: refused by %s %s, want the winner %s", i, ee.Status.ExecutionID, ee.Status.RuntimeStatus, w.Status.ExecutionID)
				}
				continue
			}
			if r.err != nil || r.r.Started || r.r.Status.ExecutionID != w.Status.ExecutionID {
				t.Fatalf("caller %d: %+v, %v; want the winner's execution %s", i, r.r, r.err, w.Status.ExecutionID)
			}
			if !jsonEqual(t, r.r.Status.Input, fmt.Sprintf(`{"caller":%d}`, winners[0])) {
				t.Fatalf("caller %d: existing instance's input %s", i, r.r.Status.Input)
			}
		}
	case orchestrator.ConflictTerminateExisting:
		for i, r := range results {
			if r.err != nil || !r.r.Started {
				t.Fatalf("caller %d with terminateExisting: %+v, %v; want started", i, r.r, r.err)
			}
		}
		// The starts form one chain of replacements: from the initial
		// execution (or nothing) through every started one to the final.
		replaced := map[string]bool{}
		for _, i := range winners {
			rep := results[i].r.Replaced
			if rep == "" {
				continue
			}
			if replaced[rep] {
				t.Fatalf("execution %s replaced twice", rep)
			}
			replaced[rep] = true
		}
		want := map[string]bool{}
		if initExec != "" {
			want[initExec] = true
		}
		for x := range started {
			if x != final.ExecutionID {
				want[x] = true
			}
		}
		if fmt.Sprint(replaced) != fmt.Sprint(want) {
			t.Fatalf("replaced %v, want every execution but the final one: %v", replaced, want)
		}
	}
}

// reusePolicy=ignore: a start of a terminal ID in one of the ignored
// statuses writes nothing and returns the existing execution, also when 64
// starts race from 4 clients; a terminal status not listed is replaced by
// exactly one of the racing starts; bad IgnoreStatuses are refused.
func TestStartReuseIgnore(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	etcds := []*clientv3.Client{e.Client(), e.Client(), e.Client(), e.Client()}
	v := envOn(t, e, etcds[0], e.Client())
	clients := make([]*orchestrator.Client, len(etcds))
	for i, cli := range etcds {
		clients[i] = orchestrator.NewClient(cli, orchestrator.ClientConfig{Prefix: v.keys.Prefix(), Logger: quiet})
	}
	race := func(id string, ignore []orchestrator.RuntimeStatus) (started, kept int, errs []error, execs map[string]bool) {
		const n = 64
		rs := make([]*orchestrator.StartResult, n)
		es := make([]error, n)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				rs[i], es[i] = clients[i%len(clients)].Start(ctxT(t), "fn", orchestrator.StartOptions{
					InstanceID: id, Input: json.RawMessage(fmt.Sprintf(`{"caller":%d}`, i)),
					ReusePolicy: orchestrator.ReuseIgnore, IgnoreStatuses: ignore,
				})
			}()
		}
		close(gate)
		wg.Wait()
		execs = map[string]bool{}
		for i := range rs {
			switch {
			case es[i] != nil:
				errs = append(errs, es[i])
			case rs[i].Started:
				started++
				execs[rs[i].Status.ExecutionID] = true
			default:
				kept++
				execs[rs[i].Status.ExecutionID] = true
			}
		}
		return started, kept, errs, execs
	}

	for _, s := range []initialState{stCompleted, stFailed, stTerminated} {
		id := "ignore-" + string(s)
		exec := v.setup(t, id, s)
		before := v.record(t, id)
		started, kept, errs, execs := race(id, nil)
		if started != 0 || kept != 64 || len(errs) != 0 || len(execs) != 1 || !execs[exec] {
			t.Fatalf("%s: started %d, kept %d, errors %v, executions %v; want 64 answers naming %s", s, started, kept, errs, execs, exec)
		}
		if after := v.record(t, id); after.String() != before.String() {
			t.Fatalf("%s: an ignored start wrote the record: %s -> %s", s, before, after)
		}
		r, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: id, ReusePolicy: orchestrator.ReuseIgnore})
		if err != nil || r.Started || r.Status.ExecutionID != exec || r.Status.RuntimeStatus != orchestrator.RuntimeStatus(s) ||
			!jsonEqual(t, r.Status.Input, `{"initial":true}`) {
			t.Fatalf("%s: ignored start = %+v, %v; want the existing instance with its input", s, r, err)
		}
	}

	// Terminated is not in the list: one start replaces it, the others
	// find the new execution active and fail (conflictPolicy=fail).
	id := "ignore-unlisted"
	exec := v.setup(t, id, stTerminated)
	started, kept, errs, execs := race(id, []orchestrator.RuntimeStatus{orchestrator.StatusCompleted, orchestrator.StatusFailed})
	if started != 1 || kept != 0 || len(errs) != 63 || execs[exec] {
		t.Fatalf("unlisted: started %d, kept %d, %d errors, executions %v; want one new execution", started, kept, len(errs), execs)
	}
	for _, err := range errs {
		if !errors.Is(err, orchestrator.ErrInstanceExists) {
			t.Fatalf("unlisted: %v, want ErrInstanceExists", err)
		}
	}

	// An absent ID starts normally.
	if r, err := v.c.Start(ctxT(t), "fn", orchestrator.StartOptions{InstanceID: "ignore-new", ReusePolicy: orchestrator.ReuseIgnore}); err != nil || !r.Started {
		t.Fatalf("new ID: %+v, %v", r, err)
	}

	for _, bad := range []orchestrator.StartOptions{
		{InstanceID: "ignore-bad", ReusePolicy: orchestrator.ReuseIgnore, IgnoreStatuses: []orchestrator.RuntimeStatus{orchestrator.StatusRunning}},
		{InstanceID: "ignore-bad", ReusePolicy: orchestrator.ReuseAllow, IgnoreStatuses: []orchestrator.RuntimeStatus{orchestrator.StatusCompleted}},
	} {
		var ve *orchestrator.ValidationError
		if _, err := v.c.Start(ctxT(t), "fn", bad); !errors.As(err, &ve) || ve.Field != "ignoreStatuses" {
			t.Fatalf("Start %+v: %v, want an ignoreStatuses ValidationError", bad, err)
		}
		if v.record(t, "ignore-bad") != nil {
			t.Fatal("a refused start wrote")
		}
	}
}
