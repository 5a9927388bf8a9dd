package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/integration/harness"
)

// grandchildSlack is how long after a node's SIGKILL an effect of its
// token may still arrive: the supervisor notices the death at once (EOF on
// its lifeline pipe) and kills the program's whole tree; a post already in
// flight may land. On an idle machine the last effect lands within a few
// ms; under a loaded CI run (load average about 10 on 2 cores) one landed
// 124 ms after the kill, the supervisor waiting for the CPU. A quarter of
// the suite's 2 s TTL still tells a tree taken down with its node from one
// left running (which posts on until the test ends, past the new holder's
// first effect, which is checked as well).
const grandchildSlack = 500 * time.Millisecond

// TestFaultKillGrandchild kills with SIGKILL the holder of a probe whose
// exec program has started a child of its own that keeps posting effects
// (a shell script's background loop), in the program's process group or,
// with setsid, out of it. The parent-death signal reaches only the direct
// child; the exec supervisor must take the whole tree down with the node:
// no effect of the old token may arrive later than grandchildSlack after
// the kill, nor after the new holder's first effect.
func TestFaultKillGrandchild(t *testing.T) {
	type kill struct {
		at      time.Duration
		h       harness.Holding
		variant string
	}
	var kills []kill
	runScenario(t, "kill -9 holder, grandchild", true, harness.WorkloadOptions{}, func(s *scenario) {
		for i := 0; i < short(4, 20); i++ {
			variant := []string{"group", "setsid"}[i%2]
			pace(time.Second)
			// IgnoreRefusal: an orphan would go on posting for as long as
			// it lives, refused or not.
			h, ok := s.startProbeInput(harness.EffectInput{Steps: 25, StepMs: 200, IgnoreRefusal: true, Grandchild: variant})
			if !ok {
				return
			}
			if !s.waitEffect(h, "tick", 5*time.Second) {
				s.t.Errorf("the grandchild (%s) of %s's program never ticked", variant, h.InstanceID)
				continue
			}
			victim := s.env.Node(h.Node)
			held := s.env.HeldBy(victim.ID)
			at := victim.Kill()
			s.env.WatchTakeover(at, held, false)
			kills = append(kills, kill{at: at, h: h, variant: variant})
			if d, ok := s.awaitTakeover(at, h, 5*ttl); ok {
				s.env.Logf("%s killed; %s (grandchild: %s) taken over after %s", victim.ID, h.InstanceID, variant, d.Round(time.Millisecond))
			} else {
				s.t.Errorf("%s was not taken over within %s of killing its holder %s", h.InstanceID, 5*ttl, victim.ID)
			}
			if err := victim.Restart(20 * time.Second); err != nil {
				s.t.Fatal(err)
			}
		}
		s.post = append(s.post, func(*harness.Result) {
			effects := s.env.Sink.Effects()
			for _, k := range kills {
				firstNew := time.Duration(-1)
				for _, ef := range effects {
					if ef.Execution == k.h.ExecutionID && ef.Token > k.h.Token {
						firstNew = ef.At
						break
					}
				}
				last := time.Duration(-1)
				var late []string
				for _, ef := range effects {
					if ef.Execution != k.h.ExecutionID || ef.Token != k.h.Token {
						continue
					}
					last = max(last, ef.At)
					if ef.At > k.at+grandchildSlack || (firstNew >= 0 && ef.At > firstNew) {
						late = append(late, fmt.Sprintf("%s/%d (pid %d) at kill%+dms", ef.Kind, ef.Step, ef.PID, (ef.At-k.at).Milliseconds()))
					}
				}
				newAt := "none"
				if firstNew >= 0 {
					newAt = fmt.Sprintf("kill%+dms", (firstNew - k.at).Milliseconds())
				}
				s.env.Logf("%s (grandchild %s): last effect of the killed holder's token %d at kill%+dms; new holder's first effect at %s; %d late effects",
					k.h.InstanceID, k.variant, k.h.Token, (last - k.at).Milliseconds(), newAt, len(late))
				if len(late) > 0 {
					shown := late
					if len(shown) > 5 {
						shown = append(shown[:3:3], fmt.Sprintf("... %d more ...", len(late)-4), late[len(late)-1])
					}
					s.t.Errorf("%s (grandchild %s): %d effects of token %d arrived later than %s after its node was killed, or after the new holder's first effect: %s",
						k.h.InstanceID, k.variant, len(late), k.h.Token, grandchildSlack, strings.Join(shown, ", "))
				}
			}
		})
	})
}

// waitEffect waits until the program of holding h has posted an effect of
// kind.
func (s *scenario) waitEffect(h harness.Holding, kind string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, ef := range s.env.Sink.Effects() {
			if ef.Execution == h.ExecutionID && ef.Token == h.Token && ef.Kind == kind {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
