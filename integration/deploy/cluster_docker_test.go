package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"
)

// The compose stack of deploy/docker-compose.yml, from images built here,
// through faults, one after the other on one stack (starting it takes
// most of the time): Prometheus scrapes every node and evaluates the
// rules; a killed holder's instance (an Approval: one node holds it until
// its event, where a Countdown changes hands between generations) is
// taken over within TTL + 2s with a larger fencing token and a failover
// counted; a holder cut off etcd stops at its safe-until,
// another takes over, and back it writes nothing stale; a rolling restart
// hands every instance over without a failover; one etcd member down
// loses nothing and starts keep working. Each Countdown ends with exactly
// its ticks (none lost, none written twice), and each Approval completes
// with the event raised at the end.
func TestComposeClusterDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the Docker tests take minutes")
	}
	began := time.Now()
	s := startStack(t)
	counts := map[string]int{} // Countdown ID -> n, checked at the end

	t.Run("Prometheus", func(t *testing.T) {
		s.t = t
		prometheusScrapes(t, s)
	})
	if t.Failed() {
		return
	}

	t.Run("KillHolder", func(t *testing.T) {
		s.t = t
		// The Countdown's ticks are checked at the end; the kill aims at
		// the holder of an Approval, which one node holds until its event
		// (a Countdown changes hands between generations by design).
		s.start("soloist-2", "Countdown", "kill-1", map[string]int{"n": 12})
		counts["kill-1"] = 12
		id := "kill-approval"
		s.start("soloist-2", "Approval", id, map[string]int{"timeoutSeconds": 3600})
		first, _ := s.waitOwner(id, 10*time.Second, func(owner) bool { return true })
		victim := first.Node
		killed := time.Now()
		s.dockerCmd("kill", s.container(victim))
		next, took := s.waitOwner(id, 3*s.ttl, func(o owner) bool { return o.Node != victim })
		t.Logf("takeover after docker kill %s: %s -> %s in %s (token %d -> %d)", victim, victim, next.Node, took.Round(10*time.Millisecond), first.Token, next.Token)
		if took > s.ttl+2*time.Second {
			t.Errorf("takeover took %s after the kill, want at most TTL %s + 2s", took, s.ttl)
		}
		if next.Token <= first.Token {
			t.Errorf("fencing token %d after the takeover, not above %d", next.Token, first.Token)
		}
		// The owners key is in etcd a moment before the new holder's run
		// counts how it came (it opens the execution first): wait for it.
		if fo := s.waitMetric(next.Node, "soloist_failovers_total", 10*time.Second, func(v float64) bool { return v >= 1 }); fo < 1 {
			t.Errorf("%s took over a killed holder's instance but counts %v failovers 10s later", next.Node, fo)
		}
		s.must(time.Minute, "start", victim)
		s.waitReady(victim, time.Minute)
		t.Logf("%s ready again %s after the kill", victim, time.Since(killed).Round(100*time.Millisecond))
	})
	if t.Failed() {
		return
	}

	t.Run("Partition", func(t *testing.T) {
		s.t = t
		s.start("soloist-1", "Countdown", "partition-1", map[string]int{"n": 15})
		counts["partition-1"] = 15
		id := "partition-approval" // held by one node until its event, as in KillHolder
		s.start("soloist-1", "Approval", id, map[string]int{"timeoutSeconds": 3600})
		first, _ := s.waitOwner(id, 10*time.Second, func(owner) bool { return true })
		victim := first.Node
		rejectedBefore := s.mustMetric(victim, "soloist_fencing_rejections_total")
		network := s.project + "_etcd"
		ctr := s.container(victim)
		cut := time.Now()
		s.dockerCmd("network", "disconnect", network, ctr)
		// The cut takes effect somewhere within the command: its session
		// may have renewed until the command returned.
		cutTook := time.Since(cut)
		// The victim's API still answers on the front network: poll what
		// it holds, and the owners key, until both changed.
		// ended: its session ended (self-fenced at safe-until); stopped:
		// it holds nothing any more; taken: another node holds the key.
		var ended, stopped, taken time.Duration
		var next owner
		for time.Since(cut) < 4*s.ttl && (ended == 0 || stopped == 0 || taken == 0) {
			if ended == 0 {
				if up, err := s.metric(victim, "soloist_etcd_session_up"); err == nil && up == 0 {
					ended = time.Since(cut)
				}
			}
			if stopped == 0 {
				if held, err := s.metric(victim, "soloist_instances_held"); err == nil && held == 0 {
					stopped = time.Since(cut)
				}
			}
			if taken == 0 {
				if o, err := s.owners(id); err == nil {
					if own, ok := o[id]; ok && own.Node != victim {
						next, taken = own, time.Since(cut)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("partition of %s (the disconnect took %s): its session ended after %s, it held nothing after %s, %s took over after %s (token %d -> %d)",
			victim, cutTook.Round(10*time.Millisecond), ended.Round(10*time.Millisecond), stopped.Round(10*time.Millisecond), next.Node, taken.Round(10*time.Millisecond), first.Token, next.Token)
		if ended == 0 || ended > s.ttl+cutTook {
			t.Errorf("the cut-off holder's session ended %s after the cut began (0: not within %s), want within TTL %s of the disconnect (which took %s): it must end at its safe-until, before its lease can expire", ended, 4*s.ttl, s.ttl, cutTook)
		}
		if stopped == 0 {
			t.Errorf("the cut-off holder still held instances %s after the cut", 4*s.ttl)
		}
		if taken == 0 || taken > s.ttl+2*time.Second {
			t.Errorf("takeover %s after the cut, want at most TTL %s + 2s", taken, s.ttl)
		}
		if ended > taken+250*time.Millisecond { // 250ms: the two polls are not atomic
			t.Errorf("the new holder held from %s, the old one's session lived until %s: they overlapped", taken, ended)
		}
		if next.Token <= first.Token {
			t.Errorf("fencing token %d after the takeover, not above %d", next.Token, first.Token)
		}
		s.dockerCmd("network", "connect", "--alias", victim, network, ctr)
		rejoined := time.Now()
		deadline := rejoined.Add(3 * s.ttl)
		for time.Now().Before(deadline) {
			if up, err := s.metric(victim, "soloist_etcd_session_up"); err == nil && up == 1 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if up := s.mustMetric(victim, "soloist_etcd_session_up"); up != 1 {
			t.Fatalf("%s has no etcd session %s after reconnecting", victim, 3*s.ttl)
		}
		rejected := s.mustMetric(victim, "soloist_fencing_rejections_total") - rejectedBefore
		t.Logf("%s rejoined with a new session in %s; fencing rejections counted there: %v", victim, time.Since(rejoined).Round(10*time.Millisecond), rejected)
		if o, err := s.owners(id); err != nil {
			t.Error(err)
		} else if own, ok := o[id]; ok && own.Token < next.Token {
			t.Errorf("after the rejoin the owner of %s is %v, an older holding than %v", id, own, next)
		}
		s.waitReady(victim, time.Minute)
	})
	if t.Failed() {
		return
	}

	t.Run("RollingRestart", func(t *testing.T) {
		s.t = t
		// Nothing of the partition may be left: a lease of the victim's
		// that ended would expire during the restarts and count as a
		// failover (a CI run: the victim's second session after the
		// rejoin ended too, while its etcd connections recovered).
		s.waitSettled(nodes, time.Minute)
		var ids []string
		for i := range 6 {
			id := fmt.Sprintf("roll-%d", i)
			s.start(nodes[i%3], "Countdown", id, map[string]int{"n": 40})
			counts[id] = 40
			ids = append(ids, id)
		}
		for _, id := range ids {
			s.waitOwner(id, 10*time.Second, func(owner) bool { return true })
		}
		for _, node := range nodes {
			before, err := s.owners(ids...)
			if err != nil {
				t.Fatal(err)
			}
			failovers := map[string]float64{}
			for _, other := range nodes {
				if other != node {
					failovers[other] = s.mustMetric(other, "soloist_failovers_total")
				}
			}
			began := time.Now()
			s.must(2*time.Minute, "restart", "-t", "35", node)
			s.waitReady(node, time.Minute)
			handed := 0
			for id, o := range before {
				if o.Node != node {
					continue
				}
				handed++
				// Handed over: held again, by a new holding (or already
				// completed by it).
				handedOver := false
				for deadline := time.Now().Add(2 * s.ttl); !handedOver && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					if now, err := s.owners(id); err == nil && now[id].Token > o.Token {
						handedOver = true
					} else if st, err := s.status(nodes[0], id); err == nil && st.RuntimeStatus == "Completed" {
						handedOver = true
					}
				}
				if !handedOver {
					t.Errorf("restart of %s: %s (token %d) neither held by a new holding nor completed within %s", node, id, o.Token, 2*s.ttl)
				}
			}
			t.Logf("restart of %s: ready again in %s, %d instances handed over", node, time.Since(began).Round(100*time.Millisecond), handed)
			for other, fo := range failovers {
				if now := s.mustMetric(other, "soloist_failovers_total"); now != fo {
					t.Errorf("restart of %s: %s counted %v failovers (a drain hands over; nothing may fail over)", node, other, now-fo)
				}
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("EtcdMemberDown", func(t *testing.T) {
		s.t = t
		stoppedAt := time.Now()
		s.must(time.Minute, "stop", "-t", "10", "etcd-3")
		var ids []string
		for i := range 6 {
			id := fmt.Sprintf("etcd-down-%d", i)
			s.start(nodes[i%3], "HelloCities", id, nil)
			ids = append(ids, id)
		}
		s.start("soloist-3", "Countdown", "etcd-down-count", map[string]int{"n": 5})
		counts["etcd-down-count"] = 5
		for _, id := range ids {
			out := s.waitCompleted(id, 30*time.Second)
			var got []string
			if err := json.Unmarshal(out, &got); err != nil || len(got) != 3 || got[0] != "Hello Tokyo!" {
				t.Errorf("%s: output %s (%v), want the three greetings", id, out, err)
			}
		}
		t.Logf("with etcd-3 down: 6 starts completed %s after the stop", time.Since(stoppedAt).Round(100*time.Millisecond))
		s.must(time.Minute, "start", "etcd-3")
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if st := s.dockerCmd("inspect", "-f", "{{.State.Health.Status}}", s.container("etcd-3")); st == "healthy" {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if st := s.dockerCmd("inspect", "-f", "{{.State.Health.Status}}", s.container("etcd-3")); st != "healthy" {
			t.Errorf("etcd-3 is %s a minute after it started again", st)
		}
	})

	s.t = t
	// Nothing lost, nothing written twice: every Countdown has its ticks,
	// and each Approval whose holder was killed or cut off ends with the
	// event raised now.
	for id, n := range counts {
		checkTicks(t, id, s.waitCompleted(id, 90*time.Second), n)
	}
	for _, id := range []string{"kill-approval", "partition-approval"} {
		s.raise(nodes[2], id, "approve", "operator")
		var out struct {
			Approved bool   `json:"approved"`
			By       string `json:"by"`
		}
		if err := json.Unmarshal(s.waitCompleted(id, 30*time.Second), &out); err != nil || !out.Approved || out.By != "operator" {
			t.Errorf("%s: output %+v (%v), want approved by operator", id, out, err)
		}
	}
	t.Logf("the compose test took %s", time.Since(began).Round(time.Second))
}

// prometheusScrapes: the stack's Prometheus scrapes every node (up == 1)
// and evaluates Soloist's rules without an error.
func prometheusScrapes(t *testing.T, s *stack) {
	prom := "http://" + s.port("prometheus", 9090)
	query := func(path string, v any) error {
		resp, err := s.http.Get(prom + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(v)
	}
	began := time.Now()
	var up int
	for time.Since(began) < 45*time.Second {
		var r struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		up = 0
		if err := query("/api/v1/query?query="+url.QueryEscape(`up{job="soloist"}`), &r); err == nil {
			for _, res := range r.Data.Result {
				if res.Value[1] == "1" {
					up++
				}
			}
		}
		if up == len(nodes) {
			break
		}
		time.Sleep(time.Second)
	}
	if up != len(nodes) {
		t.Fatalf("Prometheus: %d targets with up == 1 after 45s, want %d", up, len(nodes))
	}
	t.Logf("Prometheus scrapes all %d nodes (up == 1) %s after asked", up, time.Since(began).Round(100*time.Millisecond))
	for time.Since(began) < 60*time.Second {
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string    `json:"name"`
						Type           string    `json:"type"`
						Health         string    `json:"health"`
						LastError      string    `json:"lastError"`
						LastEvaluation time.Time `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := query("/api/v1/rules", &r); err != nil {
			t.Fatal(err)
		}
		alerts, evaluated := 0, 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if rule.Health == "err" {
					t.Fatalf("rule %s: %s", rule.Name, rule.LastError)
				}
				if rule.Type == "alerting" {
					alerts++
					if rule.Health == "ok" && rule.LastEvaluation.Year() > 2000 {
						evaluated++
					}
				}
			}
		}
		if alerts >= 10 && evaluated == alerts {
			t.Logf("Prometheus evaluated all %d alerting rules", alerts)
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatal("Prometheus did not evaluate every alerting rule (health ok) within a minute")
}
