// Package dashboard serves Soloist's web dashboard at /ui/ on a node's API
// listener: instances (filters, sorting, paging, holder, fencing token,
// lease time to live), one instance (status, payloads, failure chain,
// history timeline, ownership history), the cluster (nodes, leases,
// holdings, takeovers, the gRPC workers connected to this node) and
// schedules, with a health banner. The workers come from Config.Workers, an
// interface cmd/soloist implements with the sidecar: this package does not
// import scheduler/sidecar.
//
// # How it works
//
// Pages are HTML rendered on the server (html/template) from what the node
// and the orchestrator client already know; a little hand-written
// JavaScript loads them and refreshes them. Nothing is fetched from the
// internet and there is no build step: the assets are embedded.
//
// Each page URL serves the same small login shell, which holds no data.
// The shell reads the API key from the tab's session storage (asking for
// it with a form when keys are on) and loads the stylesheet, the script and
// every fragment with the key in the Authorization header; the key is
// never put in a URL. With keys on, every route but the shell answers 401
// without a valid key, and a refused key shows the form again.
//
// Live updates come from the node's own watch (scheduler.Node.Subscribe)
// as Server-Sent Events at /ui/api/stream, read with fetch() so that the
// key travels in a header; each change makes the page read its live part
// again (at most one read in flight, one more queued). Nothing polls.
//
// Actions (terminate, suspend, resume, raise event, rewind, restart,
// purge, and bulk terminate/restart/purge) are POSTs to /ui/api/..., each
// sent through the node's HTTP API handler with the caller's key, so they
// are checked and answered exactly as the API answers them. With ReadOnly
// the pages offer no action and those routes answer 403.
//
// # Guarantees
//
//   - With API keys, nothing but the login shell is served without a key.
//   - No key in a URL: a ?code= key is not accepted on dashboard routes.
//   - A change the node's watch sees reaches an open page as one event;
//     a stream that falls behind is ended with "reset" (the page reads
//     again and reconnects), never blocking the node.
//
// # Not guaranteed
//
// Sorting and paging read at most 5,000 matching instances. The ownership
// history is what this node saw since its dashboard started (kept in
// memory, bounded), not a durable record; so is the list of an instance's
// generations (its executions seen held, and which ended with
// ContinueAsNew): etcd keeps the history of the current execution only. A node of role api does not
// watch the cluster: its pages load but do not update by themselves.
package dashboard
