package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const chromium = "/usr/bin/chromium"

// browser is one headless chromium tab that records console errors and
// the bytes each page load transfers.
type browser struct {
	t     *testing.T
	ctx   context.Context
	mu    sync.Mutex
	errs  []string
	bytes int64
	shots string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("SOLOIST_REQUIRE_BROWSER") == "1" {
			t.Fatalf("SOLOIST_REQUIRE_BROWSER=1 but there is no browser at %s (apt-get install chromium)", chromium)
		}
		t.Skipf("no browser at %s: install Debian's chromium to run the dashboard's browser tests (SOLOIST_REQUIRE_BROWSER=1 makes this a failure)", chromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 800), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {})) // chromedp logs CDP events it does not know
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("SOLOIST_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = filepath.Join(os.TempDir(), "soloist-dashboard-screenshots")
	}
	_ = os.MkdirAll(b.shots, 0o755)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	chromedp.ListenTarget(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.errs = append(b.errs, strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			b.errs = append(b.errs, e.ExceptionDetails.Error())
		case *network.EventLoadingFinished:
			b.bytes += int64(e.EncodedDataLength)
		}
	})
	if err := chromedp.Run(ctx, network.Enable()); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// page loads url and returns the bytes the load transferred, once sel shows.
func (b *browser) page(url, sel string) int64 {
	b.t.Helper()
	b.mu.Lock()
	b.bytes = 0
	b.mu.Unlock()
	b.run("load "+url, chromedp.Navigate(url), chromedp.WaitVisible(sel, chromedp.ByQuery))
	time.Sleep(300 * time.Millisecond) // let the fragment's transfer be counted
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes
}

// shoot saves screenshots of the page at 1280x800 and 390x844.
func (b *browser) shoot(name string) {
	b.t.Helper()
	for _, sz := range [][2]int64{{1280, 800}, {390, 844}} {
		var buf []byte
		b.run("screenshot "+name, chromedp.EmulateViewport(sz[0], sz[1]), chromedp.Sleep(200*time.Millisecond), chromedp.CaptureScreenshot(&buf))
		p := filepath.Join(b.shots, fmt.Sprintf("%s-%dx%d.png", name, sz[0], sz[1]))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.run("viewport", chromedp.EmulateViewport(1280, 800))
	b.t.Logf("screenshots of %s in %s", name, b.shots)
}

func (b *browser) noConsoleErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		b.t.Errorf("console errors: %q", b.errs)
	}
}

// seenAt returns when the page first showed a row or instance state whose
// key (id|status|holder|token) starts with prefix, in unix ms; 0 if never.
func (b *browser) seenAt(prefix string) int64 {
	var at int64
	js := fmt.Sprintf(`(function(){var s=window.__soloist?window.__soloist.seen:{},m=0;for(var k in s){if(k.indexOf(%q)===0&&(!m||s[k]<m))m=s[k];}return m;})()`, prefix)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	_ = chromedp.Run(ctx, chromedp.Evaluate(js, &at))
	return at
}

func (b *browser) waitSeen(prefix string, d time.Duration) int64 {
	b.t.Helper()
	var at int64
	eventually(b.t, d, "the page to show "+prefix, func() bool { at = b.seenAt(prefix); return at > 0 })
	return at
}

func median(ms []float64) float64 {
	s := slices.Clone(ms)
	sort.Float64s(s)
	return s[len(s)/2]
}

// TestBrowserDashboard drives the dashboard in chromium against a real
// node on a real etcd, with API keys on: the login form, live rows,
// terminate, raise event and a bulk purge from the UI (the API agrees),
// every page at two sizes, and no console error.
func TestBrowserDashboard(t *testing.T) {
	s := newSite(t, siteOpts{keys: true, schedule: true})
	b := newBrowser(t)
	base := s.srv.URL

	// A wrong key shows the login form again.
	b.page(base+"/ui/instances", "#login")
	b.shoot("login")
	var msg string
	b.run("wrong key", chromedp.SendKeys("#key", "not-the-key", chromedp.ByQuery), chromedp.Click("#login button", chromedp.ByQuery),
		chromedp.Poll(`document.getElementById('loginerr').textContent.indexOf('refused')>=0 && !document.getElementById('login').hidden`, nil, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.Text("#loginerr", &msg, chromedp.ByQuery))
	if !strings.Contains(msg, "refused") {
		t.Fatalf("wrong key: login message %q", msg)
	}
	b.run("right key", chromedp.SetValue("#key", testKey, chromedp.ByQuery), chromedp.Click("#login button", chromedp.ByQuery),
		chromedp.WaitVisible("#instances", chromedp.ByQuery), chromedp.Poll(`document.getElementById('live').className==='on'`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	// Instances started through the API appear without a reload within 1 s.
	var lat []float64
	for i := 1; i <= 5; i++ {
		id := fmt.Sprintf("inst-%d", i)
		t0 := time.Now()
		s.start(id)
		at := b.waitSeen(id+"|", 3*time.Second)
		d := float64(at - t0.UnixMilli())
		lat = append(lat, d)
		if d > 1000 {
			t.Errorf("%s appeared %.0f ms after its start, want within 1 s", id, d)
		}
		// and its holder and token once a node holds it
		at = b.waitSeen(id+"|Running|node-0|", 5*time.Second)
		lat = append(lat, float64(at-t0.UnixMilli()))
	}
	t.Logf("etcd change to browser: median %.0f ms over %d changes (starts and holdings): %v", median(lat), len(lat), lat)
	b.shoot("instances")

	// Raise an event from the UI: inst-1 completes with its data.
	weight := b.page(base+"/ui/instances/inst-1", "#livepart")
	t.Logf("page weight /ui/instances/{id}: %d bytes", weight)
	b.shoot("instance")
	b.run("raise event", chromedp.Click(`button[data-act="raiseEvent"]`, chromedp.ByQuery), chromedp.WaitVisible("#dlg", chromedp.ByQuery),
		chromedp.SendKeys(`#dlgf input[name="name"]`, "go", chromedp.ByQuery), chromedp.SetValue(`#dlgf textarea[name="data"]`, `{"x":1}`, chromedp.ByQuery),
		chromedp.Click("#dlgok", chromedp.ByQuery))
	eventually(t, 10*time.Second, "inst-1 Completed by the raised event", func() bool { st, _ := s.status("inst-1"); return st == "Completed" })
	b.waitSeen("inst-1|Completed|", 3*time.Second)
	var out string
	b.run("output", chromedp.Poll(`document.body.textContent.indexOf('"x": 1')>=0`, nil, chromedp.WithPollingTimeout(5*time.Second)), chromedp.Text("#livepart", &out, chromedp.ByQuery))

	// Terminate from the UI.
	b.page(base+"/ui/instances/inst-2", "#livepart")
	b.run("terminate", chromedp.Click(`button[data-act="terminate"]`, chromedp.ByQuery), chromedp.WaitVisible("#dlg", chromedp.ByQuery),
		chromedp.SendKeys(`#dlgf input[name="reason"]`, "from the browser test", chromedp.ByQuery), chromedp.Click("#dlgok", chromedp.ByQuery))
	eventually(t, 10*time.Second, "inst-2 Terminated", func() bool { st, _ := s.status("inst-2"); return st == "Terminated" })
	b.waitSeen("inst-2|Terminated|", 3*time.Second)

	// Bulk purge of the two finished ones, selected in the table.
	weight = b.page(base+"/ui/instances?prefix=inst-&sort=id", "#instances")
	t.Logf("page weight /ui/instances: %d bytes", weight)
	var confirm string
	b.run("bulk purge", chromedp.Click(`input.sel[value="inst-1"]`, chromedp.ByQuery), chromedp.Click(`input.sel[value="inst-2"]`, chromedp.ByQuery),
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
	b.run("purged rows gone", chromedp.Poll(`!document.querySelector('tr[data-id="inst-1"]') && !document.querySelector('tr[data-id="inst-2"]') && !!document.querySelector('tr[data-id="inst-3"]')`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	// Keyboard: the filter form works with Tab and Enter alone.
	b.run("keyboard filter", chromedp.Focus(`input[name="prefix"]`, chromedp.ByQuery), chromedp.SetValue(`input[name="prefix"]`, "inst-4", chromedp.ByQuery),
		chromedp.KeyEvent("\r"), chromedp.Poll(`location.search.indexOf('prefix=inst-4')>=0 && document.querySelectorAll('tr[data-id]').length===1`, nil, chromedp.WithPollingTimeout(5*time.Second)))

	weight = b.page(base+"/ui/cluster", "#nodes")
	t.Logf("page weight /ui/cluster: %d bytes", weight)
	var nodes string
	b.run("cluster", chromedp.Text("#nodes", &nodes, chromedp.ByQuery))
	if !strings.Contains(nodes, "node-0") || !strings.Contains(nodes, "10.0.0.1:8080") {
		t.Errorf("cluster page nodes: %q", nodes)
	}
	b.shoot("cluster")
	weight = b.page(base+"/ui/schedules", "#schedules")
	t.Logf("page weight /ui/schedules: %d bytes", weight)
	var sched string
	b.run("schedules", chromedp.Text("#schedules", &sched, chromedp.ByQuery))
	if !strings.Contains(sched, "nightly") || !strings.Contains(sched, "0 2 * * *") || !strings.Contains(sched, "UTC") {
		t.Errorf("schedules page: %q", sched)
	}
	b.shoot("schedules")
	b.noConsoleErrors()
}

// TestBrowserTakeover: the holder of a running instance loses etcd for
// good (its client closed, as a crash looks to etcd): without a reload the
// row shows the new holder and a larger token within TTL + 2 s, and the
// cluster page shows the node gone.
func TestBrowserTakeover(t *testing.T) {
	const ttl = 2 * time.Second
	s := newSite(t, siteOpts{nodes: 2, ttl: ttl})
	b := newBrowser(t)
	b.page(s.srv.URL+"/ui/instances?sort=id", "#instances")
	b.run("live", chromedp.Poll(`document.getElementById('live').className==='on'`, nil, chromedp.WithPollingTimeout(5*time.Second)))
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
	b.waitSeen(fmt.Sprintf("%s|Running|node-1|%d", victim, before.FencingToken), 3*time.Second)
	b.page(s.srv.URL+"/ui/instances/"+victim, "#livepart")
	killed := time.Now()
	_ = s.clis[1].Close()
	at := b.waitSeen(victim+"|Running|node-0|", ttl+2*time.Second+time.Second)
	took := time.Duration(at-killed.UnixMilli()) * time.Millisecond
	after := s.nodes[0].Owners()[victim]
	if after.Node != "node-0" || after.FencingToken <= before.FencingToken {
		t.Fatalf("after the takeover: %+v, before %+v", after, before)
	}
	b.waitSeen(fmt.Sprintf("%s|Running|node-0|%d", victim, after.FencingToken), time.Second)
	if took > ttl+2*time.Second {
		t.Errorf("the page showed the new holder %v after the holder was cut off, want within TTL + 2 s = %v", took, ttl+2*time.Second)
	}
	t.Logf("takeover shown %v after node-1 was cut off (TTL %v)", took, ttl)
	var own string
	b.run("ownership", chromedp.Poll(`document.getElementById('ownership').textContent.indexOf('failover')>=0`, nil, chromedp.WithPollingTimeout(5*time.Second)),
		chromedp.Text("#ownership", &own, chromedp.ByQuery))
	b.shoot("instance-after-takeover")
	b.page(s.srv.URL+"/ui/cluster", "#nodes")
	var nodes string
	b.run("cluster", chromedp.Text("#nodes", &nodes, chromedp.ByQuery), chromedp.Text("#takeovers", &own, chromedp.ByQuery))
	if !strings.Contains(nodes, "node-1") || !strings.Contains(nodes, "gone") {
		t.Errorf("cluster page after node-1 died: %q", nodes)
	}
	if !strings.Contains(own, victim) || !strings.Contains(own, "failover") {
		t.Errorf("cluster page takeovers: %q", own)
	}
	b.shoot("cluster-after-takeover")
	b.noConsoleErrors()
}
