// Package httpapi serves Soloist's HTTP API (docs/contract.md section 3): the Durable
// Functions compatible routes that start, read, list and control
// orchestration instances, and the node's /livez, /readyz, /healthz and
// /metrics.
//
//	POST   /api/orchestrators/{functionName}[/{instanceId}]     start (404 for an unknown function)
//	POST   {base}/orchestrators/{functionName}[/{instanceId}]   start, the built-in route (400 for an unknown function)
//	GET    {base}/instances                                     list (x-ms-continuation-token)
//	GET    {base}/instances/{id}                                status: 202 active, 200 terminal
//	DELETE {base}/instances/{id}                                purge a terminal instance
//	DELETE {base}/instances?createdTimeFrom=...                 purge many
//	POST   {base}/instances/{id}/terminate|suspend|resume|rewind|restart
//	POST   {base}/instances/{id}/raiseEvent/{eventName}       body = event data (JSON)
//
// with {base} = /runtime/webhooks/durabletask (BasePath). The entity routes
// ({base}/entities/...) answer 404: Soloist has no durable entities.
// docs/http-api.md ("Parity with Durable Functions") has the table of
// every route and parameter of Durable Functions' HTTP API reference and
// what Soloist does with it.
//
// Every route checks its query parameters: one it does not take, one given
// twice (but runtimeStatus and tag) and a query that is not valid URL
// encoding get 400, so a parameter is never ignored silently. Names match
// in any letter case, as in Durable Functions. taskHub and connection are
// taken everywhere and have no effect (a node serves the one store of its
// etcd prefix); code is the API key.
//
// A start with timeout (seconds, or a Go duration; at most 5 minutes), a
// restart with timeout and a status with waitForCompletion wait for the
// instance to finish on the client's etcd watch, not by polling
// (pollingInterval is checked and has no effect), and end early when the
// node begins to stop (Config.Stopping).
//
// # What it guarantees
//
//   - A start answers 202 only after its one etcd transaction committed the
//     new execution (orchestrator.Client.Start returns only then). If the
//     outcome of the commit is unknown the answer is 503, never 202: read
//     the instance's status before retrying.
//   - With conflictPolicy=fail (the default), two starts of the same ID
//     cannot both get 202 while the first is active: the second gets 409
//     with the body
//     {"error":"An instance with ID '<id>' already exists.","id":..,"runtimeStatus":..,"statusQueryGetUri":..}
//     (or 200 and the existing instance's check-status body with
//     conflictPolicy=useExisting). The decision is etcd's, not a
//     check-then-start in this process.
//   - A refused start writes nothing to etcd: the function (404, or 400 on
//     the built-in route), the instance ID (400), the query parameters
//     (400: policies, version, tags, times, waits), the body's size (413)
//     and JSON (400), and the node's readiness (503) are all checked first.
//   - A start or restart with timeout answers 200 with the output only if
//     the instance Completed within it; Failed or Terminated within it
//     answer its status (200, or 500 for Failed with
//     returnInternalServerErrorOnFailure=true); otherwise, and if the wait
//     itself fails, 202 with the check-status body, as without timeout. The
//     start is committed before the wait begins either way.
//   - A status with waitForCompletion answers when the instance is
//     terminal, or when the wait runs out or the node begins to stop, with
//     the status as it is then; while it is active it holds no lock and
//     writes nothing.
//   - Every error is JSON {"error":"<what is wrong and how to fix it>"} with
//     the code of StatusCode, the one table from errors to HTTP codes; this
//     holds for unknown routes (404), wrong methods (405) and a missing API
//     key (401) too. A 500 never carries internals or a stack: it is logged
//     at error level, with the stack if the cause was a panic.
//   - Instance IDs in paths are checked with orchestrator.ValidateInstanceID
//     after the mux unescapes them, so an ID with an encoded slash (%2F) or
//     other forbidden character gets 400, not 404.
//   - With API keys, every route but /livez, /readyz and /healthz needs one
//     (Authorization: Bearer, x-functions-key, or ?code=); keys are compared
//     in constant time, and checked before the body is read: a request
//     without a valid key gets 401 at once and its connection is closed.
//     The URLs of a check-status body carry ?code= only if the request
//     authenticated with ?code= (as in Durable Functions), and never with
//     Config.OmitCodeInURLs.
//   - raiseEvent answers 202 only after the event is committed to the
//     inbox of the instance's current execution; its holder delivers it to
//     the orchestration once, in arrival order (events raised before the
//     orchestration waits for them are kept). A terminal instance gets 410
//     and nothing is stored; an unknown one 404; a bad event name or a body
//     that is not JSON 400; a body over the payload limit 413.
//   - showHistory=true adds historyEvents: the history of the execution
//     the body's executionId names, in the Durable Functions shape (see
//     HistoryEvent), compressed as Durable Functions does (the TaskScheduled
//     of a finished activity is folded into its TaskCompleted or
//     TaskFailed). Payloads of history events (activity inputs and results,
//     event data, the orchestration's result) are included only with
//     showHistoryOutput=true; the input of ExecutionStarted follows
//     showInput.
//   - node and fencingToken name the current holder: the owners key that
//     holds the record's execution. When no node holds it, node is "" and
//     fencingToken is that of the holding that last wrote the record (0 if
//     none did).
//   - soloist_start_requests_total{function,result} counts every start
//     request that passed authentication; function is "" for a function the
//     node does not know, so its values are bounded by the registry.
//   - soloist_http_requests_total{route,code} and
//     soloist_http_request_duration_seconds{route} count and time every
//     request, unauthenticated ones included; route is the mux pattern
//     (e.g. "GET {base}/instances/{id}") or "unmatched", never the path, so
//     no instance ID reaches a label.
//   - Status and list reads fail within Config.ReadTimeout (3s) while etcd
//     does not answer, with a 503 that names Config.EtcdEndpoints; writes
//     get Config.OperationTimeout (10s).
//   - With Config.HealthOnly (a node that runs instances only) every route
//     but /livez, /readyz, /healthz and /metrics is a 404 that says where
//     starts go, and nothing is written.
//
// # What it does not guarantee
//
//   - A 202 from terminate, suspend or resume means the record changed in
//     etcd; the holder stops its run when it sees the change, a moment later.
//   - List pages are read at different revisions: an instance that changes
//     between pages can appear twice or not at all. The node and
//     fencingToken of list items come from one read of the page's owners
//     keys, at a later revision than the records: an item can show a holder
//     that took the instance just after its record was read, or none for
//     one released in between. Read an instance for a consistent view (one
//     etcd transaction reads its record and owners key).
//   - historyEvents is read just after the record, so it can be a step
//     ahead of runtimeStatus (for example end with ExecutionCompleted while
//     the body still says Running). It is [] for a Pending instance and for
//     an execution whose history is gone (restarted or purged in between).
//     Terminate, suspend and resume do not wait for the holder: suspend and
//     resume appear in the history when a holder next runs the instance,
//     and terminate adds no history event.
//   - A 202 from raiseEvent does not mean the orchestration consumed the
//     event: one that never waits for it drops it when the execution ends
//     (ContinueAsNew carries it over to the next execution).
//   - The absolute URLs are built from Config.PublicURL, or without it
//     from the request's Host and X-Forwarded-Proto; a proxy that rewrites
//     the host must pass it on, or the node must be given PublicURL.
package httpapi
