package orchestrator_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// TestHistoryReadAtOneRevision: a history of three pages is read at one
// revision, even when a key is appended while the pages are read. The
// read took the revision of each page's response for the next page, and
// a response's header carries etcd's current revision, not the one read:
// the third page was read after the append.
func TestHistoryReadAtOneRevision(t *testing.T) {
	t.Parallel()
	v := newEnv(t)
	hook := leasetest.NewGetHook(v.cli)
	prefix := v.keys.History("h", "e1")
	event := func(seq int) clientv3.Op {
		b, _ := json.Marshal([]orchestrator.HistoryEvent{{Seq: seq, EventType: orchestrator.EventTimerFired, Timestamp: time.Now().UTC()}})
		return clientv3.OpPut(fmt.Sprintf("%s%010d", prefix, seq), string(b))
	}
	const n = 600 // 256 keys a page
	for seq := 0; seq < n; {
		var ops []clientv3.Op
		for ; len(ops) < 100 && seq < n; seq++ {
			ops = append(ops, event(seq))
		}
		if _, err := v.raw.Txn(ctxT(t)).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	paged := hook.Arm(leasetest.NextPage(prefix), func() {
		if _, err := v.raw.Txn(ctxT(t)).Then(event(n)).Commit(); err != nil {
			t.Errorf("append: %v", err)
		}
	})
	h, err := v.c.History(ctxT(t), "h", "e1")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-paged:
	default:
		t.Fatal("the read did not take a second page")
	}
	if len(h) != n {
		t.Fatalf("read %d events, want the %d there were when the read began", len(h), n)
	}
}
