// Package httpapi serves Soloist's HTTP API (SPEC section 3): the Durable
// Functions compatible routes that start, read, list and control
// orchestration instances, and the node's /livez, /readyz, /healthz and
// /metrics.
//
//	POST   /api/orchestrators/{functionName}[/{instanceId}]   start
//	GET    {base}/instances                                   list (x-ms-continuation-token)
//	GET    {base}/instances/{id}                              status: 202 active, 200 terminal
//	DELETE {base}/instances/{id}                              purge a terminal instance
//	POST   {base}/instances/{id}/terminate|suspend|resume|restart
//	POST   {base}/instances/{id}/raiseEvent/{eventName}
//
// with {base} = /runtime/webhooks/durabletask (BasePath).
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
//   - A refused start writes nothing to etcd: the function (404), the
//     instance ID (400), the policies (400), the body's size (413) and JSON
//     (400), and the node's readiness (503) are all checked first.
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
//     in constant time. The URLs of a check-status body carry ?code= only
//     if the request authenticated with ?code=.
//   - soloist_start_requests_total{function,result} counts every start
//     request that passed authentication; function is "" for a function the
//     node does not know, so its values are bounded by the registry.
//
// # What it does not guarantee
//
//   - A 202 from terminate, suspend or resume means the record changed in
//     etcd; the holder stops its run when it sees the change, a moment later.
//   - List pages are read at different revisions: an instance that changes
//     between pages can appear twice or not at all. List items carry node ""
//     and the fencing token of the record's last writer; read an instance
//     for its current holder.
//   - historyEvents is an empty array until history is recorded, and
//     raiseEvent answers 501 until external events exist.
//   - The absolute URLs are built from the request's Host and
//     X-Forwarded-Proto; a proxy that rewrites the host must pass it on.
package httpapi
