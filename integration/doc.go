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
//   - a recorder: a watch on etcd's whole key prefix from revision 1 (the
//     suite never compacts), so every change of every key, in revision
//     order, is kept.
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
//	go test ./integration -run Fault -v             # the short suite (CI), about 3 minutes
//	go test ./integration -run Fault -v -soak       # the soak: every scenario much longer
//	SOLOIST_SOAK=1 go test ./integration -v         # the same
//	SOLOIST_INTEGRATION_RACE=1 go test ./integration -v   # soloist built with -race too
//	SOLOIST_INTEGRATION_ARTIFACTS=DIR go test ./integration -v  # keep logs and histories
//
// The whole package is skipped with -short. The benchmark, a program of
// its own, is in bench/ (see its doc.go); it shares harness/proc.
package integration
