// Package browsertest drives the dashboard in a headless Debian chromium
// with chromedp, for the tests of package dashboard (one in-process node)
// and of package integration (real soloist processes on a real etcd).
//
// A Browser is one tab. It records the page's console errors and uncaught
// exceptions, and the bytes each page load transfers. Without a browser at
// Chromium the test is skipped with a message saying how to get one; with
// SOLOIST_REQUIRE_BROWSER=1 (set by .ci/run) it fails instead.
//
// The dashboard's script notes, in window.__soloist.seen, when it first
// showed each row state "id|status|holder|token" (and the instance page's
// state, the same way); SeenAt and WaitSeen read it, so a test measures
// when the browser showed a change, not when the test looked.
package browsertest

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

// Chromium is where Debian's chromium package puts the browser.
const Chromium = "/usr/bin/chromium"

// Browser is one headless chromium tab.
type Browser struct {
	t     testing.TB
	ctx   context.Context
	mu    sync.Mutex
	errs  []string
	bytes int64
	shots string
}

// New starts chromium at 1280 x 800 for t (stopped by t.Cleanup), or skips
// t when there is no browser (fails it with SOLOIST_REQUIRE_BROWSER=1).
// Screenshots go to $SOLOIST_SCREENSHOTS, by default a directory under the
// system's temporary directory.
func New(t testing.TB) *Browser {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		if os.Getenv("SOLOIST_REQUIRE_BROWSER") == "1" {
			t.Fatalf("SOLOIST_REQUIRE_BROWSER=1 but there is no browser at %s (apt-get install chromium)", Chromium)
		}
		t.Skipf("no browser at %s: install Debian's chromium to run the dashboard's browser tests (SOLOIST_REQUIRE_BROWSER=1 makes this a failure)", Chromium)
	}
	// Not t.TempDir: chromium's helper processes may still write to the
	// profile for a moment after the browser is stopped, and t.TempDir's
	// removal fails the test then. removeProfile retries instead.
	profile, err := os.MkdirTemp("", "soloist-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 800), chromedp.UserDataDir(profile))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {})) // chromedp logs CDP events it does not know
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	shots := os.Getenv("SOLOIST_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "soloist-dashboard-screenshots")
	}
	_ = os.MkdirAll(shots, 0o755)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA(); removeProfile(t, profile) })
	return newTab(t, ctx, shots)
}

// removeProfile removes a stopped browser's profile directory, retrying
// for a few seconds while its last helper processes exit.
func removeProfile(t testing.TB, dir string) {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
	}
	t.Logf("the browser profile %s is left behind: %v", dir, err)
}

// Tab opens another tab of the same browser (its own console errors and
// byte counts), closed with the browser.
func (b *Browser) Tab() *Browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	return newTab(b.t, ctx, b.shots)
}

func newTab(t testing.TB, ctx context.Context, shots string) *Browser {
	t.Helper()
	b := &Browser{t: t, ctx: ctx, shots: shots}
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

// Run runs actions within 20 s; what names them in the failure.
func (b *Browser) Run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Page loads url and returns the bytes the load transferred, once sel shows.
func (b *Browser) Page(url, sel string) int64 {
	b.t.Helper()
	b.mu.Lock()
	b.bytes = 0
	b.mu.Unlock()
	b.Run("load "+url, chromedp.Navigate(url), chromedp.WaitVisible(sel, chromedp.ByQuery))
	time.Sleep(300 * time.Millisecond) // let the fragment's transfer be counted
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes
}

// WaitLive waits until the page's event stream is connected.
func (b *Browser) WaitLive() {
	b.t.Helper()
	b.Run("live", chromedp.Poll(`document.getElementById('live').className==='on'`, nil, chromedp.WithPollingTimeout(10*time.Second)))
}

// Shoot saves screenshots of the page at 1280 x 800 and 390 x 844.
func (b *Browser) Shoot(name string) {
	b.t.Helper()
	for _, sz := range [][2]int64{{1280, 800}, {390, 844}} {
		var buf []byte
		b.Run("screenshot "+name, chromedp.EmulateViewport(sz[0], sz[1]), chromedp.Sleep(200*time.Millisecond), chromedp.CaptureScreenshot(&buf))
		p := filepath.Join(b.shots, fmt.Sprintf("%s-%dx%d.png", name, sz[0], sz[1]))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.Run("viewport", chromedp.EmulateViewport(1280, 800))
	b.t.Logf("screenshots of %s in %s", name, b.shots)
}

// NoConsoleErrors fails the test if the pages logged an error or threw.
func (b *Browser) NoConsoleErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		b.t.Errorf("console errors: %q", b.errs)
	}
}

// SeenAt returns when the page first showed a row or instance state whose
// key (id|status|holder|token) starts with prefix, in unix ms; 0 if never.
func (b *Browser) SeenAt(prefix string) int64 {
	var at int64
	js := fmt.Sprintf(`(function(){var s=window.__soloist?window.__soloist.seen:{},m=0;for(var k in s){if(k.indexOf(%q)===0&&(!m||s[k]<m))m=s[k];}return m;})()`, prefix)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	_ = chromedp.Run(ctx, chromedp.Evaluate(js, &at))
	return at
}

// WaitSeen waits up to d for SeenAt(prefix) and returns it.
func (b *Browser) WaitSeen(prefix string, d time.Duration) int64 {
	b.t.Helper()
	var at int64
	Eventually(b.t, d, "the page to show "+prefix, func() bool { at = b.SeenAt(prefix); return at > 0 })
	return at
}

// Text reads the visible text (innerText) of the first element that matches the CSS selector
// in one evaluation ("" if none). Unlike chromedp.Text, which finds the
// node and then reads it in two calls, it cannot fail when a live page
// replaces the element in between.
func Text(selector string, out *string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`(document.querySelector(%q)||{innerText:""}).innerText`, selector), out)
}

// Eventually polls cond every 20 ms and fails t if it is still false after d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Median is the middle value of ms (the upper one of an even count).
func Median(ms []float64) float64 {
	s := slices.Clone(ms)
	sort.Float64s(s)
	return s[len(s)/2]
}
