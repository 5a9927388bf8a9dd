// Package lease gives a node its etcd session and lets it hold instances
// through owners keys, with fencing. It is the one home of the owners key:
// only this package creates it (Acquire, and the nested transaction of a
// Landing that another component's commit carries), deletes it (Release, ReleaseAll,
// and the ReleaseOp a holder's final write carries) and decides when a
// holding is lost; the handoff marker a draining node leaves is written and
// read here too. Other packages get the key's name from their caller and
// the fencing compare from the Holding.
//
// # Model
//
// A node has one Session: one etcd lease, kept alive with a keepalive every
// TTL/3, and one watch on the prefix of the owners keys. A node holds an
// instance by creating its owners key with If(CreateRevision(key) == 0),
// attached to the session lease (Acquire); the same transaction can check
// conditions (the instance record is the one the node decided on) and read
// what the new holder needs (Claim.Reads), so a takeover is one round trip.
// A Landing (Session.Land) is the same claim made inside someone else's
// transaction - a start that creates an instance and takes it in one
// commit: its Op is a nested If(free, conditions) Then(create, reads) that
// never fails the outer transaction, and Adopt makes the holding from the
// committed response (or, if the caller only learned by reading that its
// commit applied, by reading the key), with the same token, fencing,
// safe-until and watch as an Acquire's.
// The key's CreateRevision is the holding's fencing token: it grows with
// every new holder, on any etcd member, unlike lease IDs. Every write a
// holder makes must carry Holding.Cmp() in its transaction, so the write
// fails once the key is gone or belongs to someone else.
//
// # What is guaranteed
//
//   - Two holdings of one key never both pass their fencing compare: etcd
//     serialises the transactions, and a key has one CreateRevision.
//   - Self-fencing: the session computes safe-until = send time of the last
//     acknowledged keepalive + TTL x (1 - Drift) - Margin on the monotonic
//     clock, and ends itself (and every holding: Done, Context, AfterEnd) at that
//     moment if no later keepalive was acknowledged. etcd cannot expire the
//     lease before then, so, absent process pauses longer than the margin,
//     an old holder stops before a new holder can take the key. A slow
//     keepalive still counts when it is answered (it is not cut at TTL/3),
//     and a new one is sent every TTL/3 beside those outstanding; one
//     unanswered after TTL/3 is reported as a renew failure.
//   - A holding ends (Err, Done, Context, AfterEnd) when its owners key is deleted or
//     replaced: the session's one watch (WithRequireLeader; a fresh read of
//     the prefix whenever it breaks or is compacted) sees an operator's
//     `etcdctl del` or `etcdctl lease revoke` within moments. The cost is
//     one watch per node, whatever it holds, or none: a caller that
//     already watches the prefix feeds the session (Config.Fed: Observe,
//     and Resync after it lists again), with the same guarantee as long as
//     its watch has the same properties.
//   - No key of a live session is left untracked: an Acquire whose commit
//     has an unknown outcome reads the key until it knows or its context
//     ends (then ErrOutcomeUnknown), and the session deletes, with a compare
//     on its CreateRevision, any key on its lease that no holding tracks -
//     such as an acquire whose proposal applied after the Acquire gave up;
//     a delete that fails is tried again, with backoff, while the session
//     lives.
//   - Release deletes the key only while it is still the holding's.
//     ReleaseAll (a drain) first leaves one handoff marker for the node on a
//     lease of its own, then deletes the keys many to a transaction, each
//     under its own compare; the next Acquire that names the previous
//     holder's marker (Claim.HandoffFrom) reads it in its own transaction.
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
