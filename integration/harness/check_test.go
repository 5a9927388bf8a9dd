package harness

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/soloist-dev/soloist/orchestrator"
)

// These tests feed Analyze small hand-made histories, to show that each
// check can fail: a suite whose checks never fire proves nothing.

var keys = orchestrator.NewKeys("/soloist/")

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func rec(rev int64, at int, id, exec, req string, status orchestrator.RuntimeStatus, token int64, output string) KV {
	st := orchestrator.Status{Name: "effect", InstanceID: id, RuntimeStatus: status, ExecutionID: exec, FencingToken: token,
		Input: json.RawMessage(`{"req":"` + req + `"}`), Output: json.RawMessage(output)}
	b, _ := json.Marshal(st)
	return KV{At: ms(at), Rev: rev, Key: keys.Instance(id), Value: b}
}

func own(rev int64, at int, id, exec string) KV {
	b, _ := json.Marshal(orchestrator.Owner{Node: "n1", ExecutionID: exec})
	return KV{At: ms(at), Rev: rev, Key: keys.Owner(id), Value: b, CreateRev: rev}
}

func unown(rev int64, at int, id string, token int64) KV {
	return KV{At: ms(at), Rev: rev, Key: keys.Owner(id), Delete: true, CreateRev: token}
}

func start(client int, req string, call, ret int, outcome, cp string) Op {
	return Op{Client: client, Kind: "start", ID: "x", CP: cp, Req: req, Call: ms(call), Return: ms(ret), Outcome: outcome}
}

func eff(at int, exec, req, kind string, token int64, accepted bool) Effect {
	return Effect{At: ms(at), Instance: "x", Execution: exec, Req: req, Kind: kind, Token: token, Accepted: accepted}
}

// cleanRun is one execution started, held, run and completed.
func cleanRun() Input {
	return Input{
		Keys: keys,
		Ops: []Op{
			start(0, "a", 0, 10, Started, ""),
			start(1, "b", 5, 12, Conflict, ""),
			{Client: 2, Kind: "read", ID: "x", Call: ms(30), Return: ms(31), Outcome: OK, Status: "active", ExecReq: "a", Holder: "n1", Token: 3},
			{Client: 2, Kind: "read", ID: "x", Call: ms(80), Return: ms(81), Outcome: OK, Status: "Completed", ExecReq: "a"},
		},
		KVs: []KV{
			rec(2, 9, "x", "A", "a", orchestrator.StatusPending, 0, "null"),
			own(3, 20, "x", "A"),
			rec(4, 25, "x", "A", "a", orchestrator.StatusRunning, 3, "null"),
			rec(5, 70, "x", "A", "a", orchestrator.StatusCompleted, 3, `{"token":3}`),
			unown(5, 70, "x", 3),
		},
		Effects: []Effect{eff(40, "A", "a", "begin", 3, true), eff(60, "A", "a", "end", 3, true)},
	}
}

func kinds(r *Result) string {
	var ks []string
	for _, v := range r.Violations {
		ks = append(ks, v.Kind)
	}
	return strings.Join(ks, ",")
}

func TestAnalyzeClean(t *testing.T) {
	r, _ := Analyze(cleanRun(), CheckOptions{StrictEffects: true})
	if len(r.Violations) != 0 || r.Porcupine != porcupine.Ok {
		t.Fatalf("clean history: violations %v, porcupine %s", r.Violations, r.Porcupine)
	}
	if r.Acked != 1 || r.Executions != 1 || r.Holdings != 1 {
		t.Fatalf("counts: %+v", r)
	}
}

func TestAnalyzeFindsDuplicateStart(t *testing.T) {
	in := cleanRun()
	// A second start with conflictPolicy=fail was acknowledged and replaced
	// the running execution.
	in.Ops = append(in.Ops[:2:2], start(3, "c", 26, 28, Started, "fail"))
	in.KVs = append(in.KVs[:3:3], rec(5, 27, "x", "C", "c", orchestrator.StatusPending, 0, "null"), unown(5, 27, "x", 3),
		rec(6, 40, "x", "C", "c", orchestrator.StatusTerminated, 0, "null"))
	in.Effects = in.Effects[:1]
	r, _ := Analyze(in, CheckOptions{})
	if r.Duplicates != 1 || !strings.Contains(kinds(r), "duplicate-start") || r.Porcupine != porcupine.Illegal {
		t.Fatalf("duplicates %d, violations %s, porcupine %s", r.Duplicates, kinds(r), r.Porcupine)
	}
}

func TestAnalyzeFindsUnfencedWrite(t *testing.T) {
	in := cleanRun()
	// The owners key expired (a takeover is due), and the old holder still
	// completed the execution.
	in.KVs = []KV{in.KVs[0], in.KVs[1], in.KVs[2], unown(5, 50, "x", 3), rec(6, 70, "x", "A", "a", orchestrator.StatusCompleted, 3, `{"token":3}`)}
	r, _ := Analyze(in, CheckOptions{})
	if !strings.Contains(kinds(r), "unfenced-write") || r.Porcupine != porcupine.Illegal {
		t.Fatalf("violations %s, porcupine %s", kinds(r), r.Porcupine)
	}
}

func TestAnalyzeFindsStaleEffect(t *testing.T) {
	in := cleanRun()
	// A takeover by token 7, then an effect of token 3 arrives.
	in.KVs = []KV{in.KVs[0], in.KVs[1], in.KVs[2], unown(5, 40, "x", 3), own(7, 45, "x", "A"),
		rec(8, 70, "x", "A", "a", orchestrator.StatusCompleted, 7, `{"token":7}`), unown(8, 70, "x", 7)}
	in.Effects = []Effect{eff(30, "A", "a", "begin", 3, true), eff(50, "A", "a", "begin", 7, true),
		eff(55, "A", "a", "step", 3, false), eff(60, "A", "a", "end", 7, true)}
	in.Ops = in.Ops[:2]
	r, _ := Analyze(in, CheckOptions{StrictEffects: true})
	if r.StaleEffects != 1 || r.Reruns != 1 || kinds(r) != "stale-effect" {
		t.Fatalf("stale %d, reruns %d, violations %s", r.StaleEffects, r.Reruns, kinds(r))
	}
	r, _ = Analyze(in, CheckOptions{})
	if r.StaleEffects != 1 || len(r.Violations) != 0 {
		t.Fatalf("not strict: stale %d, violations %s", r.StaleEffects, kinds(r))
	}
}

func TestAnalyzeFindsLostAndStaleRead(t *testing.T) {
	in := cleanRun()
	// An acknowledged start that never committed.
	in.Ops = append(in.Ops, start(4, "d", 90, 95, Started, "terminateExisting"))
	r, _ := Analyze(in, CheckOptions{})
	if r.Lost != 1 || !strings.Contains(kinds(r), "lost-ack") {
		t.Fatalf("lost %d, violations %s", r.Lost, kinds(r))
	}
	// A read that sees the completed execution still running, after the
	// completion was read by someone else.
	in = cleanRun()
	in.Ops = append(in.Ops, Op{Client: 3, Kind: "read", ID: "x", Call: ms(85), Return: ms(86), Outcome: OK, Status: "active", ExecReq: "a", Holder: "n1", Token: 3})
	r, _ = Analyze(in, CheckOptions{})
	if r.Porcupine != porcupine.Illegal {
		t.Fatalf("stale read: porcupine %s", r.Porcupine)
	}
}

func TestAnalyzeFindsNotCommittedButCommitted(t *testing.T) {
	in := cleanRun()
	// The start's node answered that it did not commit; it did.
	in.Ops[0] = start(0, "a", 0, 10, NoOp, "")
	in.Ops[0].Code, in.Ops[0].Err = 503, `{"error":"start of 'x' was not committed (context deadline exceeded); try again"}`
	r, _ := Analyze(in, CheckOptions{StrictEffects: true})
	if !strings.Contains(kinds(r), "not-committed-but-committed") {
		t.Fatalf("violations %s", kinds(r))
	}
	// A 507 (etcd's NOSPACE: nothing written) that committed.
	in.Ops[0].Code, in.Ops[0].Err = 507, `{"error":"etcd is out of space"}`
	r, _ = Analyze(in, CheckOptions{StrictEffects: true})
	if !strings.Contains(kinds(r), "refused-start-committed") {
		t.Fatalf("violations %s", kinds(r))
	}
}

func TestAnalyzeNoEffects(t *testing.T) {
	in := cleanRun()
	// A demo orchestration completes with its own output and posts no
	// effects: only the soloist-effect checks are skipped.
	for i, kv := range in.KVs {
		if kv.Key == keys.Instance("x") {
			var st orchestrator.Status
			_ = json.Unmarshal(kv.Value, &st)
			st.Name, st.Output = "Gather", json.RawMessage(`130`)
			in.KVs[i].Value, _ = json.Marshal(st)
		}
	}
	in.Effects = nil
	r, _ := Analyze(in, CheckOptions{StrictEffects: true})
	if !strings.Contains(kinds(r), "output-token") {
		t.Fatalf("without NoEffects: violations %s", kinds(r))
	}
	r, _ = Analyze(in, CheckOptions{StrictEffects: true, NoEffects: []string{"Gather"}})
	if len(r.Violations) != 0 {
		t.Fatalf("with NoEffects: violations %s", kinds(r))
	}
}
