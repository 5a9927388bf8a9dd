// Package execfn runs an external program as a Soloist orchestration: the
// "exec" functions of the config file (SPEC section 6).
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
// The program runs in its own process group. When the orchestration's
// context is cancelled - the node lost the instance's lease, the instance was
// terminated or suspended, or the node is draining - or the attempt's timeout
// expires, the whole group gets SIGKILL at once, children and grandchildren
// included. When the program exits, whatever it left running in its group
// is killed too, so nothing of an attempt outlives it. A process that moves
// itself out of the group (setsid, double fork into a new group) escapes
// this; don't do that.
//
// # Guarantees, and what is not guaranteed
//
// Soloist runs at most one holder of an instance at a time in the sense of
// SPEC section 5: a holder that loses its lease kills its program before a
// new holder can start, absent process pauses. It does not make the program's
// effects exactly-once: delivery is at-least-once. If the holder's node dies
// or loses its lease while the program runs, the program runs again from the
// beginning on the new holder, with a larger SOLOIST_FENCING_TOKEN. Programs
// should be idempotent, or pass the fencing token to the systems they write
// to so that those can refuse writes from an older holder.
//
// Retries (Options.Retry) re-run the program after a failed attempt within
// the same holding; Timeout applies to each attempt. Retries stop at once
// when the context is cancelled.
package execfn
