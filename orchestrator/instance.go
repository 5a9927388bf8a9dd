package orchestrator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"
)

// Record is an instance's control record, stored at {prefix}v1/instances/{id}:
// the small key that every node mirrors and that every write of a holder
// compares. It never carries input, output or custom status; those live
// under {prefix}v1/payloads/{id}/ and are written only when they change.
type Record struct {
	Name            string        `json:"name"`
	InstanceID      string        `json:"instanceId"`
	RuntimeStatus   RuntimeStatus `json:"runtimeStatus"`
	CreatedTime     time.Time     `json:"createdTime"`
	LastUpdatedTime time.Time     `json:"lastUpdatedTime"`
	ExecutionID     string        `json:"executionId"`
	// FencingToken is the token of the holding that last wrote the record;
	// 0 if no holder has.
	FencingToken int64 `json:"fencingToken"`
	// Version is the orchestration version the instance started with.
	Version string `json:"version,omitempty"`
	// ScheduledStartTime, if set, is when a Pending instance may start:
	// no node runs it before.
	ScheduledStartTime *time.Time `json:"scheduledStartTime,omitempty"`
	// Tags are the instance's tags, set at its start.
	Tags map[string]string `json:"tags,omitempty"`
	// Parent is the orchestration that started this one as its
	// sub-orchestration, if one did.
	Parent *ParentRef `json:"parent,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the start
	// (StartOptions.Trace): every run of the instance, on whichever node,
	// continues that trace.
	TraceParent string `json:"traceParent,omitempty"`
	TraceState  string `json:"traceState,omitempty"`
}

// trace is the record's trace context.
func (r *Record) trace() TraceContext {
	return TraceContext{Parent: r.TraceParent, State: r.TraceState}
}

// ParentRef names a sub-orchestration's parent: the execution and the task
// whose completion the sub-orchestration's end delivers to the parent's
// inbox.
type ParentRef struct {
	InstanceID  string `json:"instanceId"`
	ExecutionID string `json:"executionId"`
	TaskID      int    `json:"taskId"`
}

// ParseRecord decodes a control record.
func ParseRecord(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("orchestrator: corrupt instance record: %w", err)
	}
	return &r, nil
}

// RecordSummary is the part of a control record a node needs to decide
// whether to campaign for the instance: decoding only it skips the times,
// tags, parent and trace context of the record.
type RecordSummary struct {
	Name               string        `json:"name"`
	RuntimeStatus      RuntimeStatus `json:"runtimeStatus"`
	ExecutionID        string        `json:"executionId"`
	Version            string        `json:"version,omitempty"`
	ScheduledStartTime *time.Time    `json:"scheduledStartTime,omitempty"`
}

// ParseRecordSummary decodes the RecordSummary of a control record; an
// error says the record is corrupt, as ParseRecord's would.
func ParseRecordSummary(b []byte) (RecordSummary, error) {
	var s RecordSummary
	if err := json.Unmarshal(b, &s); err != nil {
		return RecordSummary{}, fmt.Errorf("orchestrator: corrupt instance record: %w", err)
	}
	return s, nil
}

func (r *Record) encode() string {
	b, err := json.Marshal(r)
	if err != nil { // a Record has no field that can fail
		panic(fmt.Sprintf("orchestrator: encode record: %v", err))
	}
	return string(b)
}

// Status is an instance as the client reads it: the control record with the
// current execution's input, output and custom status, and the current
// holder. It is the status body of the HTTP API.
type Status struct {
	Name            string          `json:"name"`
	InstanceID      string          `json:"instanceId"`
	RuntimeStatus   RuntimeStatus   `json:"runtimeStatus"`
	Input           json.RawMessage `json:"input"`
	CustomStatus    json.RawMessage `json:"customStatus"`
	Output          json.RawMessage `json:"output"`
	CreatedTime     time.Time       `json:"createdTime"`
	LastUpdatedTime time.Time       `json:"lastUpdatedTime"`
	ExecutionID     string          `json:"executionId"`
	// FencingToken is the current holder's token when one holds the
	// execution, else the token of the holding that last wrote the record;
	// 0 if none.
	FencingToken int64 `json:"fencingToken"`
	// Node is the current holder, read from the owners key.
	Node string `json:"node,omitempty"`
	// FailureDetails say why a Failed instance failed; nil otherwise.
	FailureDetails *FailureDetails `json:"failureDetails,omitempty"`
	// Version is the orchestration version the instance started with.
	Version string `json:"version,omitempty"`
	// ScheduledStartTime, if set, is when a Pending instance may start.
	ScheduledStartTime *time.Time `json:"scheduledStartTime,omitempty"`
	// Tags are the instance's tags.
	Tags map[string]string `json:"tags,omitempty"`
	// ParentInstanceID is the parent orchestration of a sub-orchestration.
	ParentInstanceID string `json:"parentInstanceId,omitempty"`
	// Unrunnable, for an active instance that no node holds, says why none
	// can: no live node registers its function (and version).
	Unrunnable string `json:"unrunnable,omitempty"`
}

func (r *Record) status() *Status {
	return &Status{
		Name: r.Name, InstanceID: r.InstanceID, RuntimeStatus: r.RuntimeStatus,
		Input: jsonNull, CustomStatus: jsonNull, Output: jsonNull,
		CreatedTime: r.CreatedTime, LastUpdatedTime: r.LastUpdatedTime,
		ExecutionID: r.ExecutionID, FencingToken: r.FencingToken,
		Version: r.Version, ScheduledStartTime: r.ScheduledStartTime, Tags: maps.Clone(r.Tags),
		ParentInstanceID: r.parentID(),
	}
}

func (r *Record) parentID() string {
	if r.Parent == nil {
		return ""
	}
	return r.Parent.InstanceID
}

// Clone returns a deep copy.
func (s *Status) Clone() *Status {
	c := *s
	c.Input = bytes.Clone(s.Input)
	c.Output = bytes.Clone(s.Output)
	c.CustomStatus = bytes.Clone(s.CustomStatus)
	c.Tags = maps.Clone(s.Tags)
	return &c
}

// Owner is the value of an owners key ({prefix}v1/owners/{id}).
type Owner struct {
	Node         string    `json:"node"`
	LeaseID      string    `json:"leaseId"`
	ExecutionID  string    `json:"executionId"`
	AcquiredTime time.Time `json:"acquiredTime"`
}

// NodeInfo is the value of a node key ({prefix}v1/nodes/{nodeId}).
type NodeInfo struct {
	Node        string    `json:"node"`
	Address     string    `json:"address"`
	Version     string    `json:"version"`
	StartedTime time.Time `json:"startedTime"`
	LeaseID     string    `json:"leaseId"`
	// Role is what the node does: "all", "api" or "runner".
	Role string `json:"role,omitempty"`
	// Functions are the orchestrations the node runs (FunctionKey: name or
	// name@version); empty for an API-only node.
	Functions []string `json:"functions,omitempty"`
	// Draining is set while the node drains: peers stop ranking it first.
	Draining bool `json:"draining,omitempty"`
	// Workers is how many Durable Task workers (gRPC GetWorkItems
	// streams) are connected to the node; left out when none. What they
	// serve is in Functions.
	Workers int `json:"workers,omitempty"`
}

// AnyFunction in a node key's Functions says the node runs any
// orchestration, through Durable Task workers connected to it that did not
// say what they serve.
const AnyFunction = "*"

// Runs reports whether the node runs that version of that orchestration.
func (n *NodeInfo) Runs(name, version string) bool {
	if n.Role == "api" {
		return false
	}
	k := FunctionKey(name, version)
	for _, f := range n.Functions {
		if f == k || f == AnyFunction {
			return true
		}
	}
	return false
}

var jsonNull = json.RawMessage("null")

func orNull(m json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(m)) == 0 {
		return jsonNull
	}
	return m
}

// now is the store's clock: UTC, truncated to milliseconds so records read
// back exactly as written.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// OutputFromBytes turns what a program printed or an endpoint answered into
// an instance output: the JSON value if it parses, else a JSON string
// without trailing newlines; null if empty. Exec and HTTP functions use it.
func OutputFromBytes(b []byte) json.RawMessage {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return jsonNull
	}
	if json.Valid(t) {
		return json.RawMessage(t)
	}
	s, _ := json.Marshal(strings.TrimRight(string(b), "\r\n"))
	return s
}
