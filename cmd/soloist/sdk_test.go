package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The Durable Task Go SDK itself (github.com/microsoft/durabletask-go
// v0.6.0, built from testdata/durabletask-go, a module of its own that
// imports nothing of Soloist) runs on soloist serve unchanged but for the
// address: its worker serves an orchestration that reads its input, waits
// for an event, sets a custom status, calls an activity twice and waits
// on a durable timer; its client starts it, raises the event and waits
// for the end, then races 20 starts of another ID, of which exactly one
// succeeds (the check-then-start race the Durable Functions docs admit,
// closed). The SDK's SetCustomStatus sends its string unserialized
// (the other SDKs send JSON): Soloist keeps it as a JSON string rather
// than failing the orchestration.
func TestServeDurableTaskGoSDK(t *testing.T) {
	soloistBinary(t) // skips with -short, as every test that runs serve
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the SDK's program with")
	}
	probe := filepath.Join(t.TempDir(), "durabletask-go-probe")
	build := exec.Command(gobin, "build", "-o", probe, ".")
	build.Dir = filepath.Join("testdata", "durabletask-go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Durable Task Go SDK program (it needs the Go module proxy for github.com/microsoft/durabletask-go): %v\n%s", err, out)
	}
	addr := freeAddr(t)
	p := startServe(t, "--grpc-listen", addr)
	p.waitReady()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, probe, "-addr", addr, "-id", "sdk-go-1")
	out, err := run.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("the SDK program: %v\nstdout: %s\nstderr: %s", err, out, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("the SDK program printed %q: %v", out, err)
	}
	want := map[string]string{
		"name":         "SdkGreet",
		"status":       "ORCHESTRATION_STATUS_COMPLETED",
		"input":        `["Tokyo","London"]`,
		"output":       `["Hello, Tokyo!","Hello, London!"]`,
		"customStatus": `"approved by ops"`,
		// 20 racing ScheduleNewOrchestration of one ID: one starts it,
		// every other gets ALREADY_EXISTS.
		"raceWon":     "1",
		"raceRefused": "19",
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != v {
			t.Errorf("%s = %v, want %s (all: %v)", k, got[k], v, got)
		}
	}
	// The same instance through the HTTP API, as an operator sees it.
	stdout, stderr, code := p.cli(nil, "status", "sdk-go-1")
	if code != 0 {
		t.Fatalf("soloist status: exit %d\n%s%s", code, stdout, stderr)
	}
	var st struct {
		RuntimeStatus string          `json:"runtimeStatus"`
		CustomStatus  json.RawMessage `json:"customStatus"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil || st.RuntimeStatus != "Completed" || string(st.CustomStatus) != `"approved by ops"` {
		t.Fatalf("soloist status: %s (%v)", stdout, err)
	}
}
