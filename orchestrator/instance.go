package orchestrator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Status is an instance's record as stored at {prefix}v1/instances/{id}, and
// the status body of the HTTP API. Node is empty in the stored record; the
// client fills it (and FencingToken) from the owners key when it reads.
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
	// FencingToken is the token of the holding that last wrote the record,
	// or of the current holder when read through the client; 0 if none.
	FencingToken int64 `json:"fencingToken"`
	// Node is the current holder, read from the owners key; never stored.
	Node string `json:"node,omitempty"`
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
}

var jsonNull = json.RawMessage("null")

func decodeStatus(b []byte) (*Status, error) {
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("orchestrator: corrupt instance record: %w", err)
	}
	s.Node = ""
	return &s, nil
}

func (s *Status) encode() string {
	c := *s
	c.Node = ""
	c.Input = orNull(c.Input)
	c.Output = orNull(c.Output)
	c.CustomStatus = orNull(c.CustomStatus)
	b, err := json.Marshal(&c)
	if err != nil { // only RawMessage fields can fail, and they are checked on entry
		panic(fmt.Sprintf("orchestrator: encode record: %v", err))
	}
	return string(b)
}

// Clone returns a deep copy.
func (s *Status) Clone() *Status {
	c := *s
	c.Input = bytes.Clone(s.Input)
	c.Output = bytes.Clone(s.Output)
	c.CustomStatus = bytes.Clone(s.CustomStatus)
	return &c
}

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
