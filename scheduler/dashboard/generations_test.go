package dashboard_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/soloist-dev/soloist/scheduler/httpapi"
)

// TestInstanceGenerations: an instance that continues as new three times
// shows four executions on its page, oldest first, each of the first three
// marked "continued as new" and the last marked current (the execution
// whose history the page shows); etcd keeps no earlier history, and the
// page says so.
func TestInstanceGenerations(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOpts{})
	if code, body := s.do("POST", httpapi.BasePath+"/orchestrators/Loop/loop-1", "", `3`); code != http.StatusAccepted {
		t.Fatalf("start Loop: %d %s", code, body)
	}
	var body string
	var gens []string
	eventually(t, 20*time.Second, "four executions of loop-1 on its page", func() bool {
		_, body = s.do("GET", "/ui/f/instance?id=loop-1", "", "")
		gens = generationItems(body)
		return len(gens) >= 4 && strings.Contains(gens[len(gens)-1], "current")
	})
	st, err := s.client.Status(t.Context(), "loop-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) != 4 {
		t.Fatalf("%d executions listed, want 4: %q", len(gens), gens)
	}
	seen := map[string]bool{}
	for i, g := range gens {
		m := regexp.MustCompile(`<code>([^<]+)</code>`).FindStringSubmatch(g)
		if m == nil || seen[m[1]] {
			t.Fatalf("execution %d has no or a repeated execution ID: %q", i, g)
		}
		seen[m[1]] = true
		last := i == len(gens)-1
		if strings.Contains(g, "continued as new") == last {
			t.Errorf("execution %d (last %v): continued-as-new mark wrong: %q", i, last, g)
		}
		if strings.Contains(g, "<b>current</b>") != last || (last && m[1] != st.ExecutionID) {
			t.Errorf("execution %d (last %v, current %s): current mark wrong: %q", i, last, st.ExecutionID, g)
		}
		if !strings.Contains(g, "node-0") {
			t.Errorf("execution %d names no holder: %q", i, g)
		}
	}
	if !strings.Contains(body, "ContinueAsNew deletes") {
		t.Error("the page does not say that earlier executions' history is gone")
	}
	// The timeline is the current execution's: it started with input 0.
	if !strings.Contains(body, "ExecutionStarted") || strings.Count(body, "<b>ExecutionStarted</b>") != 1 {
		t.Errorf("the timeline should hold the current execution's one ExecutionStarted:\n%s", body)
	}
}

// generationItems returns the <li> items of the page's generations list.
func generationItems(body string) []string {
	i := strings.Index(body, `id="generations"`)
	if i < 0 {
		return nil
	}
	rest := body[i:]
	rest = rest[:strings.Index(rest, "</ol>")]
	var out []string
	for _, li := range strings.Split(rest, "<li>")[1:] {
		if strings.Contains(li, "<code>") {
			out = append(out, li)
		}
	}
	return out
}
