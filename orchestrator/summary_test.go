package orchestrator_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// ParseRecordSummary reads the fields a campaign decision needs exactly as
// ParseRecord reads them, and refuses a corrupt record as ParseRecord does.
func TestParseRecordSummary(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	rec := orchestrator.Record{Name: "Fn", InstanceID: "i", RuntimeStatus: orchestrator.StatusPending, ExecutionID: "e1",
		Version: "v2", ScheduledStartTime: &at, Tags: map[string]string{"a": "b"}, CreatedTime: at, FencingToken: 7,
		Parent: &orchestrator.ParentRef{InstanceID: "p", ExecutionID: "pe", TaskID: 3}}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	s, err := orchestrator.ParseRecordSummary(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "Fn" || s.RuntimeStatus != orchestrator.StatusPending || s.ExecutionID != "e1" || s.Version != "v2" ||
		s.ScheduledStartTime == nil || !s.ScheduledStartTime.Equal(at) {
		t.Fatalf("summary %+v of %s", s, b)
	}
	if _, err := orchestrator.ParseRecordSummary([]byte(`{"name":`)); err == nil {
		t.Fatal("a corrupt record parsed")
	}
	if _, perr := orchestrator.ParseRecord([]byte(`{"runtimeStatus":5}`)); perr == nil {
		t.Fatal("ParseRecord accepted a wrong type")
	} else if _, err := orchestrator.ParseRecordSummary([]byte(`{"runtimeStatus":5}`)); err == nil {
		t.Fatal("ParseRecordSummary accepted what ParseRecord refuses")
	}
}
