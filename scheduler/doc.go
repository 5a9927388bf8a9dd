// Package scheduler runs a Soloist node: it keeps an etcd session, mirrors
// the small keys, campaigns for the runnable instances whose function it
// has, runs them under their held leases, and drains on shutdown.
//
// # State model
//
// A node keeps one view of four key ranges (inbox entries, instance
// records, node keys, owners keys: orchestrator.Keys.WatchRange), built
// from one paged listing at one revision and ONE watch from that revision
// + 1, whatever the node holds; when the watch breaks (compaction, no
// leader, a lost connection) it lists again. Nothing else watches: the
// lease session opens no watch of its own (lease.Config.Fed); the view's
// watch feeds it every owners key change, and the listing after a break,
// so a held key deleted or replaced ends its holding as the session's own
// watch would.
//
// The view keeps of a record only what a campaign decision needs
// (orchestrator.RecordSummary), and a change of the record's revision alone
// (a holder's step of the same execution) updates that revision and
// nothing else.
//
// An instance is a candidate when its record is Pending, Running or
// ContinuedAsNew, no owners key exists, the node has its function, and the
// node neither runs nor campaigns for it. Candidates sit in a heap ordered
// by the time the node may campaign, updated by the watch events of the
// instance alone, so work per event is proportional to what changed.
// Candidates are spread over live nodes by rendezvous hashing: the
// preferred node campaigns at once, the node ranked k-th waits k x
// PreferenceDelay. A campaign is one Acquire that also compares the
// record's ModRevision with the one the decision was made on and reads
// what the run needs (record, input, custom status, history, inbox, the
// previous holder's handoff marker) in the same transaction. At most
// Campaigns are in flight.
//
// Start where you land: a start the node receives (Node.StartInstance,
// the HTTP API's start) carries, when this node should run the instance
// (it runs instances, is not draining, has the function at the start's
// version, is below MaxConcurrent, the start is not scheduled for later,
// and it is the instance's preferred node or holds no more than its fair
// share of the held instances, 1.25 x the even share plus 8), a
// lease.Landing in the start's own transaction:
// the owners key is created on this node's session lease in the commit
// that creates the record, and the node runs the instance at once, with
// no campaign. The holding is a won campaign's in every way (token,
// fencing, safe-until, watch). A landing that does not take the key (it
// exists) leaves the start as it would be otherwise.
//
// A held instance is a run: its holding and the driver of its execution
// (orchestrator.Driver). An idle run - the orchestration waits for an event
// or a timer - has no goroutine but the orchestration's own; the node's
// watch hands it its inbox entries.
//
// # Guarantees
//
//   - At most one node holds an instance's owners key at a time, and only
//     the holder runs it; every write of the run is fenced (package
//     orchestrator), so a holder that lost the key writes nothing more.
//   - A run's context is cancelled the moment its holding ends (session
//     loss, safe-until passed, owners key deleted or replaced) and when its
//     record is terminated, suspended or replaced. A broken or compacted
//     watch ends no run.
//   - When a holder dies, its lease expires after about one TTL and another
//     node takes the instance over and resumes it from its history, with a
//     larger fencing token (soloist_failovers_total).
//   - A run that fails for a reason of its own (a store error it cannot
//     get past, a corrupt key) keeps the instance and is tried again after
//     an exponential backoff with jitter, capped at 30 s
//     (soloist_run_retries_total): a failing instance never loops hot and
//     never bounces between nodes.
//   - Drain stops campaigning, has every run commit what it applied and
//     did not commit yet (a batch of local activities; it waits at most
//     2 s for that), stops runs, and releases every owners key at once
//     after leaving the node's handoff marker, so peers take over at once
//     rather than after a TTL (soloist_handoffs_total); then it revokes the
//     session lease. A peer that takes over repeats only the activities
//     that were running when the drain stopped them.
//   - MaxConcurrent bounds the instances held plus campaigns in flight.
//   - NOSPACE: while etcd has the alarm raised (AlarmList every
//     AlarmInterval, and writes refused with it) Ready returns ErrNoSpace
//     and soloist_etcd_alarm{alarm="NOSPACE"} is 1; once an operator
//     disarms it the node is ready again by itself.
//   - Retention: one node per slot (claimed in etcd) purges finished
//     instances older than Retention, reading only the retention index.
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
