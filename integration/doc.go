// Package integration is Soloist's fault suite: real processes, real etcd
// clusters and real faults, with every step recorded and the history
// checked against the promise of docs/design.md section 2. It has no API; its
// tests are the product.
//
// # Harness (package harness)
//
// TestMain builds three binaries once per test binary: etcd (from
// go.etcd.io/etcd/server/v3, a tool of go.mod), soloist (./cmd/soloist) and
// soloist-effect (./integration/cmd/soloist-effect). Each scenario then
// deploys, in its own temporary directory:
//
//   - a 3-member etcd cluster on loopback ports, fsync on (etcd's default);
//   - 3 `soloist serve` nodes with --lease-ttl 2s and a --config whose one
//     exec function, "effect", runs soloist-effect;
//   - one small TCP proxy per node per etcd member: a node reaches etcd only
//     through its own proxies, so the test can cut it from etcd (blackhole
//     both ways; heal resets the connections). The proxy of
//     go.etcd.io/etcd/pkg/v3/proxy was not used: its accept loop blocks
//     once its error channel is full (every dial to a killed member is an
//     error), a failed dial leaves the client connection open, and it
//     resumes half-dropped connections on heal;
//   - a recording sink: an HTTP server soloist-effect posts every side
//     effect to (begin, each step, end or fail; "tick" from a grandchild,
//     see TestFaultKillGrandchild), tagged with
//     SOLOIST_INSTANCE_ID, SOLOIST_EXECUTION_ID, SOLOIST_FENCING_TOKEN, the
//     start request's tag and its pid. The sink behaves like a downstream
//     system that checks the token: it refuses (409) a token lower than one
//     it has seen for the instance, and records the refusal;
//   - a recorder: a watch on etcd's whole key prefix from revision 1, so
//     every change of every key, in revision order, is kept. Only the
//     scenarios that compact (TestFaultNoSpace, TestFaultCompactRestart)
//     do, with Env.Compact: the recorder first sees every revision up to the
//     compaction and the history so far is verified against a re-read
//     (below), then etcd is compacted and the re-read at the end starts
//     after the compaction.
//
// Options change a deployment: extra etcd flags (a small
// --quota-backend-bytes), --demo on every node (the demo orchestrations,
// see cmd/soloist/demo.go), extra serve flags, a lease TTL, and exec
// functions registered on one node only (an instance of one can run only
// there). A DirectClient starts instances and raises events straight in
// etcd with the orchestrator package's client, recorded like the HTTP
// clients: it works while every node is down.
//
// Helpers kill a node with SIGKILL, pause it with SIGSTOP and wake it with
// SIGCONT, stop it with SIGTERM (a drain), restart it on the same port, cut
// it from etcd and heal it, kill and restart etcd members (the leader
// too). Everything - client calls and returns, sink effects, node log lines
// (parsed from --log-format json), etcd watch events, faults - is stamped
// with one monotonic clock in the test process (harness.Clock). Every
// process is killed in t.Cleanup, and so is every soloist-effect program
// still alive (orphans of killed nodes).
//
// # Workload
//
// Six clients race on three instance IDs across all nodes' HTTP APIs:
// starts with every conflictPolicy and reusePolicy, terminates, raised
// events and status reads. Each start carries a unique tag ("req") in its
// input, which etcd keeps in the instance record: that maps every
// acknowledged start to the execution it created, with no guessing.
// Executions run 1-6 steps of 100-300 ms; some fail on purpose. Scenarios
// add "probe" instances of their own (5 s and longer) so that a fault
// always hits a node holding something running.
//
// # What is checked
//
// From etcd's recorded history, the client history and the sink:
//
//   - At most one start acknowledged per active period of an ID: a new
//     execution may replace an active one only by a start with
//     conflictPolicy=terminateExisting (else a duplicate), a terminal one
//     only as reusePolicy allows; a start answered 409 or 200 never
//     committed anything; every new record is Pending with token 0.
//   - Fenced writes: every write a holder makes to a record (the move to
//     Running, the final Completed or Failed) happened while the owners
//     key with that record's fencing token existed for that execution, in
//     the revision just before; the final write deleted the owners key in
//     the same revision; no token lower than one that already wrote for
//     the instance writes again; Terminated is only a client's write; no
//     write follows a terminal status; an owners key is only created over
//     a runnable record of its execution.
//   - Durability and liveness: every acknowledged start is in etcd; after
//     the faults end and a bounded settle time (45 s), every execution is
//     terminal (or was replaced by terminateExisting); the history read
//     again from revision 1 at the end equals what was watched live (so
//     nothing committed was lost, even with every etcd member killed).
//   - Effects: every effect carries a token that really held its
//     execution; an execution shows effects under two tokens only if the
//     first holding ended before the second began (a takeover), and never
//     ran to its end twice under one token; a Completed record's output
//     comes from the program of the holder that completed it. In the
//     scenarios where every old holder stops by itself (cut from etcd,
//     SIGTERM drain, SIGKILL - its exec programs and all they started die
//     with it, by the exec supervisor - and etcd faults) no effect of an
//     older holder of an execution may arrive after one of a newer holder;
//     after a SIGKILL none may arrive more than 300 ms after the kill (100
//     ms in TestFaultKillGrandchild, whose programs leave a child posting
//     every 20 ms, in their process group or out of it). After SIGSTOP
//     that cannot hold (a paused node's program runs on, and the node acts
//     late, as lease/doc.go says) and such effects are counted ("stale
//     effects"), refused by the sink.
//   - Linearizability (porcupine, per instance ID): the clients' starts,
//     terminates, raises and reads - with unknown outcomes for timeouts and
//     5xx - together with the holders' acquire, fenced write, fenced finish
//     and release taken from etcd's history, must fit a sequential model of
//     one instance: the atomic start with its policies and a holder token
//     that only grows; a read sees the current execution, its status class
//     and its holder's token.
//   - Scenario checks: the zombie (SIGSTOP past its TTL) kills its program
//     within moments of SIGCONT and logs that it lost its session; a
//     rolling restart counts handoffs and no failovers; a killed holder's
//     execution is taken over within 5 x TTL.
//
// The demo orchestrations post no effects; their executions get every
// check but soloist-effect's (CheckOptions.NoEffects). A start the node
// answered "not committed" that etcd's history shows committed is a
// violation of its own (not-committed-but-committed): a client that
// believes it and retries runs the work twice. A 507 (etcd's NOSPACE
// alarm: nothing was written) counts as a start that took no effect, so
// one that committed is a violation too (refused-start-committed).
//
// # Never stuck, never twice (issue 7)
//
// TestFaultFanOutBeyondRequestLimit starts the demo FanOut with 8
// activities of 200 KiB each, beside the racing workload: the payloads
// together (1.6 MiB) exceed etcd's 1.5 MiB request limit, though each fits
// --max-payload. Each instance must complete with the sum of its results'
// sizes, every activity must run once (FanOutItem logs each run with its
// task ID; the node logs are counted) and etcd's history must show one
// TaskScheduled and one TaskCompleted per task ID, with one owners key per
// instance.
//
// TestFaultStepOver128Ops stops every node (SIGTERM), starts the demo
// Gather with a DirectClient and raises 130 events to it (more than etcd's
// 128 operations in one transaction), then starts the nodes again: the
// first step consumes every event. Each must be delivered once (130
// EventRaised in etcd's history, each inbox key once), the instance must
// complete with 130, and it must be taken once (one owners key: one
// campaign, no retry loop).
//
// TestFaultNoSpace runs etcd with --quota-backend-bytes 16 MiB and fills it
// with junk keys of its own (/junk/, 512 KiB each) until etcd refuses with
// "mvcc: database space exceeded", under the racing workload. While the
// alarm is raised, every start sent to every node must answer 507 with a
// message that says what to do (compact, defragment, disarm), /readyz must
// answer 503 naming NOSPACE and soloist_etcd_alarm{alarm="NOSPACE"} must
// be 1 on every node. Then an operator's steps: delete the junk, compact,
// defragment every member, disarm the alarm. Every node must recover by
// itself (same process: /readyz 200, the gauge 0, a start 202), the
// workload's instances run to the end, and the checker holds (no
// acknowledged start lost; the 507s committed nothing).
//
// TestFaultCompactRestart starts 1,000 demo Approval instances (lease TTL
// 10 s, one etcd member, no racing workload) and waits until each is held
// and Running, waiting for its event. Another tenant writes outside the
// prefix (so the nodes' watches resume below the compaction), etcd is
// compacted to its current revision and its member SIGKILLed and
// restarted; the restart (about a second) fits in the sessions' safe
// window of about 13 s. Then: no "run stopped", "etcd session ended" or
// "took over instance" line, soloist_leases_lost_total,
// soloist_campaigns_total{result="won"} and soloist_failovers_total
// unchanged, every owners key with the same CreateRevision. Then every
// instance is approved and must complete.
//
// TestFaultLateCommits cuts node n1's requests off from their answers: its
// proxies hold what it sends (Proxy.DelayTx), then cut its connections on
// its side only (Proxy.Strand) while the held bytes still reach etcd when
// due. Held at that moment are (a) the acquire of its campaign for a
// "pinned" instance - an exec function only n1 has, started with a
// DirectClient under an ID n1 is first for in the rendezvous order, so no
// other node competes - and (b) the commit of a start sent through n1's
// HTTP API. n1 sees both fail, and etcd applies both later. Two rounds
// (lease TTL 15 s, so the held keepalives do not end the session): a 2 s
// hold, which the acquire's reconciliation outlasts (it finds its key and
// runs the instance under that token), and a 6 s hold with new connections
// slowed for 5.5 s too, so the acquire gives up first and the late key is
// an orphan on n1's lease, which the session must delete
// (soloist_orphan_owner_keys_total) before the instance is taken again.
// Either way the pinned instance must complete. Each round then holds and
// strands one of n1's three proxies only, under six concurrent starts
// through n1's API: the start whose commit is held there (the client
// spreads its requests over its connections) sees it fail while its reads
// on the other connections answer at once, not yet seeing the commit. Every
// start must be answered 202 or a 503 that says the outcome is unknown,
// never "not committed" when it did commit (the checker's
// not-committed-but-committed).
//
// # Batches under kill -9 (issue 14)
//
// TestFaultKillMidBatch runs the demo Chain (activities in sequence, each
// logging "demo activity ChainStep ran" with its task ID and fencing token
// as it begins) on nodes with the default batch bounds, and stops the
// holder after it ran a given number of activities, twice per chain,
// restarting the victim after each takeover: SIGKILL for a chain of 1 ms
// activities (the count of 100 cuts its batches) and one of 30 ms (the 1 s
// budget does), SIGTERM for a third. From the node logs (every run, with
// the node's own time) and etcd's history (each task's schedule and
// completion with their revisions, the owners keys' CreateRevisions as
// the holdings), for every holding that ended before its chain: the
// activities it ran whose completion etcd did not have when the next
// holder took the instance are its uncommitted batch. Each chain must
// complete with the right sum, with one TaskScheduled and one
// TaskCompleted per task in etcd; every task must run once plus once per
// holding whose uncommitted batch had it, never twice in one holding; a
// batch may hold at most 101 activities (100, plus one whose schedule the
// last commit held), all but the first begun within the budget (plus 1.5 s
// of commit latency) of the holding's last commit; after a SIGTERM at
// most one (a drain commits the batch first). Each stop's batch size and
// repeats are logged.
//
// harness/check_test.go feeds hand-made broken histories to the checks to
// show that each can fail.
//
// # Figures
//
// Every scenario prints a row: client operations, acknowledged starts,
// duplicates, lost instances, fencing rejections, failovers and handoffs
// (summed from every node incarnation's /metrics), stale effects, re-runs,
// takeover p50/p99/max against the TTL (from the fault to the first
// "running instance" log line or effect of a larger token of the same
// execution) and handoff p50/p99 (from SIGTERM to the same). The
// TestFaultBaseline row sets Soloist's duplicate count beside the
// check-then-start pattern of the Durable Functions docs, run by the same
// racing clients on the same etcd. TestMain prints the whole table at the
// end (README.md shows its format).
//
// # Running
//
//	go test ./integration -run Fault -v             # the short suite (CI), about 5 minutes
//	go test ./integration -run Fault -v -soak       # the soak: every scenario much longer
//	SOLOIST_SOAK=1 go test ./integration -v         # the same
//	SOLOIST_INTEGRATION_RACE=1 go test ./integration -v   # soloist built with -race too
//	SOLOIST_INTEGRATION_ARTIFACTS=DIR go test ./integration -v  # keep logs and histories
//
// The whole package is skipped with -short. The benchmark, a program of
// its own, is in bench/ (see its doc.go); it shares harness/proc.
package integration
