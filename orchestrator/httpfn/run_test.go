package httpfn_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/orchestrator/orchestratortest"
)

var hold = orchestratortest.Hold

func mustNew(t *testing.T, spec httpfn.Spec, opts httpfn.Options) orchestrator.OrchestratorFunc {
	t.Helper()
	fn, err := httpfn.New(spec, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return fn
}

// TestThroughOrchestrator runs HTTP functions the way a holder does and
// reads the results back from etcd.
func TestThroughOrchestrator(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	c := orchestrator.NewClient(cli, orchestrator.ClientConfig{Prefix: "/httpfn-test/"})

	t.Run("completes", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			_ = json.NewEncoder(w).Encode(map[string]any{
				"id": r.Header.Get("Soloist-Instance-Id"), "exec": r.Header.Get("Soloist-Execution-Id"),
				"fn": r.Header.Get("Soloist-Function"), "token": r.Header.Get("Soloist-Fencing-Token"),
				"team": r.Header.Get("X-Team"), "input": json.RawMessage(body),
			})
		})
		exec := hold(t, cli, c, "reindex", "ok-1", `{"n":1}`)
		fn := mustNew(t, httpfn.Spec{URL: srv.URL, Headers: map[string]string{"X-Team": "search"}}, httpfn.Options{})
		if err := orchestrator.Run(ctx, exec, fn); err != nil {
			t.Fatalf("Run: %v", err)
		}
		st, err := c.Status(ctx, "ok-1")
		if err != nil {
			t.Fatal(err)
		}
		if st.RuntimeStatus != orchestrator.StatusCompleted {
			t.Fatalf("status %s, output %s; want Completed", st.RuntimeStatus, st.Output)
		}
		var got struct {
			ID, Exec, Fn, Token, Team string
			Input                     json.RawMessage
		}
		if err := json.Unmarshal(st.Output, &got); err != nil {
			t.Fatalf("output %s: %v", st.Output, err)
		}
		if got.ID != "ok-1" || got.Exec != st.ExecutionID || got.Fn != "reindex" || got.Token != strconv.FormatInt(exec.Token(), 10) ||
			got.Team != "search" || string(got.Input) != `{"n":1}` {
			t.Fatalf("the server saw %+v; want id ok-1, execution %s, fn reindex, token %d, team search, input {\"n\":1}",
				got, st.ExecutionID, exec.Token())
		}
	})

	t.Run("fails", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		srv, _ := server(t, reply(http.StatusConflict, "index is locked"))
		exec := hold(t, cli, c, "reindex", "fail-1", `null`)
		if err := orchestrator.Run(ctx, exec, mustNew(t, httpfn.Spec{URL: srv.URL}, httpfn.Options{})); err != nil {
			t.Fatalf("Run: %v", err)
		}
		st, err := c.Status(ctx, "fail-1")
		if err != nil {
			t.Fatal(err)
		}
		var msg string
		_ = json.Unmarshal(st.Output, &msg)
		if st.RuntimeStatus != orchestrator.StatusFailed || !strings.Contains(msg, "answered 409 Conflict: index is locked") {
			t.Fatalf("status %s, output %s; want Failed with the status and body", st.RuntimeStatus, st.Output)
		}
	})

	// Losing the lease, terminate and drain all cancel the run's context:
	// the request in flight must be aborted at once, and nothing written.
	t.Run("cancel aborts the request", func(t *testing.T) {
		t.Parallel()
		arrived := make(chan struct{})
		aborted := make(chan time.Time, 1)
		release := make(chan struct{})
		srv, hits := server(t, func(w http.ResponseWriter, r *http.Request) {
			// A Go server notices a client going away only once the
			// handler has read the request body, as receivers do.
			_, _ = io.ReadAll(r.Body)
			close(arrived)
			select {
			case <-r.Context().Done():
				aborted <- time.Now()
			case <-release:
			}
		})
		defer close(release)

		exec := hold(t, cli, c, "reindex", "cancel-1", `{}`)
		fn := mustNew(t, httpfn.Spec{URL: srv.URL}, httpfn.Options{Retry: httpfn.Retry{MaxAttempts: 5}})
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		done := make(chan error, 1)
		go func() { done <- orchestrator.Run(ctx, exec, fn) }()

		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not arrive within 10s")
		}
		lost := errors.New("lease lost")
		cancelled := time.Now()
		cancel(lost)
		select {
		case at := <-aborted:
			if d := at.Sub(cancelled); d > time.Second {
				t.Fatalf("the server saw the request cancelled %s after the run was", d)
			}
		case <-time.After(time.Second):
			t.Fatal("the server did not see the request cancelled within 1s of the run")
		}
		select {
		case err := <-done:
			if !errors.Is(err, lost) {
				t.Fatalf("Run = %v, want the context's cause", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of the cancel")
		}
		if n := hits.Load(); n != 1 {
			t.Fatalf("sent %d times, want 1: a cancelled run does not retry", n)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		st, err := c.Status(rctx, "cancel-1")
		if err != nil {
			t.Fatal(err)
		}
		// Not failed: left as it was (Pending if the run was cancelled
		// before it marked the record Running) for the next holder.
		if st.RuntimeStatus != orchestrator.StatusRunning && st.RuntimeStatus != orchestrator.StatusPending {
			t.Fatalf("status %s after the cancel; want it left active for the next holder", st.RuntimeStatus)
		}
	})
}
