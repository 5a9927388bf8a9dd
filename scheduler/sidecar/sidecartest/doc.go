// Package sidecartest is a Durable Task worker and client of the
// project's own, written against the generated stubs of the sidecar
// protocol (TaskHubSidecarService). It is for tests and benchmarks only:
// it lets code outside scheduler/sidecar (the benchmark in
// integration/bench, the real-process tests of cmd/soloist) drive a
// `soloist serve --grpc-listen` node the way an SDK worker does, without
// importing the generated code, which is internal to scheduler/sidecar.
//
// The worker runs one orchestration, HelloCities, exactly as the
// `--demo` orchestration of that name: it calls the activity SayHello
// for "Tokyo", "Seattle" and "London" in turn and completes with
// ["Hello Tokyo!","Hello Seattle!","Hello London!"]. The activity runs in
// the worker (Options.Activity can replace it, for example to hold it
// while a test kills the node). A step of any other orchestration is
// answered with a failed completion. It speaks the current dialect: it
// sends no work-item filters (so it serves every orchestration the node
// does not run natively) and echoes every completion token.
//
// What it does not do: timers, events, sub-orchestrations, retries; it
// does not reconnect when its stream ends (a new Connect does).
package sidecartest
