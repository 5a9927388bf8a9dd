package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/integration/harness"
)

const ttl = 2 * time.Second

// scenario is one fault scenario in progress: a deployment, its racing
// workload, and a recorded client of its own for probes.
type scenario struct {
	t     *testing.T
	env   *harness.Env
	hist  *harness.History
	probe *harness.APIClient
	rng   *rand.Rand
	// strict: no older holder of an execution acts after a newer one.
	strict bool
	post   []func(r *harness.Result)
	// note is added to the scenario's name in its figures row: what the
	// scenario measured beyond the common columns.
	note string
}

// setup is how a scenario deploys and what it checks beyond the defaults.
type setup struct {
	env harness.Options // TTL defaults to ttl
	// noWorkload: no racing clients; the scenario's own operations are the
	// history.
	noWorkload bool
	// noEffects are the functions that post no effects (demo orchestrations).
	noEffects []string
	// settle is how long every execution may take to end after the faults.
	// Defaults to 45s.
	settle time.Duration
}

// runScenario deploys, runs the workload while inject injects faults,
// restores everything, lets it settle, checks the history and reports the
// figures.
func runScenario(t *testing.T, name string, strict bool, wopts harness.WorkloadOptions, inject func(s *scenario)) {
	runScenarioWith(t, name, strict, setup{}, wopts, inject)
}

// runScenarioWith is runScenario with a deployment and checks of its own.
func runScenarioWith(t *testing.T, name string, strict bool, su setup, wopts harness.WorkloadOptions, inject func(s *scenario)) {
	b := binaries(t)
	began := time.Now()
	if su.env.TTL == 0 {
		su.env.TTL = ttl
	}
	if su.settle == 0 {
		su.settle = 45 * time.Second
	}
	env := harness.New(t, b, raceNodes, su.env)
	s := &scenario{
		t: t, env: env, hist: &harness.History{}, strict: strict,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
	}
	s.probe = harness.NewClient(99, s.hist, env.Clock, 5*time.Second)
	var wl *harness.Workload
	if !su.noWorkload {
		wl = env.StartWorkload(s.hist, wopts)
	}
	inject(s)
	if wl != nil {
		wl.Stop()
		env.Logf("workload stopped; restoring every process and connection")
	}
	env.Restore()
	if active := env.Settle(su.settle); len(active) > 0 {
		if len(active) > 20 {
			active = append(active[:20], fmt.Sprintf("and %d more", len(active)-20))
		}
		t.Errorf("instances still active after the settle time: %s", strings.Join(active, ", "))
	}
	res := env.Check(s.hist, harness.CheckOptions{StrictEffects: strict, PorcupineTimeout: short(30*time.Second, 3*time.Minute), NoEffects: su.noEffects})
	for _, f := range s.post {
		f(res)
	}
	for _, f := range env.Faults() {
		if f.Kind == "kill" {
			s.checkOrphans(res)
			break
		}
	}
	fig := harness.FiguresOf(name, su.env.TTL, res, time.Since(began))
	fig.Note = s.note
	row := fig.Row()
	harness.AddRow(row)
	t.Logf("figures:\n%s\n%s", harness.Header, row)
	t.Logf("executions %d, holdings %d, porcupine %s, stale effects after terminate/replace %d, leases lost %v",
		res.Executions, res.Holdings, res.Porcupine, res.StaleCross, leasesLost(res.Metrics))
	for i, v := range res.Violations {
		if i == 50 {
			t.Errorf("... and %d more violations", len(res.Violations)-50)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if n := env.Races(); n > 0 {
		t.Errorf("the soloist nodes reported %d data races; see their logs", n)
	}
}

func leasesLost(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		if strings.HasPrefix(k, "soloist_leases_lost_total{") && v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.TrimSuffix(strings.TrimPrefix(k, "soloist_leases_lost_total{reason=\""), "\"}"), v))
		}
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// startProbe starts a long execution of a fresh instance and waits until
// a node holds it.
func (s *scenario) startProbe(steps int, ignoreRefusal bool) (harness.Holding, bool) {
	return s.startProbeInput(harness.EffectInput{Steps: steps, StepMs: 200, IgnoreRefusal: ignoreRefusal})
}

// startProbeInput is startProbe with the probe's whole input.
func (s *scenario) startProbeInput(in harness.EffectInput) (harness.Holding, bool) {
	giveUp := time.Now().Add(30 * time.Second)
	for attempt := 0; time.Now().Before(giveUp); attempt++ {
		nodes := s.upNodes()
		if len(nodes) == 0 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		n := nodes[s.rng.IntN(len(nodes))]
		id := fmt.Sprintf("probe-%d-%d", attempt, time.Now().UnixNano()%1e9)
		op := s.probe.Start(context.Background(), n, id, "", "", in)
		if op.Outcome != harness.Started {
			// A node without an etcd session takes no starts (503): wait.
			s.env.Logf("probe start on %s: %s %s", n.ID, op.Outcome, op.Err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		h, ok := s.env.WaitHolder(id, 10*time.Second)
		if !ok {
			s.env.Logf("probe %s was not taken by any node in time", id)
			continue
		}
		// Its program runs: it reported its beginning to the sink.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, ef := range s.env.Sink.Effects() {
				if ef.Execution == h.ExecutionID && ef.Token == h.Token {
					return h, true
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		s.env.Logf("probe %s held by %s never reported its beginning", id, h.Node)
	}
	s.t.Errorf("could not start a probe instance")
	return harness.Holding{}, false
}

// probeOn starts probes until one is held by node n (instances are spread
// by rendezvous hashing, so a few tries suffice).
func (s *scenario) probeOn(n *harness.Node, steps int) (harness.Holding, bool) {
	for try := 0; try < 10; try++ {
		h, ok := s.startProbe(steps, false)
		if !ok {
			return h, false
		}
		if h.Node == n.ID {
			return h, true
		}
	}
	s.env.Logf("no probe landed on %s in 10 tries", n.ID)
	return harness.Holding{}, false
}

func (s *scenario) upNodes() []*harness.Node {
	var out []*harness.Node
	for _, n := range s.env.Nodes {
		if !n.Down() && !n.Proc.Paused() && !n.IsCut() {
			out = append(out, n)
		}
	}
	return out
}

// awaitTakeover waits until a new holder ran the execution of h after at.
func (s *scenario) awaitTakeover(at time.Duration, h harness.Holding, timeout time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(timeout)
	w := harness.Watch{At: at, Holding: h}
	for time.Now().Before(deadline) {
		if d, ok := s.env.TakeoverTime(w, s.env.Sink.Effects()); ok {
			return d, true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, false
}

// watchAll measures the takeover of every holding from at (an etcd
// fault): only the holdings that end give a sample.
func (s *scenario) watchAll(at time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs, err := s.env.Holdings(ctx)
	if err != nil {
		s.env.Logf("holdings before the etcd fault: %v", err)
		return
	}
	s.env.WatchTakeover(at, hs, false)
}

// pace lets the workload run for d (pacing between faults, never an
// assertion).
func pace(d time.Duration) { time.Sleep(d) }

// TestFaultKillHolders kills the holder of a running instance with SIGKILL,
// again and again, restarting it each time.
func TestFaultKillHolders(t *testing.T) {
	runScenario(t, "kill -9 holders", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(3, 25); i++ {
			pace(time.Second)
			h, ok := s.startProbe(25, false)
			if !ok {
				return
			}
			victim := s.env.Node(h.Node)
			held := s.env.HeldBy(victim.ID)
			at := victim.Kill()
			s.env.WatchTakeover(at, held, false)
			if d, ok := s.awaitTakeover(at, h, 5*ttl); ok {
				s.env.Logf("%s killed; %s taken over after %s", victim.ID, h.InstanceID, d.Round(time.Millisecond))
			} else {
				s.t.Errorf("%s was not taken over within %s of killing its holder %s", h.InstanceID, 5*ttl, victim.ID)
			}
			if err := victim.Restart(20 * time.Second); err != nil {
				s.t.Fatal(err)
			}
		}
	})
}

// checkOrphans looks for programs of killed nodes that kept acting after
// their node died: SIGKILL of the node reaches none of its descendants by
// itself; the exec supervisor of each program must kill them.
func (s *scenario) checkOrphans(*harness.Result) {
	s.t.Run("exec programs die with their node", func(t *testing.T) {
		type hk struct {
			exec  string
			token int64
		}
		killedAt := map[hk]time.Duration{}
		tokenNode := s.env.TokenNodes()
		effects := s.env.Sink.Effects()
		for _, f := range s.env.Faults() {
			if f.Kind != "kill" {
				continue
			}
			for _, ef := range effects {
				// Tokens the victim held when it died: its effects before the kill.
				k := hk{ef.Execution, ef.Token}
				if _, seen := killedAt[k]; !seen && ef.At < f.At && tokenNode[ef.Token] == f.Target {
					killedAt[k] = f.At
				}
			}
		}
		var orphans []string
		for _, ef := range effects {
			if at, ok := killedAt[hk{ef.Execution, ef.Token}]; ok && ef.At > at+300*time.Millisecond {
				orphans = append(orphans, fmt.Sprintf("%s %s/%d of token %d (pid %d) %s after its node was killed%s",
					ef.Instance, ef.Kind, ef.Step, ef.Token, ef.PID, (ef.At-at).Round(time.Millisecond), map[bool]string{true: "", false: ", refused by the sink: a newer holder had acted"}[ef.Accepted]))
			}
		}
		if len(orphans) > 0 {
			t.Errorf("the exec programs of a node killed with SIGKILL outlived it and kept acting with the old fencing token; "+
				"%d orphan effects:\n%s", len(orphans), strings.Join(orphans, "\n"))
		}
	})
}

// TestFaultZombie pauses a holder with SIGSTOP past its TTL, lets another
// node take over, and wakes it with SIGCONT: the zombie must not write to
// etcd, and must kill its exec child as soon as it notices.
func TestFaultZombie(t *testing.T) {
	runScenario(t, "SIGSTOP holder past TTL (zombie)", false, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(2, 12); i++ {
			pace(time.Second)
			// The probe ignores the sink's refusals, so its program outlives
			// the pause unless the woken node kills it.
			h, ok := s.startProbe(40, true)
			if !ok {
				return
			}
			victim := s.env.Node(h.Node)
			held := s.env.HeldBy(victim.ID)
			at, err := victim.Pause()
			if err != nil {
				s.t.Fatal(err)
			}
			s.env.WatchTakeover(at, held, false)
			d, ok := s.awaitTakeover(at, h, 5*ttl)
			if !ok {
				s.t.Errorf("%s was not taken over within %s of pausing its holder %s", h.InstanceID, 5*ttl, victim.ID)
			}
			pace(ttl / 2) // paused well past the TTL
			var oldPIDs []int
			seen := map[int]bool{}
			for _, ef := range s.env.Sink.Effects() {
				if ef.Execution == h.ExecutionID && ef.Token == h.Token && !seen[ef.PID] {
					seen[ef.PID] = true
					oldPIDs = append(oldPIDs, ef.PID)
				}
			}
			woke, err := victim.Resume()
			if err != nil {
				s.t.Fatal(err)
			}
			// The woken node must notice and kill its program.
			deadline := time.Now().Add(5 * time.Second)
			alive := oldPIDs
			for len(alive) > 0 && time.Now().Before(deadline) {
				var still []int
				for _, pid := range alive {
					if harness.HelperAlive(pid) {
						still = append(still, pid)
					}
				}
				alive = still
				if len(alive) > 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			killed := s.env.Clock.Now() - woke
			if len(alive) > 0 {
				s.t.Errorf("zombie %s did not kill its program (pids %v) within 5s of SIGCONT", victim.ID, alive)
			}
			s.env.Logf("zombie %s: taken over after %s; woke at %s; its program (pids %v) dead within %s",
				victim.ID, d.Round(time.Millisecond), harness.Stamp(woke), oldPIDs, killed.Round(time.Millisecond))
			s.post = append(s.post, func(r *harness.Result) {
				// No effect of the zombie's token after it woke and killed
				// its program (one in flight at the wake-up may land).
				for _, ef := range s.env.Sink.Effects() {
					if ef.Execution == h.ExecutionID && ef.Token == h.Token && ef.At > woke+killed+200*time.Millisecond {
						s.t.Errorf("zombie effect %s/%d of token %d at %s, after the zombie woke at %s and killed its program",
							ef.Kind, ef.Step, ef.Token, harness.Stamp(ef.At), harness.Stamp(woke))
					}
				}
				noticed := false
				for _, ev := range s.env.Events() {
					if ev.Node == victim.ID && ev.At >= woke && (ev.Msg == "etcd session ended" || strings.HasPrefix(ev.Msg, "run stopped")) {
						noticed = true
						break
					}
				}
				if !noticed {
					s.t.Errorf("zombie %s never logged that it lost its session or stopped its run after waking", victim.ID)
				}
			})
		}
	})
}

// TestFaultPartition cuts a holder from every etcd member and heals it.
// The cut node stops its runs at its safe-until deadline, before etcd can
// expire its lease, so no effect of the old holder follows the new one's.
func TestFaultPartition(t *testing.T) {
	runScenario(t, "node cut from etcd", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(2, 15); i++ {
			pace(time.Second)
			h, ok := s.startProbe(25, false)
			if !ok {
				return
			}
			victim := s.env.Node(h.Node)
			held := s.env.HeldBy(victim.ID)
			at := victim.Cut()
			s.env.WatchTakeover(at, held, false)
			if d, ok := s.awaitTakeover(at, h, 5*ttl); ok {
				s.env.Logf("%s cut; %s taken over after %s", victim.ID, h.InstanceID, d.Round(time.Millisecond))
			} else {
				s.t.Errorf("%s was not taken over within %s of cutting its holder %s", h.InstanceID, 5*ttl, victim.ID)
			}
			pace(ttl)
			victim.Heal()
			if err := victim.WaitReady(20 * time.Second); err != nil {
				s.t.Errorf("after healing: %v", err)
			}
		}
	})
}

// TestFaultEtcdLeader kills the etcd leader with SIGKILL and restarts it.
func TestFaultEtcdLeader(t *testing.T) {
	runScenario(t, "etcd leader killed", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(2, 12); i++ {
			pace(time.Second)
			s.startProbe(40, false)
			leader, err := s.env.Etcd.Leader(context.Background())
			if err != nil {
				s.t.Fatal(err)
			}
			// Holders whose session does not survive the election stop,
			// and are taken over once etcd expires their lease.
			s.watchAll(s.env.Fault("etcd-kill", leader.Name, "leader"))
			s.env.Etcd.Kill(leader)
			pace(3 * time.Second)
			s.env.Fault("etcd-restart", leader.Name, "")
			if err := s.env.Etcd.Restart(leader); err != nil {
				s.t.Fatal(err)
			}
			if err := s.env.Etcd.WaitHealthy(30 * time.Second); err != nil {
				s.t.Fatal(err)
			}
		}
		pace(2 * time.Second)
	})
}

// TestFaultEtcdMinority loses one etcd member of three for a while; a
// holder is killed meanwhile, so a takeover runs on the remaining quorum.
func TestFaultEtcdMinority(t *testing.T) {
	runScenario(t, "etcd minority lost", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(1, 6); i++ {
			pace(time.Second)
			leader, err := s.env.Etcd.Leader(context.Background())
			if err != nil {
				s.t.Fatal(err)
			}
			var lost *harness.Member
			for _, m := range s.env.Etcd.Members {
				if m != leader {
					lost = m
					break
				}
			}
			s.env.Fault("etcd-kill", lost.Name, "follower")
			s.env.Etcd.Kill(lost)
			pace(2 * time.Second)
			if h, ok := s.startProbe(25, false); ok {
				victim := s.env.Node(h.Node)
				held := s.env.HeldBy(victim.ID)
				at := victim.Kill()
				s.env.WatchTakeover(at, held, false)
				if _, ok := s.awaitTakeover(at, h, 5*ttl); !ok {
					s.t.Errorf("%s was not taken over on two etcd members within %s", h.InstanceID, 5*ttl)
				}
				if err := victim.Restart(20 * time.Second); err != nil {
					s.t.Fatal(err)
				}
			}
			pace(2 * time.Second)
			s.env.Fault("etcd-restart", lost.Name, "")
			if err := s.env.Etcd.Restart(lost); err != nil {
				s.t.Fatal(err)
			}
			if err := s.env.Etcd.WaitHealthy(30 * time.Second); err != nil {
				s.t.Fatal(err)
			}
			pace(2 * time.Second)
		}
	})
}

// TestFaultEtcdAll kills every etcd member at once and restarts them:
// everything acknowledged before survives (fsync), and the nodes recover.
func TestFaultEtcdAll(t *testing.T) {
	runScenario(t, "all etcd members killed", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(1, 6); i++ {
			pace(2 * time.Second)
			s.startProbe(40, false)
			s.watchAll(s.env.Clock.Now())
			for _, m := range s.env.Etcd.Members {
				s.env.Fault("etcd-kill", m.Name, "all")
				s.env.Etcd.Kill(m)
			}
			pace(3 * time.Second)
			for _, m := range s.env.Etcd.Members {
				s.env.Fault("etcd-restart", m.Name, "")
				if err := s.env.Etcd.Restart(m); err != nil {
					s.t.Fatal(err)
				}
			}
			if err := s.env.Etcd.WaitHealthy(30 * time.Second); err != nil {
				s.t.Fatal(err)
			}
			for _, n := range s.env.Nodes {
				if err := n.WaitReady(30 * time.Second); err != nil {
					s.t.Errorf("after etcd came back: %v", err)
				}
			}
			pace(3 * time.Second)
		}
	})
}

// TestFaultRollingRestart restarts every node in turn with SIGTERM: every
// instance moves by handoff, none by failover.
func TestFaultRollingRestart(t *testing.T) {
	var handedOff int
	runScenario(t, "rolling restart (SIGTERM)", true, harness.WorkloadOptions{}, func(s *scenario) {
		for round := 0; round < short(1, 5); round++ {
			for _, victim := range s.env.Nodes {
				pace(time.Second)
				// Make sure the node holds something to hand off.
				s.probeOn(victim, 25)
				held := s.env.HeldBy(victim.ID)
				at, err := victim.Term(20 * time.Second)
				if err != nil {
					s.t.Errorf("%s did not drain cleanly: %v\n%s", victim.ID, err, victim.Proc.Tail(30))
				}
				s.env.WatchTakeover(at, held, true)
				handedOff += len(held)
				if err := victim.Restart(20 * time.Second); err != nil {
					s.t.Fatal(err)
				}
				for _, h := range held {
					if _, ok := s.awaitTakeover(at, h, 5*time.Second); !ok {
						s.env.Logf("%s (held by %s) not run again after the drain (it may have ended or been terminated)", h.InstanceID, victim.ID)
					}
				}
			}
		}
		s.post = append(s.post, func(r *harness.Result) {
			if f := r.Metrics["soloist_failovers_total"]; f != 0 {
				t.Errorf("a rolling restart counted %.0f failovers; every instance should move by handoff", f)
			}
			if h := r.Metrics["soloist_handoffs_total"]; h == 0 && handedOff > 0 {
				t.Errorf("no handoffs counted, though the drained nodes held %d instances", handedOff)
			}
		})
	})
}

// TestFaultMix runs every fault at random under load for a bounded time.
func TestFaultMix(t *testing.T) {
	runScenario(t, "mix under load", false, harness.WorkloadOptions{Clients: 8}, func(s *scenario) {
		deadline := time.Now().Add(short(30*time.Second, 5*time.Minute))
		faults := []string{"kill", "pause", "cut", "etcd-leader", "term"}
		for time.Now().Before(deadline) {
			pace(time.Duration(500+s.rng.IntN(1000)) * time.Millisecond)
			// The previous fault is over: every node has its session again.
			for _, n := range s.env.Nodes {
				if err := n.WaitReady(30 * time.Second); err != nil {
					s.t.Errorf("after a fault: %v", err)
				}
			}
			kind := faults[s.rng.IntN(len(faults))]
			var victim *harness.Node
			if kind != "etcd-leader" {
				// The victim holds at least a running probe.
				h, ok := s.startProbe(25, false)
				if !ok {
					continue
				}
				victim = s.env.Node(h.Node)
			}
			var held []harness.Holding
			if victim != nil {
				held = s.env.HeldBy(victim.ID)
			}
			switch kind {
			case "kill":
				s.env.WatchTakeover(victim.Kill(), held, false)
				pace(time.Duration(s.rng.IntN(2000)) * time.Millisecond)
				if err := victim.Restart(20 * time.Second); err != nil {
					s.t.Fatal(err)
				}
			case "pause":
				at, err := victim.Pause()
				if err != nil {
					s.t.Fatal(err)
				}
				s.env.WatchTakeover(at, held, false)
				pace(ttl + time.Duration(s.rng.IntN(2000))*time.Millisecond)
				if _, err := victim.Resume(); err != nil {
					s.t.Fatal(err)
				}
			case "cut":
				s.env.WatchTakeover(victim.Cut(), held, false)
				pace(ttl + time.Duration(s.rng.IntN(2000))*time.Millisecond)
				victim.Heal()
			case "etcd-leader":
				leader, err := s.env.Etcd.Leader(context.Background())
				if err != nil {
					s.env.Logf("no leader to kill: %v", err)
					continue
				}
				s.env.Fault("etcd-kill", leader.Name, "leader")
				s.env.Etcd.Kill(leader)
				pace(time.Duration(1000+s.rng.IntN(2000)) * time.Millisecond)
				s.env.Fault("etcd-restart", leader.Name, "")
				if err := s.env.Etcd.Restart(leader); err != nil {
					s.t.Fatal(err)
				}
			case "term":
				at, err := victim.Term(20 * time.Second)
				if err != nil {
					s.env.Logf("%s drain: %v", victim.ID, err)
				}
				s.env.WatchTakeover(at, held, true)
				if err := victim.Restart(20 * time.Second); err != nil {
					s.t.Fatal(err)
				}
			}
		}
	})
}
