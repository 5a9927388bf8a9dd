package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/integration/harness"
)

// TestFaultBaseline drives the same racing clients against Soloist and
// against the check-then-start pattern of the Durable Functions docs
// (read the instance's status; start it if it is absent or terminal),
// implemented honestly on the same etcd cluster as two separate etcd
// operations, and counts the duplicate starts each lets through: starts
// acknowledged while another execution of the same ID was still active.
func TestFaultBaseline(t *testing.T) {
	b := binaries(t)
	began := time.Now()
	env := harness.New(t, b, raceNodes, harness.Options{TTL: ttl})
	ids := []string{"b0", "b1", "b2"}
	const clients = 8
	const runMs = 300
	dur := short(8*time.Second, 90*time.Second)
	pause := func(r *rand.Rand) time.Duration { return time.Duration(5+r.IntN(11)) * time.Millisecond }

	// Soloist: the same check-then-start, through the HTTP API; the start
	// itself is one guarded transaction.
	hist := &harness.History{}
	var wg sync.WaitGroup
	stop := time.Now().Add(dur)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := harness.NewClient(c, hist, env.Clock, 5*time.Second)
			r := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for time.Now().Before(stop) {
				n := env.Nodes[r.IntN(len(env.Nodes))]
				id := ids[r.IntN(len(ids))]
				st := cl.Read(context.Background(), n, id)
				if st.Outcome == harness.NotFound || st.Outcome == harness.OK && isTerminal(st.Status) {
					cl.Start(context.Background(), n, id, "fail", "", harness.EffectInput{Steps: 1, StepMs: runMs})
				}
				time.Sleep(pause(r))
			}
		}()
	}
	wg.Wait()
	env.Restore()
	if active := env.Settle(30 * time.Second); len(active) > 0 {
		t.Errorf("instances still active after the settle time: %v", active)
	}
	res := env.Check(hist, harness.CheckOptions{StrictEffects: true})
	for _, v := range res.Violations {
		t.Errorf("violation: %s", v)
	}
	fig := harness.FiguresOf("race: Soloist atomic start", ttl, res, time.Since(began))
	soloRow := fig.Row()

	// The baseline: two etcd operations, a read and then a write.
	cli := env.Etcd.Client()
	var attempts, acked, dups atomic.Int64
	var workers sync.WaitGroup
	stop = time.Now().Add(dur)
	baseStart := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for time.Now().Before(stop) {
				id := ids[r.IntN(len(ids))]
				key := "/baseline/instances/" + id
				attempts.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := cli.Get(ctx, key)
				if err == nil && (len(resp.Kvs) == 0 || isTerminal(baselineStatus(resp.Kvs[0].Value))) {
					mine := fmt.Sprintf(`{"exec":"c%d-%d","runtimeStatus":"Running"}`, c, r.Int64())
					put, err := cli.Put(ctx, key, mine, clientv3.WithPrevKV())
					if err == nil {
						acked.Add(1)
						if put.PrevKv != nil && !isTerminal(baselineStatus(put.PrevKv.Value)) {
							dups.Add(1) // another execution was still running
						}
						// Its orchestration runs, then completes if it is still the current one.
						workers.Add(1)
						go func() {
							defer workers.Done()
							time.Sleep(runMs * time.Millisecond)
							done := fmt.Sprintf(`{"exec":%q,"runtimeStatus":"Completed"}`, mine)
							cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
							defer ccancel()
							_, _ = cli.Txn(cctx).If(clientv3.Compare(clientv3.Value(key), "=", mine)).Then(clientv3.OpPut(key, done)).Commit()
						}()
					}
				}
				cancel()
				time.Sleep(pause(r))
			}
		}()
	}
	wg.Wait()
	workers.Wait()
	baseRow := fmt.Sprintf("| race: check-then-start baseline | %d | %d | **%d** | - | - | - | - | - | - | - | - | - | - | %s |",
		attempts.Load(), acked.Load(), dups.Load(), time.Since(baseStart).Round(100*time.Millisecond))
	harness.AddRow(soloRow)
	harness.AddRow(baseRow)
	t.Logf("figures (same clients, same IDs, %s each):\n%s\n%s\n%s", dur, harness.Header, soloRow, baseRow)
	t.Logf("duplicate starts: Soloist %d of %d acknowledged; check-then-start %d of %d", res.Duplicates, res.Acked, dups.Load(), acked.Load())
	if res.Duplicates != 0 {
		t.Errorf("Soloist let %d duplicate starts through", res.Duplicates)
	}
	if soak() && dups.Load() == 0 {
		t.Errorf("the check-then-start baseline let no duplicate through in %s; the race did not show", dur)
	}
}

func isTerminal(status string) bool {
	switch status {
	case "Completed", "Failed", "Terminated":
		return true
	}
	return false
}

func baselineStatus(v []byte) string {
	var st struct {
		RuntimeStatus string `json:"runtimeStatus"`
	}
	_ = json.Unmarshal(v, &st)
	return st.RuntimeStatus
}
