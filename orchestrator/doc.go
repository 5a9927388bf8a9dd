// Package orchestrator is Soloist's programming model and its store in etcd:
// the registry of orchestrations, instance records and their runtime
// statuses, the atomic start with conflict and reuse policies, fenced
// writes by holders, the replay executor, and a Go client for everything
// (start, status, list, terminate, suspend, resume, restart, purge).
//
// # Data model
//
// Small keys that change, large keys written once (Keys has the layout):
//
//   - {prefix}v1/instances/{id} is the control record (Record): name,
//     status, execution ID, times, the last writer's fencing token - a few
//     hundred bytes. It is what every node mirrors and what every write
//     compares; no payload is in it.
//   - {prefix}v1/payloads/{id}/input, output and customStatus hold the
//     current execution's payloads: the start writes the input with the
//     record, the final write the output, SetCustomStatus the custom status.
//   - {prefix}v1/history/{id}/{exec}/{seq} holds the events one commit
//     appended; {prefix}v1/blobs/{id}/{exec}/{name} a payload of an event
//     too large to carry inline (over 16 KiB).
//   - {prefix}v1/inbox/{id}/{key} holds events raised for the instance and
//     not yet consumed, and suspend and resume marks.
//   - {prefix}v1/tasks/{id}/{exec}/{taskID} is the task queue
//     (taskqueue.go): an activity of a step driver's run that no worker of
//     its holder serves, for a worker on any node; its claim beside it is
//     on the claiming node's lease, and its result comes back as an inbox
//     entry, stored once per task. The final write deletes what is left.
//
// # How a step fits etcd's limits
//
// etcd refuses a request over --max-request-bytes (1.5 MiB by default) and
// a transaction of more than --max-txn-ops (128) operations; retrying such
// a request can never succeed. Every transaction built from user data is
// therefore cut to Limits by construction (Execution.plan):
//
//  1. every payload over 16 KiB (an activity's input or result, an event's
//     data) is written first, once, as a blob, in fenced transactions of at
//     most the request budget; nothing refers to a blob until step 2 commits,
//     so a crash in between leaves only unreferenced keys that the
//     execution's end deletes;
//  2. the step's events are appended, in order, as history keys of at most
//     the budget each - one key in the usual case; a crash between two
//     leaves a prefix of the step, which replay reads as a step that had not
//     finished (its tasks are issued again, its events delivered again);
//  3. the inbox keys the events consumed are deleted after the events that
//     consumed them, in the same transaction while they fit and in
//     transactions of their own after that; replay skips inbox keys that it
//     finds in history (HistoryEvent.InboxKey);
//  4. the record change (Running, a terminal status, ContinuedAsNew) and
//     the final operations (output, retention index, the owners key's
//     release) go with the last transaction.
//
// --max-payload is checked at startup against the request limit
// (CheckLimits), so a start (record and input) and a final write (record,
// output and a small history key) always fit. ContinueAsNew writes the next
// execution's first history (its ExecutionStarted and the events carried
// over) the same way before the transaction that switches the record.
//
// # Guarantees
//
//   - A start is one etcd transaction that creates or replaces the record
//     only if the policies allow it: If(absent) Then(create) Else(read) for
//     a new ID, a compare on the record's ModRevision otherwise. Two racing
//     starts of one ID can never both succeed against an active instance,
//     and Start returns only after the commit. On an unknown outcome it
//     reads the record until it knows or its context ends: it reports
//     success only if its own execution is there, decides again if the
//     record changed so that its write can no longer apply, and otherwise
//     says the outcome is unknown - never that the start was not committed.
//   - Every (re)start gets a new executionId. Replacing an execution leaves
//     its owners key to its holder (which sees the change and releases
//     it), so nothing of the older execution can write into the newer one
//     and the newer one starts only after the older one's effects end.
//   - Every write a holder makes (a step, MarkRunning, SetCustomStatus, the
//     final write) is a transaction that compares the holder's fence (the
//     CreateRevision of its owners key) and the record's ModRevision. A
//     failed fence returns ErrFenced and writes nothing; a record that
//     belongs to another execution or is no longer runnable returns
//     ErrExecutionChanged. A write whose outcome was unknown is recognised
//     by its record when it is tried again.
//   - The final write puts the terminal status and deletes the owners key in
//     one transaction: an instance is never terminal and held at once.
//   - Client-side changes (terminate, suspend, resume, purge) are
//     compare-and-swap on the record. RaiseEvent does not compare the
//     record (a busy holder never makes it retry): it writes the event and
//     reads the record in one transaction.
//   - Store errors are told apart: ErrNoSpace, ErrStoreLimit and
//     ErrStoreDenied are permanent (etcd refused before applying);
//     ErrUnavailable is transient, and for a write the outcome is unknown.
//     A run retries transient errors of its commits with backoff for as
//     long as it holds the instance; a step etcd can never accept fails the
//     instance with a message that names the limit.
//   - Activity retries (WithRetry) are durable: every attempt is a task in
//     the history and every wait a durable timer, so the attempts never
//     exceed MaxAttempts across takeovers.
//   - A run has no goroutine of its own while the orchestration waits: it
//     wakes when an activity, a timer or an inbox entry completes something
//     (a node delivers inbox entries from its one watch, Driver.Deliver),
//     and everything ready by then shares one commit.
//
// # The pieces of a run
//
// One engine of fenced commits, and drivers that feed it actions:
//
//   - engine.go: the actions (ScheduleTask, CreateTimer,
//     CreateSubOrchestration, SendEvent, TerminateInstance,
//     SetCustomStatus, Complete), their validation, and the Engine that
//     turns them into history events and keeps the committed and pending
//     history of one execution;
//   - terminate.go: TerminateInstance's terminate of another instance,
//     made before the step's commit (it cannot join it);
//   - commit.go: the Engine's fenced writes - a step's commit, the final
//     write (Completed, Failed, Terminated with output, record and owners
//     key's release in one transaction) and ContinueAsNew;
//   - step.go: the exported step API for a driver that is not the Go
//     coroutine (a remote worker): Open an Engine, Next hands it the past
//     and new events, Complete takes its actions back;
//   - stepdriver.go: DriveSteps, the Driver of a run over that API - it
//     sends a step when something is new (the start, an inbox entry, a due
//     timer, a task's result), runs the tasks the steps schedule (local
//     activities here, others with a TaskFunc whose results it holds in
//     memory for the next step, which commits them; a committed result is
//     never repeated, an uncommitted one is run again by the next run; see
//     "What a crash repeats"), and fails the execution on an answer it
//     cannot take;
//   - run.go: a run of the Go driver - its mailbox loop, parking, batches'
//     bounds, outcome;
//   - replay.go: rebuilding the Go orchestration's state from history and
//     matching the code's calls against it;
//   - coroutine.go: the orchestration goroutine and its steps;
//   - activity.go: local activity work, and batches of it.
//
// # Batches of local activities
//
// With RunOptions.BatchBudget above zero (a node's default is 1 s, serve
// --batch-budget), the activities a step schedules that run on this node
// (registered in the Registry, without a retry policy) start before their
// schedule is committed; their results are applied in memory and the code
// goes on. The batch commits when the orchestration schedules anything
// else (a timer, a sub-orchestration, an activity not registered here, a
// retried activity's attempt), waits with none of the batch's activities
// running, finishes (the batch is the final write: HelloCities is the
// start, taking the instance where it lands, and one commit), would start more than RunOptions.BatchTasks
// activities, or BatchBudget has passed since the batch's last commit (a
// checkpoint then, while its activities go on; a result that arrives after
// the budget is committed before the next activity starts).
// Driver.Checkpoint commits at once and turns batching off for the rest
// of the run; a draining node calls it before it stops its runs.
//
// # What a crash mid-batch repeats
//
// The next holder replays the history the last commit left, so exactly the
// activities whose result that commit did not hold run again, each once
// more per crash (or lost lease); no activity whose result was committed
// runs again. These are:
//
//   - the activities the open batch started since its last commit: at most
//     BatchTasks (100), every one begun less than BatchBudget after that
//     commit;
//   - the activities that were running when that commit was made: a
//     checkpoint leaves the batch's running activities running, and an
//     activity whose schedule the commit held starts right after it.
//
// In a chain (each activity awaited before the next is called) that is at
// most BatchTasks + 1, all but the first begun within BatchBudget of the
// last commit. Without batching only the second kind exists: the
// activities running at the crash, as always. A drain (Driver.Checkpoint,
// then the stop) leaves only the activities running at the stop.
// TestFaultKillMidBatch (package integration) measures this with real
// nodes and kill -9; docs/performance.md has its figures.
//
// A step driver's run (a worker's orchestration, DriveSteps) has the same
// bound for its activities, local or a worker's: a result is held in
// memory until the next step, answered by the worker, commits it with the
// step's other events, so a crash repeats the activities running at it and
// those whose result arrived after the last commit (each scheduled by a
// committed step), once each. Driver.Checkpoint stores the held results in
// the instance's inbox instead, so a drain repeats only the activities
// running at the stop. A task that went through the task queue is out
// until its result is in the inbox: a crash of the holder repeats nothing
// of it (the queued task and its claim outlive the holder), a crash of the
// node running it repeats it once, when the claim ends with that node's
// lease.
//
// Retries and failures keep their guarantees. A retried activity (WithRetry)
// never joins a batch: each attempt is committed before it runs and each
// wait is a durable timer, so a crash repeats at most the attempt that was
// running, under its own number, and MaxAttempts holds across takeovers.
// A failed activity is a result like any other: its TaskFailed event, with
// its FailureDetails (type, message, stack), is committed with the batch,
// or run again if the crash came first.
//
// # Suspend and resume in history
//
// Events raised while an instance is suspended are recorded in arrival
// order between ExecutionSuspended and ExecutionResumed, as the Durable
// Task backends do; none is delivered to the code before the resume
// (replay holds them back and delivers them, in order, at
// ExecutionResumed).
//
// # Tracing
//
// With a TracerProvider in ClientConfig (none by default: a no-op one, and
// the global provider is never used) a run of an execution is one span,
// "run {name}", from its start on a node to its end, with the instance,
// execution, function, version, fencing token and RunOptions.Reason as
// attributes; every activity attempt ("activity {name}"), sub-orchestration
// start ("start sub-orchestration {name}") and the final write ("complete
// {name}", with the status it writes) is a child of it. The trace context
// travels with the instance: a start stores StartOptions.Trace (W3C
// traceparent and tracestate) in the record, and every run of the
// execution, on whichever node and however long after, is a child of it;
// a sub-orchestration's record gets the context of its start span, and
// ContinueAsNew keeps the record's. The orchestration's context carries
// the run's span, so exec and HTTP functions pass it on (TRACEPARENT, the
// traceparent header); an activity's context carries its own span. A child rather than a link: a run does what the
// start asked for, and one trace per execution shows it whole across
// takeovers; the price is a trace as long as the execution.
//
// # Not guaranteed
//
// An orchestration's side effects outside etcd happen at least once: after
// a failover the new holder runs the function again (with a larger fencing
// token, which downstream systems should check). This package does not
// decide who holds an instance; that is the lease and scheduler packages'
// job, and it takes their fence as a clientv3.Cmp and their release as a
// clientv3.Op.
//
// Error kinds are sentinels matched with errors.Is (ErrInstanceNotFound,
// ErrInstanceExists, ErrInvalidInstanceID, ...); *ExistsError carries the
// status of the instance that blocked a start.
package orchestrator
