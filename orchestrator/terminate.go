package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// An orchestration that terminates another instance (the TerminateInstance
// action of a driver opened with OpenEngine): the engine makes the
// terminate before the step's commit, retrying through transient store
// errors, so that a committed step has always made it.

// terminateAll makes the step's terminates, in their order, before its
// commit. It returns only when each is made (or found unneeded: the target
// is terminal or gone) or ctx ends.
func (g *Engine) terminateAll(ctx context.Context, ts []TerminateInstance) error {
	transient := func(err error) bool {
		return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrStoreDenied)
	}
	for _, a := range ts {
		err := retry(ctx, func() error { return g.exec.c.terminateOther(ctx, a.InstanceID, a.Reason, a.Recursive) }, transient,
			func(err error, wait time.Duration) {
				g.log.Warn("cannot terminate the instance yet; retrying", g.logArgs("target_instance_id", a.InstanceID, "error", err, "retry_in", wait.Round(time.Millisecond))...)
			})
		if err != nil {
			if ctx.Err() != nil && err == context.Cause(ctx) {
				return err // ended waiting, as before a retry
			}
			return fmt.Errorf("orchestrator: terminate '%s' (task %d): %w", a.InstanceID, a.ID, err)
		}
	}
	return nil
}

// terminateOther terminates id (and with recursive, the sub-orchestrations
// below it, the walk of TerminateRecursive) for an orchestration's
// TerminateInstance. A terminal or missing instance is no error, and a
// terminal one's children are still reached: a repeated terminate, or one
// whose walk was cut short, finishes the job.
func (c *Client) terminateOther(ctx context.Context, id, reason string, recursive bool) error {
	term := func(node string) error {
		_, err := c.Terminate(ctx, node, reason)
		if errors.Is(err, ErrInstanceTerminal) || errors.Is(err, ErrInstanceNotFound) {
			return nil
		}
		return err
	}
	if !recursive {
		return term(id)
	}
	_, err := c.walkTree(ctx, id, func(node string, _ int) error { return term(node) })
	return err
}

// dropRepeatedTerminates leaves out the TerminateInstance actions the
// history records already (a TerminateSent of the same ID and target):
// the Durable Task SDKs keep no history of a terminate, so one that
// replays its code sends the action again with every later step. A repeat
// is made once, when first committed; anything else keeps its ID check.
func (g *Engine) dropRepeatedTerminates(actions []Action) []Action {
	var sent map[int]string
	out := actions[:0:0]
	for _, a := range actions {
		t, ok := a.(TerminateInstance)
		if ok && t.ID < g.nextTask {
			if sent == nil {
				sent = map[int]string{}
				for _, ev := range g.history {
					if ev.EventType == EventTerminateSent {
						sent[ev.TaskID] = ev.InstanceID
					}
				}
			}
			if target, done := sent[t.ID]; done && target == t.InstanceID {
				continue
			}
		}
		out = append(out, a)
	}
	return out
}
