package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler/dashboard"
	"github.com/soloist-dev/soloist/scheduler/dashboard/browsertest"
)

// workerList is a Workers whose list the test sets.
type workerList struct {
	mu      sync.Mutex
	ws      []dashboard.Worker
	changed chan struct{}
}

func (l *workerList) WorkersChanged() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

func (l *workerList) ConnectedWorkers() []dashboard.Worker {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]dashboard.Worker(nil), l.ws...)
}

func (l *workerList) set(ws ...dashboard.Worker) {
	l.mu.Lock()
	l.ws = ws
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	l.mu.Unlock()
}

// The cluster page's gRPC panel lists what Workers says is connected now
// (address, what each serves, in flight over its limit), says when none
// is, and says "no gRPC listener" when the node has none.
func TestClusterWorkersPanel(t *testing.T) {
	t.Parallel()
	l := &workerList{}
	s := newSite(t, siteOpts{workers: l})
	cluster := func(s *site) string {
		code, body := s.do("GET", "/ui/f/cluster", "", "")
		if code != http.StatusOK {
			t.Fatalf("GET /ui/f/cluster: %d %s", code, body)
		}
		return body
	}
	body := cluster(s)
	if !strings.Contains(body, "gRPC workers on node-0") || !strings.Contains(body, "no worker connected") || strings.Contains(body, "data-worker") {
		t.Errorf("no worker connected:\n%s", body)
	}
	l.set(dashboard.Worker{ID: 1, Peer: "127.0.0.1:50001", Connected: time.Now().Add(-time.Minute), Orchestrations: []string{"*"}, Activities: []string{"*"}},
		dashboard.Worker{ID: 4, Peer: "10.1.2.3:40000", Connected: time.Now(), Orchestrations: []string{"Flow", "Other"}, Activities: []string{"Say"},
			InFlightOrchestrations: 2, MaxOrchestrations: 3, InFlightActivities: 1})
	body = cluster(s)
	for _, want := range []string{`data-worker="1"`, "127.0.0.1:50001", "any (no filter)", `data-worker="4"`, "10.1.2.3:40000", "Flow, Other", "<td>Say</td>", "2/3 orchestrations, 1 activities"} {
		if !strings.Contains(body, want) {
			t.Errorf("the panel lacks %q:\n%s", want, body)
		}
	}
	l.set()
	if body = cluster(s); strings.Contains(body, "data-worker") {
		t.Errorf("workers gone but listed:\n%s", body)
	}
	// Every node's row shows the workers its node key counts (what they
	// serve is in its functions): a node key written as a worker-serving
	// node writes it.
	info, _ := json.Marshal(orchestrator.NodeInfo{Node: "remote-node", LeaseID: "1", Functions: []string{orchestrator.AnyFunction}, Workers: 3})
	if _, err := s.client.Etcd().Put(context.Background(), s.client.Keys().Node("remote-node"), string(info)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for body = cluster(s); !strings.Contains(body, `<tr data-node="remote-node">`) && time.Now().Before(deadline); body = cluster(s) {
		time.Sleep(50 * time.Millisecond)
	}
	if !regexp.MustCompile(`<tr data-node="remote-node">.*<td class="workers">3</td>`).MatchString(body) {
		t.Errorf("remote-node's row lacks its 3 workers:\n%s", body)
	}
	if !regexp.MustCompile(`<tr data-node="node-0">.*<td class="workers">0</td>`).MatchString(body) {
		t.Errorf("node-0's row lacks 0 workers (its node key counts none):\n%s", body)
	}
	none := newSite(t, siteOpts{})
	if body = cluster(none); !strings.Contains(body, "no gRPC listener") || strings.Contains(body, `<table id="workers"`) {
		t.Errorf("without a gRPC listener:\n%s", body)
	}
}

// In the browser, the cluster page's panel follows workers connecting and
// going without a reload: the event stream says "workers" when they change.
func TestBrowserWorkersLive(t *testing.T) {
	l := &workerList{}
	s := newSite(t, siteOpts{workers: l})
	b := browsertest.New(t)
	b.Page(s.srv.URL+"/ui/cluster", "#workers")
	b.WaitLive()
	t0 := time.Now()
	l.set(dashboard.Worker{ID: 7, Peer: "127.0.0.1:50007", Connected: time.Now(), Orchestrations: []string{"Flow"}, Activities: []string{"Say"}})
	b.Run("worker shown", chromedp.Poll(`!!document.querySelector('tr[data-worker="7"]')`, nil, chromedp.WithPollingTimeout(5*time.Second)))
	t.Logf("a worker connecting shown %v after the change", time.Since(t0).Round(time.Millisecond))
	b.Shoot("cluster-workers")
	l.set()
	b.Run("worker gone", chromedp.Poll(`!document.querySelector('tr[data-worker]') && document.getElementById('workers').textContent.indexOf('no worker connected')>=0`, nil, chromedp.WithPollingTimeout(5*time.Second)))
	b.NoConsoleErrors()
}
