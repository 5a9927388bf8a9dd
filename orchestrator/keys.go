package orchestrator

import (
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys lays out Soloist's etcd keys under a prefix. Small keys that change
// sit in one contiguous range that every node watches (WatchRange); large
// keys written once sit outside it, so no node receives them unless it
// reads them:
//
//	{prefix}v1/inbox/{id}/{key}          events (and suspend/resume marks) not yet consumed   watched
//	{prefix}v1/instances/{id}            the control record (Record JSON)                     watched
//	{prefix}v1/nodes/{nodeId}            a live node, on its session lease                    watched
//	{prefix}v1/owners/{id}               the holder of an instance, on its session lease      watched
//	{prefix}v1/payloads/{id}/input       the current execution's input (JSON, written by the start)
//	{prefix}v1/payloads/{id}/output      its output (written by the final write)
//	{prefix}v1/payloads/{id}/customStatus  its custom status (written when the code sets it)
//	{prefix}v1/payloads/{id}/failureDetails  why it failed (FailureDetails JSON, with a Failed status)
//	{prefix}v1/history/{id}/{exec}/{seq} a JSON array of history events, one key per commit
//	{prefix}v1/blobs/{id}/{exec}/{name}  a large history payload, written once before the commit that refers to it
//	{prefix}v1/handoffs/{nodeId}         left by a draining node for the nodes taking its instances
//	{prefix}v1/finished/{millis}/{id}    retention index: terminal instances by finish time
//	{prefix}v1/schedules/{name}          a schedule's last claimed tick
//	{prefix}v1/sweeps/{name}             the last claimed run of a cluster-wide sweep
type Keys struct {
	prefix string
}

// NewKeys returns the layout under prefix; a missing trailing slash is added
// and an empty prefix means "/soloist/".
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = "/soloist/"
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Keys{prefix: prefix}
}

// Prefix is the root of every key, ending in "/".
func (k Keys) Prefix() string { return k.prefix }

// Instances is the prefix of every instance record.
func (k Keys) Instances() string { return k.prefix + "v1/instances/" }

// Instance is the record key of one instance.
func (k Keys) Instance(id string) string { return k.Instances() + id }

// Owners is the prefix of every owners key.
func (k Keys) Owners() string { return k.prefix + "v1/owners/" }

// Owner is the owners key of one instance.
func (k Keys) Owner(id string) string { return k.Owners() + id }

// Handoffs is the prefix of every handoff marker.
func (k Keys) Handoffs() string { return k.prefix + "v1/handoffs/" }

// Handoff is the handoff marker a draining node leaves for its instances.
func (k Keys) Handoff(nodeID string) string { return k.Handoffs() + nodeID }

// Nodes is the prefix of every node key.
func (k Keys) Nodes() string { return k.prefix + "v1/nodes/" }

// Node is the key of one node.
func (k Keys) Node(nodeID string) string { return k.Nodes() + nodeID }

// Inboxes is the prefix of every instance's inbox.
func (k Keys) Inboxes() string { return k.prefix + "v1/inbox/" }

// InboxPrefix is where events raised for id and not yet consumed live. An
// inbox belongs to the instance, not to one execution: a restart or a final
// write deletes it, and ContinueAsNew hands what is left to the next
// execution.
func (k Keys) InboxPrefix(id string) string { return k.Inboxes() + id + "/" }

// WatchRange is the key range [from, end) that holds every small key a
// node mirrors: inboxes, instance records, node keys and owners keys, in
// that key order and nothing else.
func (k Keys) WatchRange() (from, end string) {
	return k.Inboxes(), clientv3.GetPrefixRangeEnd(k.Owners())
}

// PayloadPrefix holds the input, output and custom status of id's current
// execution.
func (k Keys) PayloadPrefix(id string) string { return k.prefix + "v1/payloads/" + id + "/" }

// Input is the key of the current execution's input.
func (k Keys) Input(id string) string { return k.PayloadPrefix(id) + "input" }

// Output is the key of the current execution's output.
func (k Keys) Output(id string) string { return k.PayloadPrefix(id) + "output" }

// FailureDetails is the key of a Failed execution's FailureDetails.
func (k Keys) FailureDetails(id string) string { return k.PayloadPrefix(id) + "failureDetails" }

// CustomStatus is the key of the current execution's custom status.
func (k Keys) CustomStatus(id string) string { return k.PayloadPrefix(id) + "customStatus" }

// HistoryPrefix is where the history of every execution of id lives.
func (k Keys) HistoryPrefix(id string) string { return k.prefix + "v1/history/" + id + "/" }

// History is the history prefix of one execution; each key below it holds
// the JSON array of events one commit appended, named by the first event's
// zero-padded sequence number.
func (k Keys) History(id, executionID string) string {
	return k.HistoryPrefix(id) + executionID + "/"
}

// BlobPrefix is where the large payloads of every execution of id live.
func (k Keys) BlobPrefix(id string) string { return k.prefix + "v1/blobs/" + id + "/" }

// Blobs is the prefix of one execution's large payloads.
func (k Keys) Blobs(id, executionID string) string { return k.BlobPrefix(id) + executionID + "/" }

// Finished is the prefix of the retention index.
func (k Keys) Finished() string { return k.prefix + "v1/finished/" }

// FinishedEntry is the retention index key of an instance that became
// terminal at t.
func (k Keys) FinishedEntry(t time.Time, id string) string {
	return fmt.Sprintf("%s%013d/%s", k.Finished(), t.UnixMilli(), id)
}

// Schedules is the prefix of every schedule's state key.
func (k Keys) Schedules() string { return k.prefix + "v1/schedules/" }

// Schedule is the state key of one schedule: the last tick a node claimed
// (ScheduleState).
func (k Keys) Schedule(name string) string { return k.Schedules() + name }

// Sweep is the claim key of a cluster-wide periodic job such as retention.
func (k Keys) Sweep(name string) string { return k.prefix + "v1/sweeps/" + name }

func historyKey(prefix string, seq int) string { return fmt.Sprintf("%s%010d", prefix, seq) }

// IDFrom returns the instance or node ID of key under prefix, and whether
// key was under it.
func IDFrom(prefix, key string) (string, bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	return key[len(prefix):], true
}

// InboxID splits an inbox key into the instance ID and the event's key.
func (k Keys) InboxID(key string) (id, event string, ok bool) {
	rest, ok := IDFrom(k.Inboxes(), key)
	if !ok {
		return "", "", false
	}
	id, event, ok = strings.Cut(rest, "/")
	return id, event, ok
}
