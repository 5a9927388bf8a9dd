// Package scheduler runs a Soloist node: it keeps an etcd session, watches
// instance records, campaigns for the runnable instances whose function it
// has, runs them under their held leases, and drains on shutdown.
//
// # State model
//
// A node keeps one view of three key ranges (instances, nodes, owners),
// built from one list and one watch, relisted whenever the watch breaks. An
// instance is a candidate when its record is Pending, Running or
// ContinuedAsNew (not Suspended, not terminal), no owners key exists, and
// the node has its function. Candidates are spread over live nodes by
// rendezvous hashing: the preferred node campaigns at once, the node ranked
// k-th waits k x PreferenceDelay, so instances spread without contests yet
// any node takes one the others leave. A campaign is one Acquire that also
// compares the record's ModRevision with the one the decision was made on.
//
// # Guarantees
//
//   - At most one node holds an instance's owners key at a time, and only
//     the holder runs it; every write of the run is fenced (package
//     orchestrator), so a holder that lost the key writes nothing more.
//   - A run's context is cancelled the moment its holding ends (session
//     loss, safe-until passed, owners key deleted or replaced) and when its
//     record is terminated, suspended or replaced.
//   - When a holder dies, its lease expires after about one TTL and another
//     node takes the instance over and runs it again from its input, with a
//     larger fencing token (counted in soloist_failovers_total).
//   - Drain stops campaigning, stops runs, and releases every owners key
//     with a handoff marker, so peers take over at once rather than after a
//     TTL (soloist_handoffs_total); then it revokes the session lease.
//   - MaxConcurrent bounds the instances held plus campaigns in flight.
//   - Schedules: every node computes each schedule's ticks; a tick is
//     claimed by one etcd transaction that moves the schedule's state key
//     forward and starts the instance (or records a skip while the previous
//     run is active). A tick starts at most one execution on however many
//     nodes, and runs of a schedule never overlap as etcd sees them. Ticks
//     missed while no node runs are not caught up.
//
// # Not guaranteed
//
// A run's effects outside etcd are at least once: a takeover runs the
// function again. A node paused past its safe-until deadline (SIGSTOP, a
// long GC) can act once more before it notices; its etcd writes are still
// refused. Failover time grows after an etcd leader change, which refreshes
// leases to their full TTL.
package scheduler
