package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType names a history event, in the Durable Task vocabulary.
type EventType string

// History event types.
const (
	EventExecutionStarted   EventType = "ExecutionStarted"
	EventTaskScheduled      EventType = "TaskScheduled"
	EventTaskCompleted      EventType = "TaskCompleted"
	EventTaskFailed         EventType = "TaskFailed"
	EventTimerCreated       EventType = "TimerCreated"
	EventTimerFired         EventType = "TimerFired"
	EventEventRaised        EventType = "EventRaised"
	EventExecutionSuspended EventType = "ExecutionSuspended"
	EventExecutionResumed   EventType = "ExecutionResumed"
	EventContinuedAsNew     EventType = "ContinuedAsNew"
	EventExecutionCompleted EventType = "ExecutionCompleted"
	// EventExecutionRewound marks where a rewind resumed a failed execution.
	EventExecutionRewound EventType = "ExecutionRewound"
	// EventEventSent records an event this orchestration raised to another
	// instance (SendEvent); the event's put is in the same commit.
	EventEventSent EventType = "EventSent"
	// EventTerminateSent records a terminate this orchestration made of
	// another instance (TerminateInstance), made before the step's commit.
	EventTerminateSent EventType = "TerminateSent"
	// A sub-orchestration: created (its start is the task's work), then
	// completed or failed (delivered to the parent's inbox by the child's
	// final write).
	EventSubOrchestrationInstanceCreated   EventType = "SubOrchestrationInstanceCreated"
	EventSubOrchestrationInstanceCompleted EventType = "SubOrchestrationInstanceCompleted"
	EventSubOrchestrationInstanceFailed    EventType = "SubOrchestrationInstanceFailed"
)

// MaxHistoryEvents bounds one execution's history. An orchestration that
// would pass it fails with ErrHistoryLimit; loops that run forever must use
// ContinueAsNew, which starts a fresh history.
const MaxHistoryEvents = 10000

// maxFailureBytes bounds a failure message kept in history and status.
const maxFailureBytes = 16 << 10

// HistoryEvent is one entry of an execution's history.
type HistoryEvent struct {
	// Seq is the event's position in its execution's history, from 0.
	Seq       int       `json:"seq"`
	EventType EventType `json:"eventType"`
	Timestamp time.Time `json:"timestamp"`
	// TaskID links TaskScheduled to TaskCompleted/TaskFailed and
	// TimerCreated to TimerFired.
	TaskID int `json:"taskId,omitempty"`
	// Name is the orchestration (ExecutionStarted), activity (TaskScheduled)
	// or event (EventRaised) name.
	Name    string          `json:"name,omitempty"`
	Input   json.RawMessage `json:"input,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Failure string          `json:"failure,omitempty"`
	// FailureDetails describe a TaskFailed, a sub-orchestration's failure
	// or a Failed ExecutionCompleted.
	FailureDetails *FailureDetails `json:"failureDetails,omitempty"`
	// NonRetriable marks a TaskFailed that no retry can mend.
	NonRetriable bool       `json:"nonRetriable,omitempty"`
	FireAt       *time.Time `json:"fireAt,omitempty"`
	// Status is the final runtime status (ExecutionCompleted).
	Status RuntimeStatus `json:"status,omitempty"`
	Reason string        `json:"reason,omitempty"`
	// Recursive, on TerminateSent, says the target's sub-orchestrations
	// were terminated too.
	Recursive bool `json:"recursive,omitempty"`
	// InputRef and ResultRef name the blob (under the execution's blob
	// prefix) that holds Input or Result when it was too large to carry
	// inline; readers resolve them.
	InputRef  string `json:"inputRef,omitempty"`
	ResultRef string `json:"resultRef,omitempty"`
	// Version is the version a task or sub-orchestration was scheduled
	// with, if any.
	Version string `json:"version,omitempty"`
	// InstanceID is a sub-orchestration's instance ID, or the target of
	// EventSent and TerminateSent.
	InstanceID string `json:"instanceId,omitempty"`
	// ExecutionID, on an inbox entry, is the execution it is for; an
	// execution ignores entries for another (a sub-orchestration's result
	// arriving after its parent restarted).
	ExecutionID string `json:"executionId,omitempty"`
	// InboxKey is the inbox key an event was consumed from (EventRaised,
	// ExecutionSuspended, ExecutionResumed): replay uses it to deliver each
	// inbox entry once.
	InboxKey string `json:"inboxKey,omitempty"`
}

// History reads an execution's history, large payloads included; an empty
// executionID means the current one.
func (c *Client) History(ctx context.Context, id, executionID string) ([]HistoryEvent, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	if executionID == "" {
		rec, _, err := c.read(ctx, id)
		if err != nil {
			return nil, err
		}
		executionID = rec.ExecutionID
	}
	h, err := c.readHistory(ctx, id, executionID, nil, 0)
	if err != nil {
		return nil, err
	}
	if err := c.resolve(ctx, id, executionID, h, func(*HistoryEvent) (bool, bool) { return true, true }); err != nil {
		return nil, err
	}
	return h, nil
}

// historyPage is how many history keys one read returns.
const historyPage = 256

// readHistory reads the history keys of one execution in pages at one
// revision. first, if not nil, is a page already read (with more after it
// when more is set), at revision rev.
func (c *Client) readHistory(ctx context.Context, id, executionID string, first *clientv3.GetResponse, rev int64) ([]HistoryEvent, error) {
	prefix := c.keys.History(id, executionID)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var out []HistoryEvent
	resp := first
	from := prefix
	for {
		if resp == nil {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(historyPage),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			r, err := c.etcd.Get(ctx, from, opts...)
			if err != nil {
				return nil, storeErr(err)
			}
			resp = r
			if rev == 0 {
				// A header carries etcd's current revision, also for a
				// read at an older one: only the first page's is ours.
				rev = r.Header.Revision
			}
		}
		var err error
		if out, err = appendHistory(out, resp.Kvs); err != nil {
			return nil, err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		resp = nil
	}
	for i, ev := range out {
		if ev.Seq != i {
			return nil, fmt.Errorf("orchestrator: history of %s/%s has event %d at position %d", id, executionID, ev.Seq, i)
		}
	}
	return out, nil
}

func appendHistory(out []HistoryEvent, kvs []*mvccpb.KeyValue) ([]HistoryEvent, error) {
	for _, kv := range kvs {
		var batch []HistoryEvent
		if err := json.Unmarshal(kv.Value, &batch); err != nil {
			return nil, fmt.Errorf("orchestrator: corrupt history at %s: %w", kv.Key, err)
		}
		out = append(out, batch...)
	}
	return out, nil
}

// blobsPerRead bounds the blobs one read fetches.
const blobsPerRead = 16

// resolve fills in the Input and Result of events whose payload is a blob,
// for the events and fields that want says.
func (c *Client) resolve(ctx context.Context, id, executionID string, events []HistoryEvent, want func(*HistoryEvent) (input, result bool)) error {
	type ref struct {
		key string
		dst *json.RawMessage
	}
	var refs []ref
	prefix := c.keys.Blobs(id, executionID)
	for i := range events {
		ev := &events[i]
		in, res := want(ev)
		if in && ev.InputRef != "" && len(ev.Input) == 0 {
			refs = append(refs, ref{c.refKey(id, prefix, ev.InputRef), &ev.Input})
		}
		if res && ev.ResultRef != "" && len(ev.Result) == 0 {
			refs = append(refs, ref{c.refKey(id, prefix, ev.ResultRef), &ev.Result})
		}
	}
	for len(refs) > 0 {
		n := min(len(refs), blobsPerRead)
		ops := make([]clientv3.Op, n)
		for i := range n {
			ops[i] = clientv3.OpGet(refs[i].key)
		}
		resp, err := c.etcd.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return storeErr(err)
		}
		for i := range n {
			kvs := resp.Responses[i].GetResponseRange().Kvs
			if len(kvs) == 0 {
				return fmt.Errorf("orchestrator: history of %s/%s refers to %s, which is missing", id, executionID, refs[i].key)
			}
			*refs[i].dst = json.RawMessage(kvs[0].Value)
		}
		refs = refs[n:]
	}
	return nil
}

// Refs that name an instance's payload keys rather than a blob.
const (
	refInput  = "@input"
	refOutput = "@output"
)

func (c *Client) refKey(id, blobPrefix, ref string) string {
	switch ref {
	case refInput:
		return c.keys.Input(id)
	case refOutput:
		return c.keys.Output(id)
	}
	return blobPrefix + ref
}
