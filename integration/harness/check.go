package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Violation is one broken promise found in a recorded history.
type Violation struct {
	Kind   string
	ID     string
	Detail string
}

func (v Violation) String() string { return fmt.Sprintf("%s [%s]: %s", v.Kind, v.ID, v.Detail) }

// CheckOptions say what a scenario may show.
type CheckOptions struct {
	// StrictEffects: no effect of an older holder may reach the sink after
	// an effect of a newer holder of the same instance. It holds when every
	// old holder stopped by itself (self-fencing, drain) or was killed with
	// SIGKILL (its exec supervisor takes the program's whole tree down with
	// it); it does not for a node paused with SIGSTOP (a documented
	// non-guarantee).
	StrictEffects bool
	// PorcupineTimeout bounds the linearizability check. Defaults to 30s.
	PorcupineTimeout time.Duration
	// NoEffects are functions that post no effects to the sink (the demo
	// orchestrations): their executions get every check but those of
	// soloist-effect's output and effects.
	NoEffects []string
}

// Result is what a scenario's history shows.
type Result struct {
	Ops          int // client operations sent
	Acked        int // starts acknowledged with 202
	Executions   int // executions committed in etcd
	Duplicates   int // starts that replaced an active execution without terminateExisting
	Lost         int // acknowledged executions that never reached a terminal status
	StaleEffects int // effects of an older holder of an execution after a newer holder's (refused by the sink)
	StaleCross   int // effects of a terminated or replaced execution after the next one's (refused by the sink)
	Reruns       int // executions whose program ran under more than one token
	Holdings     int // owners keys created
	Metrics      map[string]float64
	Takeovers    []time.Duration
	Handoffs     []time.Duration
	Porcupine    porcupine.CheckResult
	Violations   []Violation
}

type execInfo struct {
	id, execID, req string
	op              *Op
	createdRev      int64
	prevActive      bool
	tokens          []int64
	ownerEnd        map[int64]int64 // token -> revision its owners key went away (0 while held)
	final           string          // last status
	replaced        bool
	finishTok       int64
}

type ownerInfo struct {
	token int64
	exec  string
	node  string
}

// Check runs every check on the scenario's recorded history.
func (e *Env) Check(hist *History, opts CheckOptions) *Result {
	if err := e.Rec.CatchUp(20 * time.Second); err != nil {
		e.T.Errorf("history incomplete: %v", err)
	}
	if err := e.Rec.Verify(30 * time.Second); err != nil {
		e.T.Errorf("durability: %v", err)
	}
	effects := e.Sink.Effects()
	r, info := Analyze(Input{Keys: e.Keys, Ops: hist.Ops(), Effects: effects, KVs: e.Rec.KVs()}, opts)
	r.Metrics = e.Metrics()
	if r.Porcupine == porcupine.Illegal {
		path := filepath.Join(artifactDir(e), "porcupine.html")
		if err := porcupine.VisualizePath(instanceModel.ToModel(), info, path); err == nil {
			e.T.Logf("porcupine visualization of the illegal history: %s", path)
		}
	}
	e.computeTakeovers(r, effects)
	return r
}

// payloadOf returns the instance ID of a payload key ({prefix}v1/payloads/{id}/{name}).
func payloadOf(keys orchestrator.Keys, key, name string) (string, bool) {
	rest, ok := orchestrator.IDFrom(keys.Prefix()+"v1/payloads/", key)
	if !ok || !strings.HasSuffix(rest, "/"+name) {
		return "", false
	}
	id := strings.TrimSuffix(rest, "/"+name)
	return id, key == keys.PayloadPrefix(id)+name
}

// Input is a recorded history: the clients' operations, the sink's
// effects and etcd's changes.
type Input struct {
	Keys    orchestrator.Keys
	Ops     []Op
	Effects []Effect
	KVs     []KV
}

// Analyze checks a recorded history (see the package documentation of
// integration for the list of checks).
func Analyze(in Input, opts CheckOptions) (*Result, porcupine.LinearizationInfo) {
	if opts.PorcupineTimeout == 0 {
		opts.PorcupineTimeout = 30 * time.Second
	}
	r := &Result{}
	ops, effects, kvs, keys := in.Ops, in.Effects, in.KVs, in.Keys
	opByReq := map[string]*Op{}
	for i := range ops {
		op := &ops[i]
		if op.Outcome != NoOp || op.Kind == "start" {
			r.Ops++
		}
		if op.Kind == "start" {
			opByReq[op.Req] = op
			if op.Outcome == Started {
				r.Acked++
			}
		}
	}
	bad := func(kind, id, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: kind, ID: id, Detail: fmt.Sprintf(format, args...)})
	}

	recs := map[string]*orchestrator.Status{}
	owners := map[string]*ownerInfo{}
	maxTok := map[string]int64{}
	execs := map[string]*execInfo{} // by execution ID
	var execOrder []*execInfo
	var internal []porcupine.Operation
	internalClient := 1000

	startCall := func(x *execInfo) time.Duration {
		if x != nil && x.op != nil {
			return x.op.Call
		}
		return 0
	}
	// Effects by execution and token, for lower bounds and checks.
	type et struct {
		exec  string
		token int64
	}
	endAt := map[et]time.Duration{}
	for _, ef := range effects {
		if ef.Kind == "end" || ef.Kind == "fail" {
			if _, ok := endAt[et{ef.Execution, ef.Token}]; !ok {
				endAt[et{ef.Execution, ef.Token}] = ef.At
			}
		}
	}

	for i := 0; i < len(kvs); {
		rev := kvs[i].Rev
		j := i
		for j < len(kvs) && kvs[j].Rev == rev {
			j++
		}
		group := kvs[i:j]
		i = j
		before := map[string]ownerInfo{}
		for id, o := range owners {
			before[id] = *o
		}
		newExec := map[string]bool{}
		finished := map[string]bool{}
		// A record's input and output are keys of their own, written in the
		// same transaction as the record that needs them.
		inputs, outputs := map[string]json.RawMessage{}, map[string]json.RawMessage{}
		for _, kv := range group {
			if kv.Delete {
				continue
			}
			if id, ok := payloadOf(keys, kv.Key, "input"); ok {
				inputs[id] = kv.Value
			}
			if id, ok := payloadOf(keys, kv.Key, "output"); ok {
				outputs[id] = kv.Value
			}
		}
		for _, kv := range group {
			if id, ok := orchestrator.IDFrom(keys.Instances(), kv.Key); ok && !kv.Delete {
				var st orchestrator.Status
				if err := json.Unmarshal(kv.Value, &st); err != nil {
					bad("corrupt-record", id, "revision %d: %v", rev, err)
					continue
				}
				if v, ok := inputs[id]; ok {
					st.Input = v
				} else if len(st.Input) == 0 && recs[id] != nil && recs[id].ExecutionID == st.ExecutionID {
					st.Input = recs[id].Input
				}
				if v, ok := outputs[id]; ok {
					st.Output = v
				}
				var in EffectInput
				_ = json.Unmarshal(st.Input, &in)
				prev := recs[id]
				recs[id] = &st
				if prev == nil || prev.ExecutionID != st.ExecutionID {
					newExec[id] = true
					x := &execInfo{id: id, execID: st.ExecutionID, req: in.Req, op: opByReq[in.Req], createdRev: rev,
						ownerEnd: map[int64]int64{}, final: string(st.RuntimeStatus)}
					execs[st.ExecutionID] = x
					execOrder = append(execOrder, x)
					if prev != nil {
						if px := execs[prev.ExecutionID]; px != nil && prev.RuntimeStatus.Active() {
							px.replaced = true
						}
					}
					switch {
					case x.op == nil:
						bad("unknown-start", id, "execution %s (req %q) at revision %d was created by no recorded start", st.ExecutionID, in.Req, rev)
					case x.op.Outcome == NoOp && strings.Contains(x.op.Err, "not committed"):
						// The node said the start did not commit, and it did:
						// a client that retries makes a second execution.
						bad("not-committed-but-committed", id, "start %s was answered %d %q (from %s at %s) but committed execution %s at revision %d",
							in.Req, x.op.Code, x.op.Err, x.op.Node, Stamp(x.op.Return), st.ExecutionID, rev)
					case x.op.Outcome != Started && x.op.Outcome != Unknown:
						bad("refused-start-committed", id, "start %s answered %s (%d) but committed execution %s at revision %d", in.Req, x.op.Outcome, x.op.Code, st.ExecutionID, rev)
					}
					if prev != nil && prev.RuntimeStatus.Active() {
						x.prevActive = true
						if x.op != nil && cpOf(x.op.CP) != "terminateExisting" {
							r.Duplicates++
							bad("duplicate-start", id, "start %s (conflictPolicy=%s) replaced active execution %s (%s) at revision %d",
								in.Req, cpOf(x.op.CP), prev.ExecutionID, prev.RuntimeStatus, rev)
						}
					}
					if prev != nil && !prev.RuntimeStatus.Active() && x.op != nil && !reuseAllows(x.op.RP, string(prev.RuntimeStatus)) {
						bad("reuse-policy", id, "start %s (reusePolicy=%s) reused a %s ID at revision %d", in.Req, x.op.RP, prev.RuntimeStatus, rev)
					}
					if st.RuntimeStatus != orchestrator.StatusPending || st.FencingToken != 0 {
						bad("bad-start-record", id, "new execution %s is %s with token %d", st.ExecutionID, st.RuntimeStatus, st.FencingToken)
					}
					continue
				}
				x := execs[st.ExecutionID]
				x.final = string(st.RuntimeStatus)
				if prev.RuntimeStatus.Terminal() {
					bad("write-after-terminal", id, "execution %s was %s and was written again (%s) at revision %d", st.ExecutionID, prev.RuntimeStatus, st.RuntimeStatus, rev)
				}
				terminalByHolder := st.RuntimeStatus == orchestrator.StatusCompleted || st.RuntimeStatus == orchestrator.StatusFailed
				holderWrite := st.FencingToken != prev.FencingToken || terminalByHolder ||
					(prev.RuntimeStatus == orchestrator.StatusPending && st.RuntimeStatus == orchestrator.StatusRunning)
				if st.RuntimeStatus == orchestrator.StatusTerminated {
					if st.FencingToken != prev.FencingToken || !prev.RuntimeStatus.Active() {
						bad("bad-terminate", id, "revision %d: Terminated with token %d after %s with token %d", rev, st.FencingToken, prev.RuntimeStatus, prev.FencingToken)
					}
					continue
				}
				if !holderWrite {
					continue
				}
				o, held := before[id]
				if !held || o.token != st.FencingToken || o.exec != st.ExecutionID {
					bad("unfenced-write", id, "revision %d wrote %s with token %d while the owners key was %+v (held=%v)", rev, st.RuntimeStatus, st.FencingToken, o, held)
				}
				if st.FencingToken < maxTok[id] {
					bad("token-regressed", id, "revision %d wrote with token %d after token %d had written", rev, st.FencingToken, maxTok[id])
				}
				maxTok[id] = max(maxTok[id], st.FencingToken)
				if terminalByHolder {
					finished[id] = true
					x.finishTok = st.FencingToken
					if st.RuntimeStatus == orchestrator.StatusCompleted && !slices.Contains(opts.NoEffects, st.Name) {
						var out struct {
							Token int64 `json:"token"`
						}
						if json.Unmarshal(st.Output, &out) != nil || out.Token != st.FencingToken {
							bad("output-token", id, "execution %s completed by token %d with output %s", st.ExecutionID, st.FencingToken, st.Output)
						}
						if _, ok := endAt[et{st.ExecutionID, st.FencingToken}]; !ok {
							bad("completed-without-effect", id, "execution %s completed by token %d, whose program never reported its end", st.ExecutionID, st.FencingToken)
						}
					}
					lo := startCall(x)
					if t, ok := endAt[et{st.ExecutionID, st.FencingToken}]; ok && t > lo {
						lo = t
					}
					internal = append(internal, porcupineOp(internalClient, mInput{Kind: "finish", ID: id, Req: x.req, Token: st.FencingToken, Status: string(st.RuntimeStatus)},
						mOutput{}, lo, kv.At, false))
				} else {
					internal = append(internal, porcupineOp(internalClient, mInput{Kind: "write", ID: id, Req: x.req, Token: st.FencingToken},
						mOutput{}, startCall(x), kv.At, false))
				}
				continue
			}
			if id, ok := orchestrator.IDFrom(keys.Owners(), kv.Key); ok {
				if kv.Delete {
					o := owners[id]
					delete(owners, id)
					if o == nil {
						continue
					}
					if x := execs[o.exec]; x != nil {
						x.ownerEnd[o.token] = rev
						if !newExec[id] && !finished[id] {
							internal = append(internal, porcupineOp(internalClient, mInput{Kind: "unhold", ID: id, Req: x.req, Token: o.token},
								mOutput{}, startCall(x), kv.At, false))
						}
					}
					continue
				}
				var ow orchestrator.Owner
				_ = json.Unmarshal(kv.Value, &ow)
				if kv.CreateRev != rev {
					continue // a rewrite of the same key
				}
				r.Holdings++
				owners[id] = &ownerInfo{token: kv.CreateRev, exec: ow.ExecutionID, node: ow.Node}
				rec := recs[id]
				if rec == nil || rec.ExecutionID != ow.ExecutionID || !rec.RuntimeStatus.Runnable() {
					bad("bad-acquire", id, "owners key for execution %s created at revision %d over record %+v", ow.ExecutionID, rev, rec)
				}
				x := execs[ow.ExecutionID]
				if x == nil {
					continue
				}
				x.tokens = append(x.tokens, kv.CreateRev)
				x.ownerEnd[kv.CreateRev] = 0
				internal = append(internal, porcupineOp(internalClient, mInput{Kind: "acquire", ID: id, Req: x.req, Token: kv.CreateRev},
					mOutput{}, startCall(x), kv.At, false))
			}
		}
		for id := range finished {
			if o, still := owners[id]; still && o.token == recs[id].FencingToken {
				bad("finish-without-release", id, "revision %d finished the execution but left owners key %d", rev, o.token)
			}
		}
	}
	r.Executions = len(execOrder)

	// Acknowledged starts are durable and end.
	execByReq := map[string]*execInfo{}
	for _, x := range execOrder {
		execByReq[x.req] = x
	}
	for _, op := range ops {
		if op.Kind == "start" && op.Outcome == Started && execByReq[op.Req] == nil {
			r.Lost++
			bad("lost-ack", op.ID, "start %s was acknowledged (202 from %s at %s) but no such execution was ever committed", op.Req, op.Node, Stamp(op.Return))
		}
	}
	for _, x := range execOrder {
		if !x.replaced && statusClass(x.final) == active {
			r.Lost++
			bad("not-terminal", x.id, "execution %s (req %s) is still %s after the settle time", x.execID, x.req, x.final)
		}
	}

	// Effects.
	type key struct {
		exec  string
		token int64
	}
	ends := map[key]int{}
	tokensOf := map[string]map[int64]bool{}
	lastOld := map[string]Effect{} // per instance: latest effect seen so far
	for _, ef := range effects {
		x := execs[ef.Execution]
		if x == nil {
			bad("effect-unknown-execution", ef.Instance, "effect %s of execution %s token %d has no execution in etcd", ef.Kind, ef.Execution, ef.Token)
			continue
		}
		if _, held := x.ownerEnd[ef.Token]; !held {
			bad("effect-from-non-holder", ef.Instance, "effect %s of execution %s carries token %d, which never held it (holdings %v)", ef.Kind, ef.Execution, ef.Token, x.tokens)
		}
		if tokensOf[ef.Execution] == nil {
			tokensOf[ef.Execution] = map[int64]bool{}
		}
		tokensOf[ef.Execution][ef.Token] = true
		if ef.Kind == "end" {
			ends[key{ef.Execution, ef.Token}]++
			if ends[key{ef.Execution, ef.Token}] == 2 {
				bad("completed-twice", ef.Instance, "execution %s ran to its end twice under token %d", ef.Execution, ef.Token)
			}
		}
		switch prev := lastOld[ef.Instance]; {
		case ef.Accepted:
			lastOld[ef.Instance] = ef
		case prev.Execution == ef.Execution:
			// An older holder of this execution acted after a newer one.
			r.StaleEffects++
			if opts.StrictEffects {
				bad("stale-effect", ef.Instance, "effect %s/%d of token %d (execution %s, pid %d) arrived at %s after token %d's effect at %s",
					ef.Kind, ef.Step, ef.Token, ef.Execution, ef.PID, Stamp(ef.At), prev.Token, Stamp(prev.At))
			}
		default:
			// A terminated or replaced execution's program, not yet
			// killed, after the next execution began.
			r.StaleCross++
		}
	}
	for exec, toks := range tokensOf {
		if len(toks) < 2 {
			continue
		}
		r.Reruns++
		x := execs[exec]
		var ts []int64
		for t := range toks {
			ts = append(ts, t)
		}
		sort.Slice(ts, func(a, b int) bool { return ts[a] < ts[b] })
		for k := 1; k < len(ts); k++ {
			if end := x.ownerEnd[ts[k-1]]; end == 0 || end > ts[k] {
				bad("rerun-without-takeover", x.id, "execution %s ran under token %d and %d, but holding %d ended at revision %d", exec, ts[k-1], ts[k], ts[k-1], end)
			}
		}
	}

	// Linearizability of the client-visible history with the holders'
	// steps, per instance ID.
	var hops []porcupine.Operation
	for _, op := range ops {
		if op.Outcome == NoOp {
			continue
		}
		in := mInput{Kind: op.Kind, ID: op.ID, CP: op.CP, RP: op.RP, Req: op.Req}
		out := mOutput{Outcome: op.Outcome, Status: statusClass(op.Status), ExecReq: op.ExecReq, Holder: op.Holder != "", Token: op.Token}
		hops = append(hops, porcupineOp(op.Client, in, out, op.Call, op.Return, op.Outcome == Unknown))
	}
	hops = append(hops, internal...)
	model := instanceModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, hops, opts.PorcupineTimeout)
	r.Porcupine = res
	if res == porcupine.Illegal {
		bad("not-linearizable", "", "the client operations and the holders' steps are not linearizable under the instance model")
	}
	return r, info
}

// artifactDir is where a failing scenario leaves files: $SOLOIST_INTEGRATION_ARTIFACTS
// if set, else the scenario's temp dir (removed after the test).
func artifactDir(e *Env) string {
	if d := os.Getenv("SOLOIST_INTEGRATION_ARTIFACTS"); d != "" {
		d = filepath.Join(d, strings.ReplaceAll(e.T.Name(), "/", "_"))
		if os.MkdirAll(d, 0o755) == nil {
			return d
		}
	}
	return e.Dir
}

// Watch is a holding the scenario took away (killed, paused, cut, or
// drained its node) at a time: the check measures how long until a new
// holder of the same execution ran it.
type Watch struct {
	At      time.Duration
	Holding Holding
	Handoff bool
}

// WatchTakeover notes that the holdings of node were taken away at at.
func (e *Env) WatchTakeover(at time.Duration, hs []Holding, handoff bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range hs {
		e.watches = append(e.watches, Watch{At: at, Holding: h, Handoff: handoff})
	}
}

// TakeoverTime is when a holder with a larger token first ran the
// execution of h after at: its "running instance" log line or its first
// effect, whichever arrived first.
func (e *Env) TakeoverTime(w Watch, effects []Effect) (time.Duration, bool) {
	best := time.Duration(-1)
	for _, ev := range e.Events() {
		if ev.Msg == "running instance" && ev.InstanceID == w.Holding.InstanceID && ev.ExecutionID == w.Holding.ExecutionID &&
			ev.Token > w.Holding.Token && ev.At >= w.At {
			best = ev.At
			break
		}
	}
	for _, ef := range effects {
		if ef.Instance == w.Holding.InstanceID && ef.Execution == w.Holding.ExecutionID && ef.Token > w.Holding.Token && ef.At >= w.At {
			if best < 0 || ef.At < best {
				best = ef.At
			}
			break
		}
	}
	if best < 0 {
		return 0, false
	}
	return best - w.At, true
}

func (e *Env) computeTakeovers(r *Result, effects []Effect) {
	e.mu.Lock()
	ws := append([]Watch(nil), e.watches...)
	e.mu.Unlock()
	for _, w := range ws {
		d, ok := e.TakeoverTime(w, effects)
		if !ok {
			continue
		}
		if w.Handoff {
			r.Handoffs = append(r.Handoffs, d)
		} else {
			r.Takeovers = append(r.Takeovers, d)
		}
	}
}
