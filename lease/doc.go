// Package lease gives a node its etcd session and lets it hold instances
// through owners keys, with fencing.
//
// # Model
//
// A node has one Session: one etcd lease, kept alive with a keepalive every
// TTL/3. A node holds an instance by creating its owners key with
// If(CreateRevision(key) == 0), attached to the session lease (Acquire). The
// key's CreateRevision is the holding's fencing token: it grows with every
// new holder, on any etcd member, unlike lease IDs. Every write a holder
// makes must carry Holding.Cmp() in its transaction, so the write fails once
// the key is gone or belongs to someone else.
//
// # What is guaranteed
//
//   - Two holdings of one key never both pass their fencing compare: etcd
//     serialises the transactions, and a key has one CreateRevision.
//   - Self-fencing: the session computes safe-until = send time of the last
//     acknowledged keepalive + TTL x (1 - Drift) - Margin on the monotonic
//     clock, and ends itself (closing every holding's Done) at that moment if
//     no later keepalive was acknowledged. etcd cannot expire the lease
//     before then, so, absent process pauses longer than the margin, an old
//     holder stops before a new holder can take the key.
//   - A holding's Done also closes when its owners key is deleted or
//     replaced: each holding watches its key (with WithRequireLeader, and a
//     direct read whenever the watch breaks), so an operator's
//     `etcdctl del` or `etcdctl lease revoke` stops a holder within moments.
//   - Acquire never leaves an untracked key on a live session: if a commit's
//     outcome is unknown, it reads the key until it knows, and tracks or
//     releases what it finds.
//   - Release deletes the key only while it is still the holding's, and can
//     leave a handoff marker in the same transaction; the next Acquire reads
//     and deletes that marker atomically with its own create.
//
// # What is not guaranteed
//
// A lease cannot stop two processes from believing they hold a key at once:
// a process paused (GC, SIGSTOP, a VM freeze) past its safe-until deadline
// may wake up and act before it notices. Only the fencing compare protects
// state in etcd, and only the token handed to downstream systems (which must
// check it) protects anything else. Failover takes about one TTL plus etcd's
// expiry processing, longer right after an etcd leader change (the new
// leader refreshes leases to their full TTL).
//
// This package does not use concurrency.Session: its keepalive loop does
// not expose when a keepalive was sent, which safe-until needs.
package lease
