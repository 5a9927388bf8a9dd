package dashboard_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/soloist-dev/soloist/scheduler/dashboard/browsertest"
)

// TestBrowserDashboard drives the dashboard in chromium against a real
// node on a real etcd, with API keys on: the login form, live rows,
// terminate, raise event and a bulk purge from the UI (the API agrees),
// every page at two sizes, and no console error.
func TestBrowserDashboard(t *testing.T) {
	s := newSite(t, siteOpts{keys: true, schedule: true})
	b := browsertest.New(t)
	base := s.srv.URL

	// A wrong key shows the login form again.
	b.Page(base+"/ui/instances", "#login")
	b.Shoot("login")
	var msg string
	b.Run("wrong key", chromedp.SendKeys("#key", "not-the-key", chromedp.ByQuery), chromedp.Click("#login button", chromedp.ByQuery),
		chromedp.Poll(`document.getElementById('loginerr').textContent.indexOf('refused')>=0 && !document.getElementById('login').hidden`, nil, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.Text("#loginerr", &msg, chromedp.ByQuery))
	if !strings.Contains(msg, "refused") {
		t.Fatalf("wrong key: login message %q", msg)
	}
	b.Run("right key", chromedp.SetValue("#key", testKey, chromedp.ByQuery), chromedp.Click("#login button", chromedp.ByQuery),
		chromedp.WaitVisible("#instances", chromedp.ByQuery), chromedp.Poll(`document.getElementById('live').className==='on'`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	// Instances started through the API appear without a reload within 1 s.
	var lat []float64
	for i := 1; i <= 5; i++ {
		id := fmt.Sprintf("inst-%d", i)
		t0 := time.Now()
		s.start(id)
		at := b.WaitSeen(id+"|", 3*time.Second)
		d := float64(at - t0.UnixMilli())
		lat = append(lat, d)
		if d > 1000 {
			t.Errorf("%s appeared %.0f ms after its start, want within 1 s", id, d)
		}
		// and its holder and token once a node holds it
		at = b.WaitSeen(id+"|Running|node-0|", 5*time.Second)
		lat = append(lat, float64(at-t0.UnixMilli()))
	}
	t.Logf("etcd change to browser: median %.0f ms over %d changes (starts and holdings): %v", browsertest.Median(lat), len(lat), lat)
	b.Shoot("instances")

	// Raise an event from the UI: inst-1 completes with its data.
	weight := b.Page(base+"/ui/instances/inst-1", "#livepart")
	t.Logf("page weight /ui/instances/{id}: %d bytes", weight)
	b.Shoot("instance")
	b.Run("raise event", chromedp.Click(`button[data-act="raiseEvent"]`, chromedp.ByQuery), chromedp.WaitVisible("#dlg", chromedp.ByQuery),
		chromedp.SendKeys(`#dlgf input[name="name"]`, "go", chromedp.ByQuery), chromedp.SetValue(`#dlgf textarea[name="data"]`, `{"x":1}`, chromedp.ByQuery),
		chromedp.Click("#dlgok", chromedp.ByQuery))
	eventually(t, 10*time.Second, "inst-1 Completed by the raised event", func() bool { st, _ := s.status("inst-1"); return st == "Completed" })
	b.WaitSeen("inst-1|Completed|", 3*time.Second)
	var out string
	b.Run("output", chromedp.Poll(`document.body.textContent.indexOf('"x": 1')>=0`, nil, chromedp.WithPollingTimeout(5*time.Second)), browsertest.Text("#livepart", &out))

	// Terminate from the UI.
	b.Page(base+"/ui/instances/inst-2", "#livepart")
	b.Run("terminate", chromedp.Click(`button[data-act="terminate"]`, chromedp.ByQuery), chromedp.WaitVisible("#dlg", chromedp.ByQuery),
		chromedp.SendKeys(`#dlgf input[name="reason"]`, "from the browser test", chromedp.ByQuery), chromedp.Click("#dlgok", chromedp.ByQuery))
	eventually(t, 10*time.Second, "inst-2 Terminated", func() bool { st, _ := s.status("inst-2"); return st == "Terminated" })
	b.WaitSeen("inst-2|Terminated|", 3*time.Second)

	// Bulk purge of the two finished ones, selected in the table.
	weight = b.Page(base+"/ui/instances?prefix=inst-&sort=id", "#instances")
	t.Logf("page weight /ui/instances: %d bytes", weight)
	var confirm string
	b.Run("bulk purge", chromedp.Click(`input.sel[value="inst-1"]`, chromedp.ByQuery), chromedp.Click(`input.sel[value="inst-2"]`, chromedp.ByQuery),
		chromedp.Click(`button[data-bulk="purge"]`, chromedp.ByQuery), chromedp.WaitVisible("#dlg", chromedp.ByQuery),
		chromedp.Text("#dlgmsg", &confirm, chromedp.ByQuery), chromedp.Click("#dlgok", chromedp.ByQuery))
	if confirm != "Purge 2 instances?" {
		t.Errorf("bulk confirmation %q, want it to say how many", confirm)
	}
	eventually(t, 10*time.Second, "inst-1 and inst-2 purged", func() bool {
		_, e1 := s.status("inst-1")
		_, e2 := s.status("inst-2")
		return e1 != nil && e2 != nil
	})
	for _, id := range []string{"inst-3", "inst-4", "inst-5"} {
		if st, err := s.status(id); err != nil || st.Terminal() {
			t.Errorf("%s after the bulk purge of two others: %s %v", id, st, err)
		}
	}
	b.Run("purged rows gone", chromedp.Poll(`!document.querySelector('tr[data-id="inst-1"]') && !document.querySelector('tr[data-id="inst-2"]') && !!document.querySelector('tr[data-id="inst-3"]')`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	// Keyboard: the filter form works with Tab and Enter alone.
	b.Run("keyboard filter", chromedp.Focus(`input[name="prefix"]`, chromedp.ByQuery), chromedp.SetValue(`input[name="prefix"]`, "inst-4", chromedp.ByQuery),
		chromedp.KeyEvent("\r"), chromedp.Poll(`location.search.indexOf('prefix=inst-4')>=0 && document.querySelectorAll('tr[data-id]').length===1`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	weight = b.Page(base+"/ui/cluster", "#nodes")
	t.Logf("page weight /ui/cluster: %d bytes", weight)
	var nodes string
	b.Run("cluster", browsertest.Text("#nodes", &nodes))
	if !strings.Contains(nodes, "node-0") || !strings.Contains(nodes, "10.0.0.1:8080") {
		t.Errorf("cluster page nodes: %q", nodes)
	}
	b.Shoot("cluster")
	weight = b.Page(base+"/ui/schedules", "#schedules")
	t.Logf("page weight /ui/schedules: %d bytes", weight)
	var sched string
	b.Run("schedules", browsertest.Text("#schedules", &sched))
	if !strings.Contains(sched, "nightly") || !strings.Contains(sched, "0 2 * * *") || !strings.Contains(sched, "UTC") {
		t.Errorf("schedules page: %q", sched)
	}
	b.Shoot("schedules")
	b.NoConsoleErrors()
}

// TestBrowserTakeover: the holder of a running instance loses etcd for
// good (its client closed, as a crash looks to etcd): without a reload the
// row shows the new holder and a larger token within TTL + 2 s, and the
// cluster page shows the node gone.
func TestBrowserTakeover(t *testing.T) {
	const ttl = 2 * time.Second
	s := newSite(t, siteOpts{nodes: 2, ttl: ttl})
	b := browsertest.New(t)
	b.Page(s.srv.URL+"/ui/instances?sort=id", "#instances")
	b.Run("live", chromedp.Poll(`document.getElementById('live').className==='on'`, nil, chromedp.WithPollingTimeout(5*time.Second)))
	var victim string
	for i := 0; i < 20 && victim == ""; i++ {
		id := fmt.Sprintf("t-%d", i)
		s.start(id)
		eventually(t, 5*time.Second, id+" held", func() bool { _, ok := s.nodes[0].Owners()[id]; return ok })
		if s.nodes[0].Owners()[id].Node == "node-1" {
			victim = id
		}
	}
	if victim == "" {
		t.Fatal("node-1 held none of 20 instances")
	}
	before := s.nodes[0].Owners()[victim]
	b.WaitSeen(fmt.Sprintf("%s|Running|node-1|%d", victim, before.FencingToken), 3*time.Second)
	b.Page(s.srv.URL+"/ui/instances/"+victim, "#livepart")
	killed := time.Now()
	_ = s.clis[1].Close()
	at := b.WaitSeen(victim+"|Running|node-0|", ttl+2*time.Second+time.Second)
	took := time.Duration(at-killed.UnixMilli()) * time.Millisecond
	after := s.nodes[0].Owners()[victim]
	if after.Node != "node-0" || after.FencingToken <= before.FencingToken {
		t.Fatalf("after the takeover: %+v, before %+v", after, before)
	}
	b.WaitSeen(fmt.Sprintf("%s|Running|node-0|%d", victim, after.FencingToken), time.Second)
	if took > ttl+2*time.Second {
		t.Errorf("the page showed the new holder %v after the holder was cut off, want within TTL + 2 s = %v", took, ttl+2*time.Second)
	}
	t.Logf("takeover shown %v after node-1 was cut off (TTL %v)", took, ttl)
	var own string
	b.Run("ownership", chromedp.Poll(`document.getElementById('ownership').textContent.indexOf('failover')>=0`, nil, chromedp.WithPollingTimeout(5*time.Second)),
		browsertest.Text("#ownership", &own))
	b.Shoot("instance-after-takeover")
	b.Page(s.srv.URL+"/ui/cluster", "#nodes")
	var nodes string
	b.Run("cluster", browsertest.Text("#nodes", &nodes), browsertest.Text("#takeovers", &own))
	if !strings.Contains(nodes, "node-1") || !strings.Contains(nodes, "gone") {
		t.Errorf("cluster page after node-1 died: %q", nodes)
	}
	if !strings.Contains(own, victim) || !strings.Contains(own, "failover") {
		t.Errorf("cluster page takeovers: %q", own)
	}
	b.Shoot("cluster-after-takeover")
	b.NoConsoleErrors()
}
