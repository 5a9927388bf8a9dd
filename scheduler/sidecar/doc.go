// Package sidecar serves the Durable Task "sidecar" gRPC protocol
// (TaskHubSidecarService) on a Soloist node, so that orchestrations written
// with the Durable Task SDKs (.NET, Python, Java, JavaScript, Go) run on
// Soloist with only the SDK's address changed. The wire contract is
// internal/protos/sidecar.proto; soloist serve serves it at --grpc-listen
// (docs/durable-task-sdks.md).
//
// The server talks to the node (scheduler.Node) and the instance client
// (orchestrator.Client) only, never to etcd directly.
//
// # Guarantees
//
//   - Every call is authenticated when API keys are configured: the gRPC
//     metadata "authorization: Bearer KEY" or "x-functions-key: KEY", keys
//     compared in constant time; otherwise UNAUTHENTICATED, before the
//     request is looked at.
//   - A start is one etcd transaction (orchestrator.Client.Start): of any
//     number of concurrent starts of one ID through any nodes, at most one
//     creates an execution, and every other is told ALREADY_EXISTS (with
//     "orchestration instance already exists" in its message) or, under an
//     IGNORE policy, gets the existing instance. Both reuse-policy dialects
//     are accepted (see StartInstance).
//   - Bad input (a malformed instance ID, invalid JSON, an oversize payload,
//     an unknown status) is INVALID_ARGUMENT with what is wrong; a message
//     above MessageFactor x MaxPayload + MessageOverhead is refused with
//     RESOURCE_EXHAUSTED before it is decoded; a missing instance is
//     NOT_FOUND (GetInstance and the waits answer exists=false, as the SDKs
//     expect); a panic in a handler is INTERNAL and logged, and the server
//     keeps serving.
//   - Entities and task hub management are UNIMPLEMENTED, with a message
//     that says so.
//   - Workers (GetWorkItems) run orchestrations on the node: with
//     Server.Remote given to the node (Node.SetRemote, as soloist serve
//     does), the node campaigns for the instances whose orchestration a
//     connected worker serves and runs them with orchestrator.DriveSteps.
//     One orchestration step per instance is out at a time; a worker's
//     answer is committed with the holder's fence before
//     CompleteOrchestratorTask returns (except, with the node's batch
//     budget, an answer that only schedules activities: it is committed
//     with a later step, within the budget), and an answer for an older send,
//     or after the node lost the instance, is refused (FAILED_PRECONDITION)
//     and changes nothing. An answer the node cannot take (an entity
//     action, an unknown action, a bad payload) is refused to the worker
//     and fails the execution with the reason. An activity's result is
//     handed to the run in memory and committed with the next step, the
//     one that delivers it to the orchestration (no write of its own); an
//     activity without a committed result when its node stopped is sent
//     again by the next holder (at least once), and a drain stores the
//     results not yet committed in the instance's inbox so the next holder
//     does not run those again. An activity no worker of the holding node
//     serves goes to etcd's task queue (orchestrator.QueueTask); a node with
//     a worker that serves it claims it on its session lease, and stores
//     the answer in the instance's inbox, only once per task, with the
//     task's deletion (orchestrator.FinishTask); a claim is given back when
//     the node's workers for it go or the node drains, and ends with the
//     node's session. Details: docs/durable-task-workers.md.
//   - Shutdown ends the waits and streams in progress at once (workers
//     reconnect to another node) and lets other calls finish within its
//     context.
package sidecar
