package orchestrator

import "strings"

// Keys lays out Soloist's etcd keys under a prefix (SPEC section 5):
//
//	{prefix}v1/instances/{id}   instance record (Status JSON)
//	{prefix}v1/owners/{id}      the holder of an instance, on its session lease
//	{prefix}v1/handoffs/{id}    left by a draining holder, consumed by the next
//	{prefix}v1/nodes/{nodeId}   a live node, on its session lease
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

// Handoff is the handoff marker key of one instance.
func (k Keys) Handoff(id string) string { return k.Handoffs() + id }

// Nodes is the prefix of every node key.
func (k Keys) Nodes() string { return k.prefix + "v1/nodes/" }

// Node is the key of one node.
func (k Keys) Node(nodeID string) string { return k.Nodes() + nodeID }

// IDFrom returns the instance or node ID of key under prefix, and whether
// key was under it.
func IDFrom(prefix, key string) (string, bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	return key[len(prefix):], true
}
