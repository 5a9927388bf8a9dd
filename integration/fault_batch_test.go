package integration

// The fault scenario of issue 14: a holder killed with SIGKILL while a
// batch of local activities runs, and what it repeats.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/integration/harness"
	"github.com/soloist-dev/soloist/orchestrator"
)

// chainRan is the line the demo activity ChainStep logs as it begins.
const chainRan = "demo activity ChainStep ran"

// chainCase is one demo Chain instance of TestFaultKillMidBatch.
type chainCase struct {
	id    string
	n, ms int
	// killAfter: for each kill, how many ChainStep runs the holder of the
	// moment must have logged before it is killed.
	killAfter []int
	// drain stops the holder with SIGTERM (a drain and handoff) instead of
	// SIGKILL.
	drain bool
}

// chainKill is one kill of a Chain's holder.
type chainKill struct {
	node  string
	token int64
	seen  int // runs of the holder the test had seen when it killed it
	drain bool
}

// holdingEnd is what one holding of a Chain left uncommitted when it
// ended: the activities it ran whose completion etcd did not have before
// the next holder's owners key was created.
type holdingEnd struct {
	token, next int64
	ran         int   // ChainStep runs under the token
	batch       []int // task IDs of the uncommitted batch
	// lateMs is how long after the holding's last commit (the latest
	// event timestamp in it, node clock) the batch's last activity began;
	// -1 if the holding committed nothing.
	lateMs int64
}

// TestFaultKillMidBatch runs the demo Chain - n activities in sequence,
// each logging its run as it begins - on nodes with the default batch
// bounds (--batch-budget 1s, 100 activities), and stops its holder while a
// batch runs, twice per chain, restarting the victim after each takeover.
// Two chains are killed with SIGKILL: one's activities take 1 ms, so the
// count cuts its batches; the other's 30 ms, so the time budget does. A
// third is drained with SIGTERM. It asserts that each chain completes with
// the right sum, that etcd's history has exactly one TaskScheduled and one
// TaskCompleted per task, and that the activities that ran more than once
// are exactly those each ended holding left uncommitted (its activities
// whose completion etcd did not have when the next holder took the
// instance), once more per holding that lost them. Per holding that is at
// most 101 activities (the batch's 100, plus one whose schedule its last
// commit held) and, but for one that was running at that commit, all
// begun within the 1 s budget (plus 1.5 s for the commit's own latency) of
// the holding's last commit; after a drain, which commits the batch before
// it stops the run, at most the one activity it stopped. The porcupine
// check and every other check of the suite apply too.
func TestFaultKillMidBatch(t *testing.T) {
	chains := []chainCase{
		{id: "chain-count", n: 800, ms: 1, killAfter: []int{180, 160}},
		{id: "chain-budget", n: 450, ms: 30, killAfter: []int{195, 195}},
		{id: "chain-drain", n: 300, ms: 30, killAfter: []int{60, 60}, drain: true},
	}
	su := setup{env: harness.Options{Demo: true}, noWorkload: true, noEffects: []string{"Chain"}}
	runScenarioWith(t, "kill -9 mid-batch", true, su, harness.WorkloadOptions{}, func(s *scenario) {
		kills := map[string][]chainKill{}
		for _, c := range chains {
			kills[c.id] = s.killChain(c)
		}
		s.post = append(s.post, func(*harness.Result) {
			var notes []string
			for _, c := range chains {
				notes = append(notes, s.checkChain(c, kills[c.id]))
			}
			s.note = strings.Join(notes, "; ")
		})
	})
}

// killChain starts c and kills its holder once per c.killAfter, each time
// after the holder ran that many activities, then waits for it to end.
func (s *scenario) killChain(c chainCase) []chainKill {
	nodes := s.upNodes()
	op := s.probe.StartFunction(context.Background(), nodes[s.rng.IntN(len(nodes))], "Chain", c.id, "", "", map[string]any{"n": c.n, "ms": c.ms})
	if op.Outcome != harness.Started {
		s.t.Errorf("start of Chain %s: %s %d %s", c.id, op.Outcome, op.Code, op.Err)
		return nil
	}
	var kills []chainKill
	var last int64
	for _, k := range c.killAfter {
		h, ok := s.awaitHolder(c.id, last, 5*ttl)
		if !ok {
			s.t.Errorf("Chain %s: no holder after token %d within %s", c.id, last, 5*ttl)
			break
		}
		seen, ok := s.awaitRuns(c.id, h.Token, k, 60*time.Second)
		if !ok {
			s.env.Logf("Chain %s ended (or stalled) before its holder %s ran %d activities (%d): no kill", c.id, h.Node, k, seen)
			break
		}
		victim := s.env.Node(h.Node)
		if c.drain {
			if _, err := victim.Term(20 * time.Second); err != nil {
				s.t.Errorf("SIGTERM of %s: %v", victim.ID, err)
			}
		} else {
			victim.Kill()
		}
		kills = append(kills, chainKill{node: h.Node, token: h.Token, seen: seen, drain: c.drain})
		last = h.Token
		if _, ok := s.awaitHolder(c.id, h.Token, 5*ttl); !ok {
			s.t.Errorf("Chain %s was not taken over within %s of killing its holder %s", c.id, 5*ttl, victim.ID)
		}
		if err := victim.Restart(20 * time.Second); err != nil {
			s.t.Fatal(err)
		}
	}
	if st := waitTerminal(s.env, c.id, 60*time.Second); st != orchestrator.StatusCompleted {
		s.t.Errorf("Chain %s: %s 60 s after its last kill, want Completed", c.id, orNone(string(st)))
	}
	return kills
}

// awaitHolder waits until instance id is held under a token above after,
// and returns the holding; false if it is not within timeout or the
// instance is terminal.
func (s *scenario) awaitHolder(id string, after int64, timeout time.Duration) (harness.Holding, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs, err := s.env.Holdings(ctx)
		cancel()
		if err == nil {
			for _, h := range hs {
				if h.InstanceID == id && h.Token > after {
					return h, true
				}
			}
		}
		if st := record(s.env, id); st != nil && st.RuntimeStatus.Terminal() {
			return harness.Holding{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return harness.Holding{}, false
}

// awaitRuns waits until the node logs show n ChainStep runs of instance id
// under token; false (with the count seen) if the instance ends first or
// timeout passes.
func (s *scenario) awaitRuns(id string, token int64, n int, timeout time.Duration) (int, bool) {
	deadline := time.Now().Add(timeout)
	seen, next := 0, 0 // events only grow: count the new ones
	for polls := 0; time.Now().Before(deadline); polls++ {
		evs := s.env.Events()
		for _, ev := range evs[next:] {
			if ev.Msg == chainRan && ev.InstanceID == id && ev.Token == token {
				seen++
			}
		}
		next = len(evs)
		if seen >= n {
			return seen, true
		}
		if polls%10 == 9 {
			if st := record(s.env, id); st != nil && st.RuntimeStatus.Terminal() {
				return seen, false
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return seen, false
}

// checkChain checks a Chain against the node logs (its runs) and etcd's
// recorded history (its commits and holdings), logs what each kill
// repeated, and returns a summary for the figures row.
func (s *scenario) checkChain(c chainCase, kills []chainKill) string {
	t := s.t
	errorf := func(format string, args ...any) { t.Errorf("Chain %s: "+format, append([]any{c.id}, args...)...) }
	if out := string(output(s.env, c.id)); out != fmt.Sprint(c.n*(c.n-1)/2) {
		errorf("output %.80q, want %d", out, c.n*(c.n-1)/2)
	}

	// Runs, from the node logs: token -> task -> runs, and when each began.
	runs := map[int64]map[int]int{}
	began := map[int64]map[int]time.Time{}
	for _, ev := range s.env.Events() {
		if ev.Msg != chainRan || ev.InstanceID != c.id {
			continue
		}
		if runs[ev.Token] == nil {
			runs[ev.Token], began[ev.Token] = map[int]int{}, map[int]time.Time{}
		}
		runs[ev.Token][ev.TaskID]++
		began[ev.Token][ev.TaskID] = ev.Time
	}

	// Commits, from etcd: each task's schedule and completion, the
	// revision of its completion, the latest event timestamp of each
	// history write.
	scheduled, completed := map[int]int{}, map[int]int{}
	completedAt := map[int]int64{}
	var writes []int64
	latest := map[int64]time.Time{}
	evs, revs := historyEvents(s.env, c.id)
	for i, ev := range evs {
		switch ev.EventType {
		case orchestrator.EventTaskScheduled:
			scheduled[ev.TaskID]++
		case orchestrator.EventTaskCompleted:
			completed[ev.TaskID]++
			completedAt[ev.TaskID] = revs[i]
		case orchestrator.EventTaskFailed:
			errorf("task %d failed: %s", ev.TaskID, ev.Failure)
		}
		if len(writes) == 0 || writes[len(writes)-1] != revs[i] {
			writes = append(writes, revs[i])
		}
		if ev.Timestamp.After(latest[revs[i]]) {
			latest[revs[i]] = ev.Timestamp
		}
	}
	bad := 0
	for task := 0; task < c.n; task++ {
		if scheduled[task] != 1 || completed[task] != 1 {
			if bad++; bad <= 10 {
				errorf("task %d scheduled %d times and completed %d times in etcd's history, want once each", task, scheduled[task], completed[task])
			}
		}
	}
	if len(scheduled) != c.n || len(completed) != c.n {
		errorf("etcd's history has %d tasks scheduled and %d completed, want %d each", len(scheduled), len(completed), c.n)
	}

	// Holdings, from etcd: the owners keys' CreateRevisions are the tokens.
	var tokens []int64
	for _, kv := range s.env.Rec.KVs() {
		if kv.Key == s.env.Keys.Owner(c.id) && !kv.Delete && kv.Rev == kv.CreateRev {
			tokens = append(tokens, kv.Rev)
		}
	}
	sort.Slice(tokens, func(i, j int) bool { return tokens[i] < tokens[j] })
	for tok := range runs {
		if !containsToken(tokens, tok) {
			errorf("ChainStep ran under token %d, which never held the instance", tok)
		}
	}

	// What each holding that ended before the chain did left uncommitted.
	budget := orchestrator.DefaultBatchBudget
	const slack = 1500 * time.Millisecond // the commit's own latency on a loaded machine
	lost := map[int]int{}                 // task -> holdings whose uncommitted batch had it
	ends := map[int64]holdingEnd{}
	for i := 0; i+1 < len(tokens); i++ {
		tok, next := tokens[i], tokens[i+1]
		he := holdingEnd{token: tok, next: next, lateMs: -1}
		var last int64 // the holding's last history write
		for _, w := range writes {
			if w > tok && w < next {
				last = w
			}
		}
		for task, n := range runs[tok] {
			he.ran += n
			if at, ok := completedAt[task]; ok && at < next {
				continue // committed by this holding, or an earlier one
			}
			he.batch = append(he.batch, task)
			lost[task]++
		}
		sort.Ints(he.batch)
		if max := orchestrator.DefaultBatchTasks + 1; len(he.batch) > max {
			errorf("holding %d left %d activities uncommitted, more than the bound %d (the batch's %d and one whose schedule its last commit held)",
				tok, len(he.batch), max, orchestrator.DefaultBatchTasks)
		}
		if last != 0 && len(he.batch) > 0 {
			// In a chain, at most one activity of the batch (its first)
			// may have begun before the last commit: a checkpoint while it
			// ran. Every later one began within the budget of it.
			for _, task := range he.batch[1:] {
				if d := began[tok][task].Sub(latest[last]); !began[tok][task].IsZero() && d.Milliseconds() > he.lateMs {
					he.lateMs = d.Milliseconds()
				}
			}
			if he.lateMs > (budget + slack).Milliseconds() {
				errorf("holding %d began an activity of its uncommitted batch %d ms after its last commit, over the budget %s (+%s)",
					tok, he.lateMs, budget, slack)
			}
		}
		ends[tok] = he
	}

	// Every task ran once, and once more per holding that lost it; no task
	// ran twice in one holding.
	bad = 0
	for task := 0; task < c.n; task++ {
		total := 0
		for tok, m := range runs {
			total += m[task]
			if m[task] > 1 {
				errorf("task %d ran %d times under token %d", task, m[task], tok)
			}
		}
		if total != 1+lost[task] {
			if bad++; bad <= 10 {
				errorf("task %d ran %d times; want %d: once, and once more for each of the %d holdings whose uncommitted batch had it",
					task, total, 1+lost[task], lost[task])
			}
		}
	}

	// The figures of each kill.
	var sizes []string
	hit := 0
	for i, k := range kills {
		he, ok := ends[k.token]
		if !ok {
			errorf("kill %d: the killed holding %d has no successor in etcd's history", i+1, k.token)
			continue
		}
		if k.drain && len(he.batch) > 1 {
			errorf("the drain of holding %d left %d activities uncommitted (tasks %v); a drain commits the batch first and repeats only the activity it stopped",
				k.token, len(he.batch), he.batch)
		}
		again := 0
		for _, task := range he.batch {
			for tok, m := range runs {
				if tok > k.token && m[task] > 0 {
					again++
					break
				}
			}
		}
		if len(he.batch) > 0 {
			hit++
		}
		span := "-"
		if len(he.batch) > 0 {
			span = fmt.Sprintf("%d-%d", he.batch[0], he.batch[len(he.batch)-1])
		}
		how := "SIGKILL"
		if k.drain {
			how = "SIGTERM"
		}
		t.Logf("Chain %s (ms %d) %s %d: holder %s token %d killed after %d runs (%d seen by the test); uncommitted batch at the kill %d activities (tasks %s), ran again %d; its last began %d ms after the holding's last commit; next token %d",
			c.id, c.ms, how, i+1, k.node, k.token, he.ran, k.seen, len(he.batch), span, again, he.lateMs, he.next)
		sizes = append(sizes, fmt.Sprint(again))
	}
	if len(kills) > 0 && hit == 0 && !c.drain {
		errorf("none of its %d kills hit an uncommitted batch: the scenario measured nothing", len(kills))
	}
	totalRuns := 0
	for _, m := range runs {
		for _, n := range m {
			totalRuns += n
		}
	}
	t.Logf("Chain %s: %d tasks, %d runs, %d holdings (tokens %v), %d kills", c.id, c.n, totalRuns, len(tokens), tokens, len(kills))
	how := "kill"
	if c.drain {
		how = "SIGTERM"
	}
	return fmt.Sprintf("%s %d runs/%d tasks, repeated per %s %s", c.id, totalRuns, c.n, how, strings.Join(sizes, "/"))
}

func containsToken(tokens []int64, tok int64) bool {
	for _, t := range tokens {
		if t == tok {
			return true
		}
	}
	return false
}
