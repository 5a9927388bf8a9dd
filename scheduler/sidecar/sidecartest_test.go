package sidecar_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler/sidecar/sidecartest"
)

// The test worker of sidecartest (used by the benchmark and the
// real-process tests) runs HelloCities through a node to the demo's
// output, in four steps and three activities, and fails an orchestration
// it does not run with a message that says so.
func TestSidecartestWorker(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	s := v.startServer(serverOpts{reg: orchestrator.NewRegistry()})
	w, err := sidecartest.Connect(context.Background(), s.conn, sidecartest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !s.srv.Remote().Serves(sidecartest.Orchestration, "") {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not register")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := sidecartest.Start(ctx, s.conn, sidecartest.Orchestration, "st1", ""); err != nil {
		t.Fatal(err)
	}
	st, err := sidecartest.WaitForCompletion(ctx, s.conn, "st1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "COMPLETED" || st.Output != sidecartest.Output {
		t.Fatalf("HelloCities: %+v, want COMPLETED with %s", st, sidecartest.Output)
	}
	if w.Steps() != 4 || w.Activities() != 3 {
		t.Fatalf("%d steps and %d activities, want 4 and 3", w.Steps(), w.Activities())
	}

	if err := sidecartest.Start(ctx, s.conn, "Other", "st2", `"x"`); err != nil {
		t.Fatal(err)
	}
	st, err = sidecartest.WaitForCompletion(ctx, s.conn, "st2")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "FAILED" || !strings.Contains(st.Failure, "runs only HelloCities, not Other") {
		t.Fatalf("Other: %+v, want FAILED naming what the worker runs", st)
	}
	if err := w.Err(); err != nil {
		t.Fatal(err)
	}
}
