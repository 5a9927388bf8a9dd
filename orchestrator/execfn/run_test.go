package execfn_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/execfn"
	"github.com/soloist-dev/soloist/orchestrator/orchestratortest"
)

var hold = orchestratortest.Hold

// TestThroughOrchestrator runs exec functions the way a holder does and
// reads the results back from etcd.
func TestThroughOrchestrator(t *testing.T) {
	t.Parallel()
	e := leasetest.Start(t)
	cli := e.Client()
	c := orchestrator.NewClient(cli, orchestrator.ClientConfig{Prefix: "/execfn-test/"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	script := `printf '{"id":"%s","exec":"%s","fn":"%s","token":%s,"input":%s}' ` +
		`"$SOLOIST_INSTANCE_ID" "$SOLOIST_EXECUTION_ID" "$SOLOIST_FUNCTION" "$SOLOIST_FENCING_TOKEN" "$(cat)"`
	exec := hold(t, cli, c, "report", "ok-1", `{"n":1}`)
	if err := orchestrator.Run(ctx, exec, execfn.New([]string{"/bin/sh", "-c", script}, execfn.Options{})); err != nil {
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
		ID, Exec, Fn string
		Token        int64
		Input        json.RawMessage
	}
	if err := json.Unmarshal(st.Output, &got); err != nil {
		t.Fatalf("output %s: %v", st.Output, err)
	}
	if got.ID != "ok-1" || got.Exec != st.ExecutionID || got.Fn != "report" || got.Token != exec.Token() || string(got.Input) != `{"n":1}` {
		t.Fatalf("the program saw %+v; want id ok-1, execution %s, fn report, token %d, input {\"n\":1}", got, st.ExecutionID, exec.Token())
	}

	exec = hold(t, cli, c, "report", "fail-1", `null`)
	if err := orchestrator.Run(ctx, exec, execfn.New([]string{"/bin/sh", "-c", "echo disk full >&2; exit 7"}, execfn.Options{})); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st, err = c.Status(ctx, "fail-1")
	if err != nil {
		t.Fatal(err)
	}
	var msg string
	_ = json.Unmarshal(st.Output, &msg)
	if st.RuntimeStatus != orchestrator.StatusFailed || !strings.Contains(msg, "exited with code 7: disk full") {
		t.Fatalf("status %s, output %s; want Failed with the exit code and stderr", st.RuntimeStatus, st.Output)
	}
}
