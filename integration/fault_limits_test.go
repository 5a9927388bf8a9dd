package integration

// The scenarios of issue 7, "Never stuck, never twice": work that does not
// fit one etcd request, a NOSPACE alarm, a compaction with an etcd restart
// under a thousand waiting instances, and commits that time out but apply
// later.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/integration/harness"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// demos are the demo orchestrations the scenarios start: they post no
// effects to the sink.
var demos = []string{"FanOut", "Gather", "Approval"}

// historyEvents is every history event etcd recorded for instance id (each
// history key's value is a JSON array of events, or one event in the old
// layout), in commit order, with the revision of its commit.
func historyEvents(env *harness.Env, id string) (evs []orchestrator.HistoryEvent, revs []int64) {
	prefix := env.Keys.Prefix() + "v1/history/" + id + "/"
	for _, kv := range env.Rec.KVs() {
		if kv.Delete || !strings.HasPrefix(kv.Key, prefix) {
			continue
		}
		var batch []orchestrator.HistoryEvent
		if json.Unmarshal(kv.Value, &batch) != nil {
			var one orchestrator.HistoryEvent
			if json.Unmarshal(kv.Value, &one) != nil {
				continue
			}
			batch = []orchestrator.HistoryEvent{one}
		}
		for _, ev := range batch {
			evs = append(evs, ev)
			revs = append(revs, kv.Rev)
		}
	}
	return evs, revs
}

// ownersCreated counts the owners keys ever created for instance id.
func ownersCreated(env *harness.Env, id string) int {
	n := 0
	key := env.Keys.Owner(id)
	for _, kv := range env.Rec.KVs() {
		if kv.Key == key && !kv.Delete && kv.Rev == kv.CreateRev {
			n++
		}
	}
	return n
}

// record reads instance id's record (nil if absent).
func record(env *harness.Env, id string) *orchestrator.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := env.Etcd.Client().Get(ctx, env.Keys.Instance(id))
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	var st orchestrator.Status
	if json.Unmarshal(resp.Kvs[0].Value, &st) != nil {
		return nil
	}
	return &st
}

// output is instance id's output: its payload key, or (old layout) the
// record's own.
func output(env *harness.Env, id string) json.RawMessage {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if resp, err := env.Etcd.Client().Get(ctx, env.Keys.Output(id)); err == nil && len(resp.Kvs) > 0 {
		return resp.Kvs[0].Value
	}
	if st := record(env, id); st != nil {
		return st.Output
	}
	return nil
}

// waitTerminal waits until instance id is terminal and returns its status
// ("" on timeout).
func waitTerminal(env *harness.Env, id string, timeout time.Duration) orchestrator.RuntimeStatus {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if st := record(env, id); st != nil && st.RuntimeStatus.Terminal() {
			return st.RuntimeStatus
		}
		time.Sleep(100 * time.Millisecond)
	}
	return ""
}

// preferredID returns an ID starting with prefix for which node comes
// first among nodes.
func preferredID(prefix, node string, nodes []*harness.Node) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		best := true
		for _, n := range nodes {
			if n.ID != node && scheduler.Score(n.ID, id) > scheduler.Score(node, id) {
				best = false
			}
		}
		if best {
			return id
		}
	}
}

// TestFaultFanOutBeyondRequestLimit runs FanOut orchestrations whose
// activity payloads together exceed etcd's 1.5 MiB request limit (8 x 200
// KiB, each under --max-payload), beside the racing workload: each
// completes, and every activity runs once (counted from the node logs, where
// FanOutItem logs each run, and from etcd's history: one TaskScheduled and
// one TaskCompleted per task ID).
func TestFaultFanOutBeyondRequestLimit(t *testing.T) {
	const n, size = 8, 200 << 10
	runScenarioWith(t, "fan-out 8 x 200 KiB", true, setup{env: harness.Options{Demo: true}, noEffects: demos}, harness.WorkloadOptions{}, func(s *scenario) {
		var ids []string
		var took []time.Duration
		for i := 0; i < short(2, 10); i++ {
			pace(500 * time.Millisecond)
			id := fmt.Sprintf("fan-%d", i)
			nodes := s.upNodes()
			op := s.probe.StartFunction(context.Background(), nodes[i%len(nodes)], "FanOut", id, "", "", map[string]any{"n": n, "bytes": size})
			if op.Outcome != harness.Started {
				s.t.Errorf("start of FanOut %s: %s %d %s", id, op.Outcome, op.Code, op.Err)
				continue
			}
			ids = append(ids, id)
			began := time.Now()
			st := waitTerminal(s.env, id, 30*time.Second)
			took = append(took, time.Since(began))
			s.env.Logf("FanOut %s: %s after %s, %d owners keys created", id, orNone(string(st)), time.Since(began).Round(time.Millisecond), ownersCreated(s.env, id))
		}
		s.post = append(s.post, func(*harness.Result) {
			runs := map[string]map[int]int{} // instance -> task ID -> runs, from the node logs
			for _, ev := range s.env.Events() {
				if ev.Msg == "demo activity FanOutItem ran" {
					if runs[ev.InstanceID] == nil {
						runs[ev.InstanceID] = map[int]int{}
					}
					runs[ev.InstanceID][ev.TaskID]++
				}
			}
			completed, total, owners := 0, 0, 0
			for _, id := range ids {
				st := record(s.env, id)
				if st == nil || st.RuntimeStatus != orchestrator.StatusCompleted {
					s.t.Errorf("FanOut %s did not complete: %+v", id, st)
				} else {
					completed++
				}
				if out := string(output(s.env, id)); out != fmt.Sprint(n*size) {
					s.t.Errorf("FanOut %s output %.80q, want %d (the sum of its results' sizes)", id, out, n*size)
				}
				if len(runs[id]) != n {
					s.t.Errorf("FanOut %s: %d of its %d activities ran (node logs)", id, len(runs[id]), n)
				}
				for task, c := range runs[id] {
					total += c
					if c != 1 {
						s.t.Errorf("FanOut %s: activity task %d ran %d times (node logs)", id, task, c)
					}
				}
				scheduled, finished := map[int]int{}, map[int]int{}
				evs, _ := historyEvents(s.env, id)
				for _, ev := range evs {
					switch ev.EventType {
					case orchestrator.EventTaskScheduled:
						scheduled[ev.TaskID]++
					case orchestrator.EventTaskCompleted, orchestrator.EventTaskFailed:
						finished[ev.TaskID]++
					}
				}
				if len(scheduled) != n || len(finished) != n {
					s.t.Errorf("FanOut %s: etcd's history has %d tasks scheduled and %d finished, want %d each", id, len(scheduled), len(finished), n)
				}
				for task, c := range scheduled {
					if c != 1 || finished[task] != 1 {
						s.t.Errorf("FanOut %s: task %d scheduled %d times and finished %d times in etcd's history", id, task, c, finished[task])
					}
				}
				o := ownersCreated(s.env, id)
				owners += o
				if o != 1 {
					s.t.Errorf("FanOut %s was taken %d times (owners keys created); once is enough with no fault", id, o)
				}
			}
			s.note = fmt.Sprintf("%d/%d completed in %s; activity runs %d for %d tasks; owners keys %d", completed, len(ids),
				harness.Percentile(took, 50).Round(100*time.Millisecond), total, n*len(ids), owners)
		})
	})
}

func orNone(s string) string {
	if s == "" {
		return "still active"
	}
	return s
}

// TestFaultStepOver128Ops raises more events to a Gather instance before
// it runs than etcd takes operations in one transaction (130 > 128): every
// node is stopped, the instance is started and the events raised straight
// in etcd, and the nodes come back. The first step consumes them all: each
// is delivered once (EventRaised in etcd's history), the instance
// completes, and it is taken once.
func TestFaultStepOver128Ops(t *testing.T) {
	counts := short([]int{130}, []int{130, 300, 1000})
	runScenarioWith(t, "130 events in one step", true, setup{env: harness.Options{Demo: true}, noEffects: demos}, harness.WorkloadOptions{}, func(s *scenario) {
		ctx := context.Background()
		pace(time.Second)
		for _, nd := range s.env.Nodes {
			if _, err := nd.Term(20 * time.Second); err != nil {
				s.t.Errorf("%s did not drain cleanly: %v", nd.ID, err)
			}
		}
		direct := s.env.NewDirectClient(200, s.hist)
		var ids []string
		for i, k := range counts {
			id := fmt.Sprintf("gather-%d", i)
			if op := direct.Start(ctx, "Gather", id, map[string]any{"events": k, "name": "item"}); op.Outcome != harness.Started {
				s.t.Errorf("start of Gather %s: %s %s", id, op.Outcome, op.Err)
				continue
			}
			for j := 0; j < k; j++ {
				if op := direct.Raise(ctx, id, "item", []byte(fmt.Sprintf(`{"n":%d}`, j))); op.Outcome != harness.OK {
					s.t.Errorf("raise %d to %s: %s %s", j, id, op.Outcome, op.Err)
				}
			}
			resp, err := s.env.Etcd.Client().Get(ctx, s.env.Keys.Prefix()+"v1/inbox/"+id+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil {
				s.env.Logf("%s: %d events in its inbox before any node runs it", id, resp.Count)
			}
			ids = append(ids, id)
		}
		back := time.Now()
		for _, nd := range s.env.Nodes {
			if err := nd.Restart(20 * time.Second); err != nil {
				s.t.Fatal(err)
			}
		}
		var took []time.Duration
		for _, id := range ids {
			st := waitTerminal(s.env, id, 30*time.Second)
			took = append(took, time.Since(back))
			s.env.Logf("Gather %s: %s %s after the nodes came back; owners keys created %d", id, orNone(string(st)),
				time.Since(back).Round(time.Millisecond), ownersCreated(s.env, id))
		}
		pace(time.Second)
		s.post = append(s.post, func(r *harness.Result) {
			completed, owners := 0, 0
			var delivered []string
			for i, id := range ids {
				k := counts[i]
				st := record(s.env, id)
				if st == nil || st.RuntimeStatus != orchestrator.StatusCompleted {
					s.t.Errorf("Gather %s did not complete: %+v", id, st)
				} else {
					completed++
				}
				if out := string(output(s.env, id)); out != fmt.Sprint(k) {
					s.t.Errorf("Gather %s output %.80q, want %d", id, out, k)
				}
				raised, keys := 0, map[string]int{}
				evs, _ := historyEvents(s.env, id)
				for _, ev := range evs {
					if ev.EventType == orchestrator.EventEventRaised {
						raised++
						keys[ev.InboxKey]++
					}
				}
				if raised != k {
					s.t.Errorf("Gather %s: %d EventRaised in etcd's history, want %d (each event once)", id, raised, k)
				}
				for key, c := range keys {
					if c > 1 && key != "" {
						s.t.Errorf("Gather %s: inbox entry %s delivered %d times", id, key, c)
					}
				}
				delivered = append(delivered, fmt.Sprintf("%d/%d", raised, k))
				o := ownersCreated(s.env, id)
				owners += o
				if o != 1 {
					s.t.Errorf("Gather %s was taken %d times (owners keys created), want one campaign", id, o)
				}
			}
			s.note = fmt.Sprintf("%d/%d completed in %s; events delivered %s; owners keys %d; run retries %.0f", completed, len(ids),
				harness.Percentile(took, 100).Round(100*time.Millisecond), strings.Join(delivered, ", "), owners, r.Metrics["soloist_run_retries_total"])
		})
	})
}

// get returns the status code and body of a GET.
func get(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const alarmGauge = `soloist_etcd_alarm{alarm="NOSPACE"}`

// TestFaultNoSpace fills etcd (a small --quota-backend-bytes) with junk
// until it raises its NOSPACE alarm, under the racing workload: starts
// answer 507 saying what to do, /readyz answers 503 naming the alarm,
// soloist_etcd_alarm{alarm="NOSPACE"} is 1. Then an operator clears it
// (delete the junk, compact, defragment every member, disarm the alarm):
// every node recovers by itself, no acknowledged start is lost, and the
// 507s committed nothing.
func TestFaultNoSpace(t *testing.T) {
	const quota = 16 << 20
	su := setup{env: harness.Options{EtcdArgs: []string{"--quota-backend-bytes", fmt.Sprint(quota)}}}
	runScenarioWith(t, "etcd NOSPACE, cleared by an operator", true, su, harness.WorkloadOptions{}, func(s *scenario) {
		ctx := context.Background()
		cli := s.env.Etcd.Client()
		pace(2 * time.Second)
		s.startProbe(25, false) // a run in flight when the alarm comes
		incarnations := map[string]int{}
		for _, nd := range s.env.Nodes {
			incarnations[nd.ID] = nd.Proc.Incarnation()
		}
		junk := strings.Repeat("j", 512<<10)
		filled := 0
		var fillErr error
		for i := 0; i < 4*quota/len(junk) && fillErr == nil; i++ {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, fillErr = cli.Put(cctx, fmt.Sprintf("/junk/%04d", i), junk)
			cancel()
			if fillErr == nil {
				filled += len(junk)
			}
		}
		if fillErr == nil || !strings.Contains(fillErr.Error(), "database space exceeded") {
			s.t.Fatalf("etcd took %d MiB of junk without refusing it with NOSPACE (last error %v)", filled>>20, fillErr)
		}
		alarmAt := s.env.Fault("etcd-nospace", "", fmt.Sprintf("%d MiB of junk written; then %v", filled>>20, fillErr))
		alarms, _ := s.env.Etcd.Alarms(ctx)
		s.env.Logf("etcd refused a write after %d MiB of junk: %v; alarms %v", filled>>20, fillErr, alarms)

		// While the alarm is raised.
		codes := map[int]int{}
		var wrong []string
		unready := map[string]time.Duration{}
		gauged := map[string]time.Duration{}
		window := short(8*time.Second, 30*time.Second)
		for i := 0; s.env.Clock.Now()-alarmAt < window; i++ {
			for _, nd := range s.env.Nodes {
				op := s.probe.Start(ctx, nd, fmt.Sprintf("nospace-%d-%s", i, nd.ID), "", "", harness.EffectInput{Steps: 1, StepMs: 50})
				codes[op.Code]++
				switch {
				case op.Code != http.StatusInsufficientStorage:
					wrong = append(wrong, fmt.Sprintf("%s at +%s: %d %.200s", nd.ID, (op.Return-alarmAt).Round(time.Millisecond), op.Code, op.Err))
				case !strings.Contains(op.Err, "compact") || !strings.Contains(op.Err, "defrag") || !strings.Contains(op.Err, "disarm"):
					wrong = append(wrong, fmt.Sprintf("%s: 507 without saying what to do: %.300s", nd.ID, op.Err))
				}
				if code, body := get(nd.URL() + "/readyz"); code == http.StatusServiceUnavailable && strings.Contains(body, "NOSPACE") {
					if _, ok := unready[nd.ID]; !ok {
						unready[nd.ID] = s.env.Clock.Now() - alarmAt
						s.env.Logf("%s /readyz: %d %s", nd.ID, code, strings.TrimSpace(body))
					}
				}
				if m, err := nd.Scrape(2 * time.Second); err == nil && m[alarmGauge] == 1 {
					if _, ok := gauged[nd.ID]; !ok {
						gauged[nd.ID] = s.env.Clock.Now() - alarmAt
					}
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
		for _, nd := range s.env.Nodes {
			if _, ok := unready[nd.ID]; !ok {
				s.t.Errorf("%s never answered /readyz with a 503 naming NOSPACE in the %s the alarm was raised", nd.ID, window)
			}
			if _, ok := gauged[nd.ID]; !ok {
				s.t.Errorf("%s never showed %s = 1 in the %s the alarm was raised", nd.ID, alarmGauge, window)
			}
		}
		if len(wrong) > 0 {
			s.t.Errorf("starts while etcd had its NOSPACE alarm must answer 507 saying what to do; %d did not (codes %v):\n%s",
				len(wrong), codes, strings.Join(firstN(wrong, 12), "\n"))
		}

		// An operator frees space and disarms the alarm.
		s.env.Fault("operator", "", "delete the junk, compact, defragment every member, disarm")
		if _, err := cli.Delete(ctx, "/junk/", clientv3.WithPrefix()); err != nil {
			s.t.Fatalf("delete the junk: %v", err)
		}
		if _, err := s.env.Compact(ctx); err != nil {
			s.t.Fatalf("compact: %v", err)
		}
		if err := s.env.Etcd.Defragment(ctx); err != nil {
			s.t.Fatal(err)
		}
		if err := s.env.Etcd.DisarmAlarms(ctx); err != nil {
			s.t.Fatalf("disarm: %v", err)
		}
		disarmedAt := s.env.Fault("etcd-disarm", "", fmt.Sprintf("db sizes %v", s.env.Etcd.DBSizes(ctx)))
		recovered := map[string]time.Duration{}
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; len(recovered) < len(s.env.Nodes) && time.Now().Before(deadline); i++ {
			for _, nd := range s.env.Nodes {
				if _, ok := recovered[nd.ID]; ok {
					continue
				}
				code, _ := get(nd.URL() + "/readyz")
				m, _ := nd.Scrape(2 * time.Second)
				if code != http.StatusOK || m[alarmGauge] != 0 {
					continue
				}
				if op := s.probe.Start(ctx, nd, fmt.Sprintf("recovered-%d-%s", i, nd.ID), "", "", harness.EffectInput{Steps: 1, StepMs: 50}); op.Outcome == harness.Started {
					recovered[nd.ID] = s.env.Clock.Now() - disarmedAt
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, nd := range s.env.Nodes {
			if _, ok := recovered[nd.ID]; !ok {
				s.t.Errorf("%s did not recover within 30s of the alarm's disarm (readyz 200, %s 0, a start 202)", nd.ID, alarmGauge)
			}
			if nd.Proc.Incarnation() != incarnations[nd.ID] || !nd.Proc.Running() {
				s.t.Errorf("%s was restarted or died during NOSPACE; it must recover by itself", nd.ID)
			}
		}
		pace(short(3*time.Second, 15*time.Second))
		s.note = fmt.Sprintf("%d MiB to NOSPACE; probe starts %s; readyz 503 after %s, gauge 1 after %s; recovered %s after disarm, no restart",
			filled>>20, codeList(codes), latest(unready, len(s.env.Nodes)), latest(gauged, len(s.env.Nodes)), latest(recovered, len(s.env.Nodes)))
	})
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... and %d more", len(s)-n))
	}
	return s
}

// latest is the largest of m's n durations, or says how many are missing.
func latest(m map[string]time.Duration, n int) string {
	if len(m) < n {
		return fmt.Sprintf("never on %d of %d nodes", n-len(m), n)
	}
	var d time.Duration
	for _, v := range m {
		d = max(d, v)
	}
	return d.Round(100 * time.Millisecond).String()
}

func codeList(codes map[int]int) string {
	var ks []int
	for k := range codes {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%dx%d", codes[k], k))
	}
	return strings.Join(parts, " ")
}

// parallel runs fn(c, i) for i in [0, n) on k clients of the scenario's
// history, each client one goroutine.
func (s *scenario) parallel(k, n int, fn func(c *harness.APIClient, i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for j := 0; j < k; j++ {
		c := harness.NewClient(100+j, s.hist, s.env.Clock, 15*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(c, i)
			}
		}()
	}
	wg.Wait()
}

// TestFaultCompactRestart compacts etcd to its current revision and
// restarts it (its single member, SIGKILL) while 1,000 Approval instances
// wait for an event: with a lease TTL of 10s the restart fits in the
// sessions' safe window, so no run ends, no lease is lost, no campaign is
// won and no owners key changes (same CreateRevision each). Then the
// events are raised and every instance completes.
func TestFaultCompactRestart(t *testing.T) {
	count := short(1000, 3000)
	const ttl10 = 10 * time.Second
	su := setup{env: harness.Options{Demo: true, Members: 1, TTL: ttl10}, noWorkload: true, noEffects: demos, settle: 90 * time.Second}
	runScenarioWith(t, "compaction + etcd restart, 1,000 waiting", true, su, harness.WorkloadOptions{}, func(s *scenario) {
		ctx := context.Background()
		ids := make([]string, count)
		for i := range ids {
			ids[i] = fmt.Sprintf("appr-%04d", i)
		}
		began := time.Now()
		var refused atomic.Int64
		s.parallel(8, count, func(c *harness.APIClient, i int) {
			nd := s.env.Nodes[i%len(s.env.Nodes)]
			if op := c.StartFunction(ctx, nd, "Approval", ids[i], "", "", map[string]any{"timeoutSeconds": 3600}); op.Outcome != harness.Started {
				if refused.Add(1) <= 5 {
					s.t.Errorf("start of %s: %s %d %s", ids[i], op.Outcome, op.Code, op.Err)
				}
			}
		})
		started := time.Since(began)
		// Every instance held and waiting for its event.
		owners := map[string]int64{}
		waiting := 0
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			hs, err := s.env.Holdings(ctx)
			recs, rerr := s.env.Records(ctx)
			if err != nil || rerr != nil {
				continue
			}
			owners = map[string]int64{}
			for _, h := range hs {
				owners[h.InstanceID] = h.Token
			}
			waiting = 0
			for _, id := range ids {
				if st := recs[id]; st != nil && st.RuntimeStatus == orchestrator.StatusRunning && owners[id] != 0 {
					waiting++
				}
			}
			if waiting == count {
				break
			}
		}
		allWaiting := time.Since(began)
		s.env.Logf("%d starts in %s; %d of them held and waiting after %s", count, started.Round(100*time.Millisecond), waiting, allWaiting.Round(100*time.Millisecond))
		if waiting != count {
			s.t.Fatalf("only %d of %d instances were held and waiting for their event after 60s", waiting, count)
		}
		before := s.nodeCounters()
		mark := len(s.env.Events())

		// Another tenant of the etcd writes: the revision moves past what
		// the nodes' watches saw, so they resume below the compaction.
		for i := 0; i < 20; i++ {
			if _, err := s.env.Etcd.Client().Put(ctx, fmt.Sprintf("/other-tenant/%d", i), "x"); err != nil {
				s.t.Fatal(err)
			}
		}
		rev, err := s.env.Compact(ctx)
		if err != nil {
			s.t.Fatalf("compact: %v", err)
		}
		m := s.env.Etcd.Members[0]
		downAt := s.env.Fault("etcd-kill", m.Name, "all (the single member)")
		s.env.Etcd.Kill(m)
		s.env.Fault("etcd-restart", m.Name, "")
		if err := s.env.Etcd.Restart(m); err != nil {
			s.t.Fatal(err)
		}
		if err := s.env.Etcd.WaitHealthy(30 * time.Second); err != nil {
			s.t.Fatal(err)
		}
		down := s.env.Clock.Now() - downAt
		s.env.Logf("etcd compacted to revision %d and restarted; back after %s", rev, down.Round(time.Millisecond))
		pace(3 * time.Second) // watches resume (past the compaction) and keepalives go on
		for _, nd := range s.env.Nodes {
			if err := nd.WaitReady(10 * time.Second); err != nil {
				s.t.Errorf("after the etcd restart: %v", err)
			}
		}
		after := s.nodeCounters()
		hs, err := s.env.Holdings(ctx)
		if err != nil {
			s.t.Fatal(err)
		}
		now := map[string]int64{}
		for _, h := range hs {
			now[h.InstanceID] = h.Token
		}
		changed := 0
		for _, id := range ids {
			if now[id] != owners[id] {
				if changed++; changed <= 5 {
					s.t.Errorf("owners key of %s changed across the compaction and restart: token %d, now %d", id, owners[id], now[id])
				}
			}
		}
		var stopped []string
		relisted := 0
		for _, ev := range s.env.Events()[mark:] {
			if ev.Msg == "watch broke; listing again" {
				relisted++
			}
			if strings.HasPrefix(ev.Msg, "run stopped") || ev.Msg == "etcd session ended" || ev.Msg == "took over instance" {
				stopped = append(stopped, fmt.Sprintf("%s %s %s %s", harness.Stamp(ev.At), ev.Node, ev.Msg, ev.Err))
			}
		}
		if len(stopped) > 0 {
			s.t.Errorf("runs ended or moved across the compaction and restart:\n%s", strings.Join(firstN(stopped, 10), "\n"))
		}
		for _, c := range []string{"soloist_leases_lost_total", `soloist_campaigns_total{result="won"}`, "soloist_failovers_total"} {
			if after[c] != before[c] {
				s.t.Errorf("%s went from %.0f to %.0f across the compaction and restart", c, before[c], after[c])
			}
		}

		// Approve every instance.
		raisedAt := time.Now()
		s.parallel(8, count, func(c *harness.APIClient, i int) {
			nd := s.env.Nodes[i%len(s.env.Nodes)]
			if op := c.RaiseData(ctx, nd, ids[i], "approve", map[string]any{"by": "fault-suite"}); op.Outcome != harness.OK {
				s.t.Errorf("approve %s: %s %d %s", ids[i], op.Outcome, op.Code, op.Err)
			}
		})
		left := s.env.Settle(60 * time.Second)
		finished := time.Since(raisedAt)
		for _, id := range ids[:10] {
			if out := string(output(s.env, id)); !strings.Contains(out, `"approved":true`) {
				s.t.Errorf("%s output %s, want approved", id, out)
			}
		}
		s.note = fmt.Sprintf("%d started in %s, waiting after %s; etcd back in %s; watches relisted %d; owners changed %d, runs ended %d, leases lost +%.0f, campaigns won +%.0f; %d completed %s after the events",
			count, started.Round(100*time.Millisecond), allWaiting.Round(100*time.Millisecond), down.Round(100*time.Millisecond), relisted, changed, len(stopped),
			after["soloist_leases_lost_total"]-before["soloist_leases_lost_total"],
			after[`soloist_campaigns_total{result="won"}`]-before[`soloist_campaigns_total{result="won"}`],
			count-len(left), finished.Round(100*time.Millisecond))
	})
}

// nodeCounters sums the live nodes' counters (one scrape each).
func (s *scenario) nodeCounters() map[string]float64 {
	out := map[string]float64{}
	for _, nd := range s.env.Nodes {
		m, err := nd.Scrape(5 * time.Second)
		if err != nil {
			s.t.Errorf("metrics of %s: %v", nd.ID, err)
			continue
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// lateRound is one fault of TestFaultLateCommits: the victim's requests are
// held for hold, its connections are stranded (cut on its side, the held
// requests delivered to etcd when due), and the requests of its new
// connections are held too for after.
type lateRound struct {
	hold, after time.Duration
}

// TestFaultLateCommits makes a node's commits time out and apply later:
// every request n1 sends is held in its proxies (DelayTx), then its
// connections are cut on its side only (Strand), so n1 sees its requests
// fail while etcd receives and applies them afterwards. Held at that moment:
// (a) the acquire of its campaign for a "pinned" instance (a function only
// n1 has, started straight in etcd, with an ID n1 is preferred for) and (b)
// the commit of a start sent through n1's HTTP API. Rounds with a 2s hold
// let the acquire's reconciliation find its key (it tracks the holding);
// rounds with a 6s hold and slow new connections make it give up first, so
// the late key is an orphan the session must delete. Either way the pinned
// instance must run to the end; a start that committed must never be
// answered "not committed" (the checker's not-committed-but-committed).
func TestFaultLateCommits(t *testing.T) {
	rounds := []lateRound{{hold: 2 * time.Second}, {hold: 6 * time.Second, after: 5500 * time.Millisecond}}
	if soak() {
		rounds = append(append(rounds, rounds...), rounds...)
	}
	const ttl15 = 15 * time.Second
	su := setup{env: harness.Options{TTL: ttl15, NodeFunctions: map[int][]string{1: {"pinned"}}}}
	runScenarioWith(t, "late commits: acquire and start", true, su, harness.WorkloadOptions{}, func(s *scenario) {
		ctx := context.Background()
		v := s.env.Nodes[0]
		direct := s.env.NewDirectClient(200, s.hist)
		slow := harness.NewClient(98, s.hist, s.env.Clock, 30*time.Second)
		type outcome struct {
			round          lateRound
			pinned         string
			pinnedStatus   orchestrator.RuntimeStatus
			stuck          time.Duration
			start          harness.Op
			orphansBefore  float64
			orphansAfter   float64
			startCommitted bool
			oneProxy       []harness.Op
		}
		var outs []*outcome
		for r, round := range rounds {
			pace(time.Second)
			o := &outcome{round: round}
			if m, err := v.Scrape(2 * time.Second); err == nil {
				o.orphansBefore = m["soloist_orphan_owner_keys_total"]
			}
			o.pinned = preferredID(fmt.Sprintf("pinned-r%d", r), v.ID, s.env.Nodes)
			for _, p := range v.Proxies {
				p.DelayTx(round.hold)
			}
			s.env.Fault("delay-tx", v.ID, round.hold.String())
			pop := direct.Start(ctx, "pinned", o.pinned, map[string]any{"steps": 3, "stepMs": 100})
			if pop.Outcome != harness.Started {
				s.t.Errorf("direct start of %s: %s %s", o.pinned, pop.Outcome, pop.Err)
			}
			answer := make(chan harness.Op, 1)
			go func() {
				answer <- slow.Start(ctx, v, fmt.Sprintf("late-start-r%d", r), "", "", harness.EffectInput{Steps: 2, StepMs: 100})
			}()
			time.Sleep(300 * time.Millisecond) // n1 campaigns and commits the start: both held
			if round.after == 0 {
				for _, p := range v.Proxies {
					p.DelayTx(0)
				}
			}
			stranded := 0
			for _, p := range v.Proxies {
				stranded += p.Strand()
			}
			s.env.Fault("strand", v.ID, fmt.Sprintf("%d connections; their held requests reach etcd %s after they were sent", stranded, round.hold))
			if round.after > 0 {
				time.Sleep(round.after)
				for _, p := range v.Proxies {
					p.DelayTx(0)
				}
				s.env.Fault("delay-tx", v.ID, "0")
			}
			o.start = <-answer
			s.env.Logf("round %d (hold %s): start through %s answered %d %s %.200s", r, round.hold, v.ID, o.start.Code, o.start.Outcome, o.start.Err)
			o.pinnedStatus = waitTerminal(s.env, o.pinned, 30*time.Second)
			if o.pinnedStatus != orchestrator.StatusCompleted {
				s.t.Errorf("round %d: pinned instance %s is %s 30s after its start (owners key: %v)", r, o.pinned, orNone(string(o.pinnedStatus)), s.holder(o.pinned))
			}
			o.stuck = s.firstEffect(o.pinned) - pop.Return
			if m, err := v.Scrape(2 * time.Second); err == nil {
				o.orphansAfter = m["soloist_orphan_owner_keys_total"]
			}

			// (b) again, with one proxy of three held and stranded: a
			// start whose commit is held there sees it fail while its
			// reads, on the node's other connections, answer at once.
			pace(500 * time.Millisecond)
			p := v.Proxies[0]
			p.DelayTx(round.hold)
			s.env.Fault("delay-tx", v.ID+"/"+s.env.Etcd.Members[0].Name, round.hold.String())
			var wg sync.WaitGroup
			ops := make([]harness.Op, short(6, 9))
			for k := range ops {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ops[k] = slow.Start(ctx, v, fmt.Sprintf("late-start-r%d-%d", r, k), "", "", harness.EffectInput{Steps: 1, StepMs: 50})
				}()
			}
			time.Sleep(300 * time.Millisecond)
			p.DelayTx(0)
			s.env.Fault("strand", v.ID+"/"+s.env.Etcd.Members[0].Name, fmt.Sprintf("%d connections", p.Strand()))
			wg.Wait()
			o.oneProxy = ops
			outs = append(outs, o)
		}
		s.post = append(s.post, func(*harness.Result) {
			var parts []string
			for i, o := range outs {
				x := s.firstCommit(o.start.ID)
				o.startCommitted = x.Rev != 0
				how := "ran"
				if o.orphansAfter > o.orphansBefore {
					how = fmt.Sprintf("orphan deleted (%.0f)", o.orphansAfter-o.orphansBefore)
				}
				first := s.firstOwner(o.pinned)
				if first.Node == v.ID && s.ranUnder(o.pinned, first.Token) {
					how += ", ran under the late acquire's token (reconciled)"
				}
				ans := fmt.Sprintf("%d", o.start.Code)
				if o.start.Code != http.StatusAccepted {
					ans += " " + o.start.Outcome
				}
				if o.startCommitted {
					ans += fmt.Sprintf(" (committed %s after the call)", (x.At - o.start.Call).Round(100*time.Millisecond))
				} else {
					ans += " (not committed)"
				}
				late, answers := 0, map[string]int{}
				for _, op := range o.oneProxy {
					c := s.firstCommit(op.ID)
					a := fmt.Sprint(op.Code)
					if op.Code != http.StatusAccepted {
						a += " " + op.Outcome
					}
					if c.Rev == 0 {
						a += " (not committed)"
					} else if c.At-op.Call > o.round.hold/2 {
						late++
					}
					answers[a]++
				}
				var as []string
				for a, c := range answers {
					as = append(as, fmt.Sprintf("%dx %s", c, a))
				}
				sort.Strings(as)
				parts = append(parts, fmt.Sprintf("r%d hold %s: pinned %s, first effect after %s, %s; start %s; one proxy: %d of %d starts committed late, answered %s",
					i, o.round.hold, orNone(string(o.pinnedStatus)), o.stuck.Round(100*time.Millisecond), how, ans,
					late, len(o.oneProxy), strings.Join(as, ", ")))
			}
			s.env.Logf("late commits:\n%s", strings.Join(parts, "\n"))
			s.note = strings.Join(parts, "; ")
		})
	})
}

// holder describes instance id's owners key now.
func (s *scenario) holder(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hs, err := s.env.Holdings(ctx)
	if err != nil {
		return err.Error()
	}
	for _, h := range hs {
		if h.InstanceID == id {
			return fmt.Sprintf("%s token %d", h.Node, h.Token)
		}
	}
	return "none"
}

// firstEffect is when the first effect of instance id arrived (the end of
// the scenario if none did).
func (s *scenario) firstEffect(id string) time.Duration {
	for _, ef := range s.env.Sink.Effects() {
		if ef.Instance == id {
			return ef.At
		}
	}
	return s.env.Clock.Now()
}

// firstCommit is the first write of instance id's record.
func (s *scenario) firstCommit(id string) harness.KV {
	key := s.env.Keys.Instance(id)
	for _, kv := range s.env.Rec.KVs() {
		if kv.Key == key && !kv.Delete {
			return kv
		}
	}
	return harness.KV{}
}

// firstOwner is the first owners key created for instance id.
func (s *scenario) firstOwner(id string) harness.Holding {
	key := s.env.Keys.Owner(id)
	for _, kv := range s.env.Rec.KVs() {
		if kv.Key == key && !kv.Delete && kv.Rev == kv.CreateRev {
			var o orchestrator.Owner
			_ = json.Unmarshal(kv.Value, &o)
			return harness.Holding{InstanceID: id, Node: o.Node, ExecutionID: o.ExecutionID, Token: kv.CreateRev}
		}
	}
	return harness.Holding{}
}

// ranUnder reports whether instance id's program posted an effect under
// token.
func (s *scenario) ranUnder(id string, token int64) bool {
	for _, ef := range s.env.Sink.Effects() {
		if ef.Instance == id && ef.Token == token {
			return true
		}
	}
	return false
}
