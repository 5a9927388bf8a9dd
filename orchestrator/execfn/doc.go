// Package execfn runs an external program as a Soloist orchestration: the
// "exec" functions of the config file (docs/contract.md section 6).
//
// # Contract
//
// The program gets the instance input JSON on stdin and, on top of the
// parent's environment and Options.Env, these variables:
//
//	SOLOIST_INSTANCE_ID     the instance ID
//	SOLOIST_EXECUTION_ID    the execution ID (new with every start or restart)
//	SOLOIST_FUNCTION        the orchestration name
//	SOLOIST_FENCING_TOKEN   the holder's fencing token (decimal)
//	TRACEPARENT             the W3C trace context of the attempt's span, when
//	TRACESTATE              the run has one (TRACESTATE only if not empty)
//
// Each attempt is an OpenTelemetry span "exec {function}", a child of the
// run's span in the context Run gets, made with that span's provider (no
// global one); the node's own TRACEPARENT and TRACESTATE, if it was
// started with any, are never passed on.
//
// Exit status 0 completes the instance with stdout as its output: the JSON
// value if stdout parses as JSON, else stdout as a JSON string (trailing
// newlines removed); an empty stdout gives null. Any other exit fails the
// attempt with the exit code and the last 4 KiB of stderr. Stdout is capped
// (Options.MaxOutput, 1 MiB by default): a program that writes more is killed
// and the attempt fails; write large results elsewhere and print a
// reference. The orchestrator's own payload limit (--max-payload) applies to
// the output after that.
//
// # Process lifetime
//
// An attempt's processes - the program and everything it starts - never
// outlive the attempt, nor the node that runs it. With Options.Supervisor
// set (soloist serve always sets it, on Linux), the program runs under the
// exec supervisor, a small process of the same binary (soloist
// __exec-supervisor, SupervisorMain) between the node and the program:
//
//   - The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): every
//     descendant of the program that is orphaned, by a double fork or by
//     its parent's death, is re-parented to it, not to init. The program
//     runs in a process group of its own.
//   - The node holds the only write end of a pipe whose read end is the
//     supervisor's descriptor 3, the lifeline. The kernel closes a dead
//     process's descriptors, so the supervisor reads EOF the moment the
//     node dies, however it died: SIGKILL, a crash, the OOM killer. There
//     is no start-up race: the pipe exists before the supervisor does, and
//     a supervisor whose node is already gone does not start the program.
//   - On EOF, and when the program exits, the supervisor sends SIGKILL to
//     the program's process group and to every descendant it finds in
//     /proc, again until it has no child left, then exits. With the
//     subreaper, "no child left" means no descendant left, whatever process
//     groups or sessions they moved to (setsid, setpgid, double forks).
//   - Cancelling an attempt - the node lost the instance's lease, the
//     instance was terminated or suspended, the node drains, the attempt
//     timed out or wrote too much - closes the lifeline: the same path as
//     the node's death, at once and with SIGKILL. If the supervisor has
//     not exited 500 ms later (it was stopped, say), the node kills every
//     descendant of it that it can see, then the supervisor.
//   - Run returns only after the supervisor exited, so when an attempt
//     ends nothing of it runs any more; a leftover that held stdout open
//     does not delay the result either.
//
// The supervisor is transparent: the program gets the same stdin, stdout,
// stderr, environment, arguments and working directory, and the supervisor
// exits as the program did, killed by the same signal included, so errors
// read the same (ExitError: "killed by signal 9 (killed)"). SIGTERM,
// SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to the supervisor are
// forwarded to the program's process group, which may handle them (soloist
// itself never sends them; it kills).
//
// Not covered, by nature or by design:
//
//   - A node that is paused (SIGSTOP, a frozen VM or container) is not
//     dead: its lifeline stays open and its programs keep running, with the
//     old fencing token, until it wakes and notices that it lost its lease
//     (lease/doc.go). Downstream systems must check the token.
//   - A supervisor killed with SIGKILL itself (by hand, or chosen by the
//     OOM killer) takes the program with it (parent-death signal) but not
//     the program's children, which go to init.
//   - Processes started on the program's behalf by another service (a job
//     sent to systemd-run, at, docker, ssh to another host) are not its
//     descendants, and nothing kills them.
//   - A descendant cannot escape the subreaper on Linux: re-parenting goes
//     to the nearest living subreaper ancestor, which is the supervisor or
//     one of its own descendants. A process stuck in uninterruptible sleep
//     (state D) dies only when it wakes; the supervisor waits for it 10 s,
//     then exits.
//   - Without a supervisor (Options.Supervisor empty, or outside Linux)
//     the program runs directly in its own process group, which is killed
//     on cancellation and after the program exits; on Linux the program
//     also gets a parent-death signal. A process that moves out of the
//     group (setsid, double fork into a new group) escapes that, and the
//     program's children survive a node killed with SIGKILL. Outside Linux
//     the program itself survives it too.
//
// # Guarantees, and what is not guaranteed
//
// Soloist runs at most one holder of an instance at a time in the sense of
// docs/contract.md section 5: a holder that loses its lease kills its program, and with
// the supervisor everything the program started, before a new holder can
// start, absent process pauses; a holder that dies takes them with it. It
// does not make the program's effects exactly-once: delivery is
// at-least-once. If the holder's node dies or loses its lease while the
// program runs, the program runs again from the beginning on the new
// holder, with a larger SOLOIST_FENCING_TOKEN. Programs should be
// idempotent, or pass the fencing token to the systems they write to so
// that those can refuse writes from an older holder.
//
// Retries (Options.Retry) re-run the program after a failed attempt within
// the same holding; Timeout applies to each attempt, and Retry.Timeout
// (if set) to the retries: no attempt starts later than that after the
// first began. Retries stop at once when the context is cancelled.
//
// Under the supervisor a result never waits for a process the program left
// behind: everything below the program is killed as soon as it exits.
// Without it, a leftover that keeps stdout or stderr open delays the result
// by at most the 2 s wait delay, and Run logs a warning saying so.
package execfn
