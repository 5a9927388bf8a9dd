package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ScheduleState is the value of a schedule's state key,
// {prefix}v1/schedules/{name}. Only ClaimTick writes it, and only forwards:
// LastTick never goes back.
type ScheduleState struct {
	// LastTick is the latest tick some node claimed (RFC 3339, UTC).
	LastTick time.Time `json:"lastTick"`
	// Result is what that tick did: "started" or "skipped".
	Result TickResult `json:"result"`
	// InstanceID is the schedule's instance.
	InstanceID string `json:"instanceId"`
	// ExecutionID is the execution the tick started ("started") or the
	// active one that made it skip ("skipped").
	ExecutionID string `json:"executionId,omitempty"`
	// Node is the node that claimed the tick.
	Node string `json:"node,omitempty"`
	// UpdatedTime is when the node claimed it.
	UpdatedTime time.Time `json:"updatedTime"`
}

// TickResult is the outcome of a claimed tick.
type TickResult string

// Tick results.
const (
	// TickStarted: the tick started a new execution of the instance.
	TickStarted TickResult = "started"
	// TickSkipped: the instance was still active, so the tick started
	// nothing (never queued).
	TickSkipped TickResult = "skipped"
	// TickTaken: another claim already covered this tick or a later one;
	// this caller did nothing.
	TickTaken TickResult = "taken"
)

// Tick is one tick of a schedule, as ClaimTick takes it.
type Tick struct {
	// Schedule names the schedule (its state key). Required.
	Schedule string
	// Function is the orchestration to start. Required.
	Function string
	// InstanceID is the schedule's fixed instance ID. Required.
	InstanceID string
	// Input is the input of every execution the schedule starts.
	Input json.RawMessage
	// At is the tick's time; every claimer of one tick passes the same At.
	At time.Time
	// Node is stored in the state as the claimer.
	Node string
}

// TickClaim is what ClaimTick did.
type TickClaim struct {
	Result TickResult
	// Status is the execution started (TickStarted), or the active one
	// (TickSkipped); nil for TickTaken.
	Status *Status
	// State is the schedule's state after the claim (for TickTaken, the
	// claim that covered the tick).
	State ScheduleState
}

// ClaimTick handles one tick of a schedule, exactly once across every
// caller that claims the same tick, however many race:
//
//   - if the schedule's state already holds this tick or a later one,
//     another caller handled it: TickTaken, nothing written;
//   - if the instance is active (Pending, Running, Suspended,
//     ContinuedAsNew), the state moves to this tick with result "skipped"
//     in a transaction that compares the state's and the record's
//     revisions: TickSkipped;
//   - otherwise the instance starts as Start would (conflictPolicy=fail,
//     reusePolicy=allow) in ONE transaction that also moves the state to
//     this tick: TickStarted.
//
// Since the state only moves forward and every move compares its revision,
// no tick starts twice and a tick older than the last one claimed (a
// restarted node, a slow clock) starts nothing. An error is a store error;
// the state and the record then say whether the tick was claimed, and
// calling ClaimTick again with the same tick is safe.
func (c *Client) ClaimTick(ctx context.Context, t Tick) (*TickClaim, error) {
	if t.Schedule == "" || t.Function == "" || t.At.IsZero() {
		return nil, &ValidationError{Field: "tick", Reason: "it needs a schedule, a function and a time"}
	}
	if err := ValidateInstanceID(t.InstanceID); err != nil {
		return nil, err
	}
	at := t.At.UTC()
	sKey, iKey := c.keys.Schedule(t.Schedule), c.keys.Instance(t.InstanceID)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		resp, err := c.etcd.Txn(ctx).Then(clientv3.OpGet(sKey), clientv3.OpGet(iKey)).Commit()
		if err != nil {
			return nil, storeErr(err)
		}
		var stateCmp clientv3.Cmp
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 {
			stateCmp = clientv3.Compare(clientv3.CreateRevision(sKey), "=", 0)
		} else {
			stateCmp = clientv3.Compare(clientv3.ModRevision(sKey), "=", kvs[0].ModRevision)
			var cur ScheduleState
			if err := json.Unmarshal(kvs[0].Value, &cur); err != nil {
				// Only a hand-written value gets here; claiming over it
				// loses nothing but the old value.
				c.log.Warn("overwriting corrupt schedule state", "schedule", t.Schedule, "key", sKey, "error", err)
			} else if !cur.LastTick.Before(at) {
				return &TickClaim{Result: TickTaken, State: cur}, nil
			}
		}
		state := ScheduleState{LastTick: at, InstanceID: t.InstanceID, Node: t.Node}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			inst, err := ParseRecord(kvs[0].Value)
			if err != nil {
				return nil, fmt.Errorf("%w; the record at %s must be repaired or purged before the schedule can start it", err, iKey)
			}
			if inst.RuntimeStatus.Active() {
				state.Result, state.ExecutionID, state.UpdatedTime = TickSkipped, inst.ExecutionID, now()
				b, _ := json.Marshal(state)
				tr, err := c.etcd.Txn(ctx).
					If(stateCmp, clientv3.Compare(clientv3.ModRevision(iKey), "=", kvs[0].ModRevision)).
					Then(clientv3.OpPut(sKey, string(b))).Commit()
				if err != nil {
					// Only the state was at stake: claiming the tick again
					// reads whether this write landed.
					return nil, storeErr(err)
				}
				if tr.Succeeded {
					return &TickClaim{Result: TickSkipped, Status: inst.status(), State: state}, nil
				}
				continue // the state or the record changed: decide again
			}
		}
		var written ScheduleState
		var known *Record
		var knownRev int64
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			known, _ = ParseRecord(kvs[0].Value)
			knownRev = kvs[0].ModRevision
		}
		res, err := c.startIf(ctx, t.Function, StartOptions{
			InstanceID: t.InstanceID, Input: t.Input, ConflictPolicy: ConflictFail, ReusePolicy: ReuseAllow,
		}, []clientv3.Cmp{stateCmp}, func(rec *Record) []clientv3.Op {
			written = state
			written.Result, written.ExecutionID, written.UpdatedTime = TickStarted, rec.ExecutionID, rec.CreatedTime
			b, _ := json.Marshal(written)
			return []clientv3.Op{clientv3.OpPut(sKey, string(b))}
		}, known, knownRev)
		switch {
		case err == nil:
			return &TickClaim{Result: TickStarted, Status: res.Status, State: written}, nil
		case errors.Is(err, ErrConditionFailed), errors.Is(err, ErrInstanceExists):
			continue // another claim, or a start by hand: decide again
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: tick %s of schedule '%s' lost %d races in a row", ErrUnavailable, at.Format(time.RFC3339), t.Schedule, maxAttempts)
}

// ScheduleState reads a schedule's state; nil if no tick was ever claimed.
func (c *Client) ScheduleState(ctx context.Context, name string) (*ScheduleState, error) {
	resp, err := c.etcd.Get(ctx, c.keys.Schedule(name))
	if err != nil {
		return nil, storeErr(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var s ScheduleState
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
		return nil, fmt.Errorf("orchestrator: corrupt schedule state at %s: %w", resp.Kvs[0].Key, err)
	}
	return &s, nil
}
