// Command bench measures Soloist against a real etcd, in one run, and
// prints a table and a final line
//
//	RESULT key=value key=value ...
//
// whose keys are fixed (resultKeys); a figure that was not measured (its
// phase not selected, not supported, or failed) is n/a. More keys follow
// the fixed ones.
//
//	go run ./integration/bench            # full mode, several minutes
//	go run ./integration/bench -short     # CI mode, under 2 minutes on 2 cores
//	go run ./integration/bench -phases etcd,starts -c 128
//
// # Deployment
//
// The run builds etcd (go.etcd.io/etcd/server/v3, a tool of go.mod) and
// soloist (./cmd/soloist) once into a temporary directory. Every phase
// then gets a deployment of its own, so that no phase disturbs another: a
// fresh single-member etcd (its own data directory, fsync on as etcd
// defaults, loopback ports picked free) and its own `soloist serve --demo
// --etcd-endpoints ... --etcd-prefix /soloist/ --lease-ttl ... --listen
// 127.0.0.1:PORT --node-id nX --log-format json` processes (plus
// -node-args; the grpc phase's nodes have --grpc-listen 127.0.0.1:PORT in
// place of --demo). At the end of a phase all of them are killed and the
// phase's directory is removed; -keep keeps it (the log of every process,
// stamped, and etcd's data) and prints where.
//
// Every child is killed when the run ends, fails or is interrupted
// (SIGINT or SIGTERM: the phase stops, everything is killed and removed;
// a second signal kills at once); children also get SIGKILL as their
// parent-death signal, so even a killed benchmark leaves no process
// behind (only its directory).
//
// Throughput phases are closed loops: C workers each send one request and
// send the next when it returns. A phase first runs -warmup, then the
// measured window; only requests that return (or lifecycles that complete)
// inside the window count, and a rate is that count divided by the
// window's length. Latencies are nearest-rank percentiles of those
// requests. Times are taken in this process on Go's monotonic clock;
// "seen" means the moment this process received the etcd watch event.
//
// # Figures
//
// etcd (etcd's ceiling, the reference of the ratios):
//
//   - etcd_txn_per_s: create-if-absent transactions per second, `Txn
//     If(CreateRevision(k) == 0) Then(Put(k, v))` on fresh keys, v a
//     300-byte JSON value shaped like an instance record, C in flight,
//     sent by clientv3 clients from this process spread over -etcd-conns
//     connections (default: one per node, as many as the soloist cluster
//     has). Every transaction must succeed. etcd_txn_p50_ms and _p99_ms
//     are their latencies.
//
// starts (a busy cluster):
//
//   - starts_per_s: `POST /api/orchestrators/HelloCities/{uniqueId}` with
//     an empty body answered 202, per second, C in flight, worker w's i-th
//     request going to node (w+i) mod N, while the nodes run what was
//     started (each HelloCities calls three activities). Any other answer
//     counts in start_errors, with the codes in the notes.
//   - start_p50_ms, start_p99_ms: request sent to 202 received.
//   - start_ratio = starts_per_s / etcd_txn_per_s.
//
// lifecycle:
//
//   - lifecycle_per_s: HelloCities instances seen Completed per second,
//     sustained: -lifecycle-inflight workers (default C) each start an
//     instance (as above, nodes in turn) and, once a watch of this process
//     on /soloist/v1/instances/ sees its record Completed, start the next.
//     Records are parsed leniently: only instanceId and runtimeStatus are
//     read. Completion is never polled over HTTP.
//   - lifecycle_p50_ms, lifecycle_p99_ms: start request sent to Completed
//     seen.
//   - unfinished: instances started (202) during the phase that were not
//     seen Completed within -lifecycle-grace after the window (Failed or
//     Terminated ones count, and are named in the notes). Must be 0.
//   - lifecycle_ratio = lifecycle_per_s / etcd_txn_per_s.
//
// reqs (etcd requests per lifecycle):
//
//   - etcd_reqs_per_lifecycle: etcd's unary gRPC requests, the delta of
//     grpc_server_handled_total{grpc_type="unary"} (summed over every
//     method - Range, Txn, Put, DeleteRange, LeaseGrant, LeaseRevoke,
//     LeaseTimeToLive, Status, MemberList, ... - and every grpc_code) from
//     before the first start to 1 s after the last Completed, over K
//     lifecycles run -reqs-c at a time (default one) on a cluster otherwise
//     idle, divided by K. Watch and LeaseKeepAlive are streams
//     (grpc_type="bidi_stream") and not counted; the benchmark's own watch
//     is a stream too and sends no unary request in the window. The idle
//     rate measured just before is in the notes. Each method's share is a
//     key etcd_reqs_per_lifecycle_<method>; etcd_stream_msgs_per_lifecycle
//     counts, apart, the messages received on streams
//     (grpc_server_msg_received_total{grpc_type="bidi_stream"}: watch
//     creations and cancels, keepalives). lifecycle_idle_p50_ms is one
//     lifecycle's latency on the idle cluster.
//
// grpc (HelloCities run by Durable Task workers over gRPC):
//
//   - grpc_lifecycle_per_s: as lifecycle_per_s, on nodes started with
//     --grpc-listen (a port each) and without --demo, so they run nothing
//     natively: one worker of the project's own
//     (scheduler/sidecar/sidecartest, the protocol's generated stubs)
//     connected to each node runs HelloCities and SayHello, and each
//     instance is started with StartInstance on the nodes in turn.
//     Completed is seen by the same watch. -grpc-duration is the window
//     (4s with -short); -lifecycle-inflight and -lifecycle-grace apply.
//     grpc_lifecycle_p50_ms and _p99_ms go with it.
//   - grpc_vs_native = grpc_lifecycle_per_s / lifecycle_per_s of the same
//     run (n/a without the lifecycle phase). The target is 0.5.
//   - grpc_etcd_reqs_per_lifecycle: as etcd_reqs_per_lifecycle, over
//     -reqs-lifecycles gRPC lifecycles run -reqs-c at a time after the
//     window (the note gives the native figure and each method's share);
//     grpc_lifecycle_idle_p50_ms is one such lifecycle's latency.
//   - The phase fails if a start fails, an instance is not Completed
//     within the grace, or the node refuses a worker's answer.
//
// takeover (kill -9, nodes with --lease-ttl -takeover-ttl, default 2s):
//
//   - takeover_p50_s, takeover_p99_s, takeover_max_s (and _min_s): M times,
//     start an Approval instance (it waits for an event, timeoutSeconds
//     86400), wait until its owners key /soloist/v1/owners/{id} exists, read
//     the holder from its JSON value ("node"), SIGKILL that node, and time
//     from just before the signal until a watch sees the owners key created
//     again (a larger CreateRevision: another node holds it); then restart
//     the killed node and wait until it is ready.
//
// mass and handoff (nodes with --lease-ttl -mass-ttl, default 5s):
//
//   - mass_takeover_s: node n1 is started alone and M (-mass-instances,
//     1,000) Approval instances are started through it; once it holds
//     them all the other nodes are started (so nothing moves), then n1 is
//     killed with SIGKILL. Time from just before the signal until a watch
//     on /soloist/v1/owners/ has seen every one of the M owners keys
//     created by another node. mass_takeover_first_s is the first of them;
//     mass_running_s is until the peers' soloist_failovers_total sums to M
//     (each instance running again, polled every 50 ms).
//   - handoff_1000_s: the same set-up in a fresh deployment, then SIGTERM
//     to n1 (it drains and hands off): time from the signal until all M
//     are held by other nodes (the key keeps its name when -mass-instances
//     is not 1,000; handoff_instances says how many). handoff_first_s,
//     handoff_running_s and handoff_exit_s (the drained node's exit) go
//     with it. handoff_running_s is the figure the target is set on
//     (5,000 instances running elsewhere within 1.5 s: -mass-instances
//     5000): from the signal until the peers' soloist_handoffs_total sums
//     to M, polled every 50 ms from the signal on, while the keys move.
//
// idle (one node alone holding M idle instances, M = -idle-instances,
// 10,000; 1,000 with -short, said in the notes):
//
//   - bytes_per_held_instance: (VmRSS of the node from /proc/PID/status
//     after - before) / M, with the M parked (the node's steady state for
//     orchestrations that wait longer than its --park-after, which is
//     -idle-park-after: 30s, the product's default; 5s with -short).
//     Before: -idle-settle after the node is ready. After: all M Approval
//     instances held (owners keys seen), then all parked
//     (soloist_instances_parked = M), then the node's go_goroutines and
//     etcd's watcher count steady (each changing by under 0.5% in a
//     second), then -idle-settle. idle_hold_s (first start to all held)
//     and idle_park_s (then to all parked and steady) say how long that
//     took. A GC is forced before each reading (GET
//     /debug/pprof/heap?gc=1), 6 s before the after one, as the runtime
//     itself does at least every 2 minutes at rest; soloist serve returns a free heap larger than its
//     live one to the OS within 5 s of a GC (cmd/soloist/memory.go). RSS
//     may still hold memory the runtime has not returned, which
//     heap_inuse_per_held_instance
//     (go_memstats_heap_inuse_bytes), heap_free_per_held_instance
//     (go_memstats_heap_idle_bytes - go_memstats_heap_released_bytes:
//     free heap kept resident for reuse) and
//     stack_inuse_per_held_instance (go_memstats_stack_inuse_bytes) help
//     to read. With -pprof DIR the node's heap profile at the after
//     reading is saved as idle-n1.heap.pprof (idle-live-n1.heap.pprof for
//     the live node).
//   - The same figures with the suffix _live come from a second node of
//     --park-after 0, whose M runs stay in memory (each unloaded after a
//     second of waiting: no goroutine, its history kept for a replay
//     without a read; before this version, a goroutine waiting in its
//     orchestration): what a held instance costs before it parks.
//   - goroutines_per_held_instance: go_goroutines of the node, after -
//     before, / M.
//   - watchers_per_held_instance: etcd's gauge
//     etcd_debugging_mvcc_watcher_total (watchers, not streams), after -
//     before, / M; etcd_watchers is its value after (the benchmark's own
//     owners watch is one of them; etcd_debugging_mvcc_watch_stream_total
//     is in the notes).
//   - idle_etcd_reqs_per_s: etcd unary requests (as in reqs) over
//     -idle-window with the M held and nothing else happening, per second;
//     idle_etcd_stream_msgs_per_s counts the stream messages (keepalives)
//     of the same window apart.
//
// api (nodes of --role api, no runner nodes):
//
//   - starts_api_per_s, start_api_p99_ms, start_api_ratio: as starts_per_s,
//     start_p99_ms and start_ratio, against N nodes run with --role api. The
//     run looks for --role in `soloist serve -h` and makes one trial start;
//     without support the three keys are n/a and the run goes on.
//
// # Noise
//
// The throughput phases (etcd, starts, lifecycle, api) also report where
// the CPU went during their window, from /proc: cores used by etcd, by the
// nodes, by this process and by everything else on the machine (busy time
// of /proc/stat minus ours), the last as <phase>_others_cores. On a shared
// machine that tells a slow run from a slow product. The etcd phase notes
// etcd's WAL fsyncs and backend commits per second and their mean time
// (etcd_disk_wal_fsync_duration_seconds,
// etcd_disk_backend_commit_duration_seconds).
//
// # Hooks
//
// Every node runs with --metrics-listen on a port of its own and --pprof,
// so the bench can force a collection before it reads an idle node's
// memory. -pprof DIR also captures a CPU profile of every node over each
// measured window (DIR/PHASE-NODE.pprof), and of etcd, which it then
// starts with --enable-pprof (DIR/PHASE-etcd.pprof); in the handoff phase
// of the peers and etcd over the 3 s from the SIGTERM on.
//
// # Errors
//
// A phase that needs more nodes than -nodes is skipped (noted, keys n/a).
// A phase that fails is reported in the table (FAILED, with the error),
// its keys stay n/a, the other phases still run, and the exit status is 1.
// When mass or handoff give up waiting for instances to be held elsewhere,
// progress lines starting "diagnose:" say what etcd holds then: how many
// of the missing instances have an owners key after all (a watch of this
// process that missed events), the node keys, and for five of them the
// owners key (value, revisions, its lease's TTL left), the instance
// record (status, execution, revisions) and the inbox count; then each
// surviving node's campaign counters by result.
// A bad command line exits 2, an interrupted run 130.
package main
