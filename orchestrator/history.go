package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

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
)

// MaxHistoryEvents bounds one execution's history. An orchestration that
// would pass it fails with ErrHistoryLimit; loops that run forever must use
// ContinueAsNew, which starts a fresh history.
const MaxHistoryEvents = 10000

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
	FireAt  *time.Time      `json:"fireAt,omitempty"`
	// Status is the final runtime status (ExecutionCompleted).
	Status RuntimeStatus `json:"status,omitempty"`
	Reason string        `json:"reason,omitempty"`
}

// HistoryPrefix is where the history of every execution of id lives.
func (k Keys) HistoryPrefix(id string) string { return k.prefix + "v1/history/" + id + "/" }

// History is the history prefix of one execution; each key below it holds
// the JSON array of events one step appended, named by the first event's
// zero-padded sequence number.
func (k Keys) History(id, executionID string) string {
	return k.HistoryPrefix(id) + executionID + "/"
}

// InboxPrefix is where events waiting for any execution of id live.
func (k Keys) InboxPrefix(id string) string { return k.prefix + "v1/inbox/" + id + "/" }

// Inbox is the prefix of events raised for one execution and not yet
// consumed into its history.
func (k Keys) Inbox(id, executionID string) string { return k.InboxPrefix(id) + executionID + "/" }

func historyKey(prefix string, seq int) string { return fmt.Sprintf("%s%010d", prefix, seq) }

// History reads an execution's history; an empty executionID means the
// current one.
func (c *Client) History(ctx context.Context, id, executionID string) ([]HistoryEvent, error) {
	if executionID == "" {
		st, _, err := c.read(ctx, id)
		if err != nil {
			return nil, err
		}
		executionID = st.ExecutionID
	}
	return c.readHistory(ctx, id, executionID)
}

func (c *Client) readHistory(ctx context.Context, id, executionID string) ([]HistoryEvent, error) {
	resp, err := c.etcd.Get(ctx, c.keys.History(id, executionID), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, storeErr(err)
	}
	var out []HistoryEvent
	for _, kv := range resp.Kvs {
		var batch []HistoryEvent
		if err := json.Unmarshal(kv.Value, &batch); err != nil {
			return nil, fmt.Errorf("orchestrator: corrupt history at %s: %w", kv.Key, err)
		}
		out = append(out, batch...)
	}
	for i, ev := range out {
		if ev.Seq != i {
			return nil, fmt.Errorf("orchestrator: history of %s/%s has event %d at position %d", id, executionID, ev.Seq, i)
		}
	}
	return out, nil
}
