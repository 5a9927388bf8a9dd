// Package orchestrator is Soloist's programming model and its store in etcd:
// the registry of orchestrations, instance records and their runtime
// statuses, the atomic start with conflict and reuse policies, fenced
// writes by holders, and a Go client for everything (start, status, list,
// terminate, suspend, resume, restart, purge).
//
// # Guarantees
//
//   - A start is one etcd transaction that creates or replaces the record
//     only if the policies allow it (a compare on the record's
//     CreateRevision or ModRevision). Two racing starts of one ID can never
//     both succeed against an active instance, and Start returns only after
//     the commit; on an unknown outcome it reads the record back and reports
//     success only if its own execution is there.
//   - Every (re)start gets a new executionId, and replacing an execution
//     deletes its owners key in the same transaction, so nothing of an older
//     execution can write into a newer one.
//   - Every write a holder makes (Execution.Update, MarkRunning, Finish) is
//     one transaction that compares the holder's fence (the CreateRevision of
//     its owners key) and the record's ModRevision. A failed fence returns
//     ErrFenced and writes nothing; a record that belongs to another
//     execution or is no longer runnable returns ErrExecutionChanged.
//   - Finish writes the terminal status and deletes the owners key in one
//     transaction: an instance is never terminal and held at once.
//   - Client-side changes (terminate, suspend, resume, purge) are
//     compare-and-swap on the record's ModRevision and never lose a
//     concurrent change.
//
// # Not guaranteed
//
// An orchestration's side effects outside etcd happen at least once: after
// a failover the new holder runs the function again (with a larger fencing
// token, which downstream systems should check). This package does not
// decide who holds an instance; that is the lease and scheduler packages'
// job, and it takes their fence as a clientv3.Cmp.
//
// Error kinds are sentinels matched with errors.Is (ErrInstanceNotFound,
// ErrInstanceExists, ErrInvalidInstanceID, ...); *ExistsError carries the
// status of the instance that blocked a start.
package orchestrator
