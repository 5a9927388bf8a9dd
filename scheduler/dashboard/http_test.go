package dashboard_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestKeysOnNothingServedWithoutKey: with keys on, only the login shell
// (which holds no data) is served without a key; every asset, fragment,
// stream and action answers 401, also to a wrong key and to ?code=.
func TestKeysOnNothingServedWithoutKey(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOpts{keys: true})
	s.start("secret-instance")
	for _, p := range []string{"/ui/", "/ui/instances", "/ui/instances/secret-instance", "/ui/cluster", "/ui/schedules"} {
		code, body := s.do("GET", p, "", "")
		if code != http.StatusOK || !strings.Contains(body, `id="login"`) || strings.Contains(body, "secret-instance") || strings.Contains(body, "node-0") {
			t.Errorf("GET %s without a key: %d, want 200 with the login shell and no data:\n%s", p, code, body)
		}
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/ui/assets/app.js"}, {"GET", "/ui/assets/app.css"}, {"GET", "/ui/f/instances"},
		{"GET", "/ui/f/instance?id=secret-instance"}, {"GET", "/ui/f/cluster"}, {"GET", "/ui/f/schedules"},
		{"GET", "/ui/api/stream"}, {"POST", "/ui/api/instances/secret-instance/terminate"}, {"POST", "/ui/api/bulk"},
		{"GET", "/ui/nothing-here"}, {"GET", "/ui/f/instances?code=" + testKey},
	} {
		for _, key := range []string{"", "wrong"} {
			code, body := s.do(r.method, r.path, key, "")
			if code != http.StatusUnauthorized || strings.Contains(body, "secret-instance") {
				t.Errorf("%s %s with key %q: %d, want 401 without data: %s", r.method, r.path, key, code, body)
			}
		}
	}
	code, body := s.do("GET", "/ui/f/instances", testKey, "")
	if code != http.StatusOK || !strings.Contains(body, "secret-instance") {
		t.Fatalf("with the key: %d %s", code, body)
	}
	if st, _ := s.status("secret-instance"); st != "Pending" && st != "Running" {
		t.Fatalf("the refused terminate changed the instance: %s", st)
	}
}

// TestBadInputIsAClearError: bad filters and bulk bodies get 400 with a
// message, never a 500.
func TestBadInputIsAClearError(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOpts{})
	for _, p := range []string{"/ui/f/instances?status=Nope", "/ui/f/instances?from=yesterday", "/ui/f/instances?page=0",
		"/ui/f/instances?sort=x", "/ui/f/instances?bogus=1", "/ui/f/instances?tag=novalue"} {
		if code, body := s.do("GET", p, "", ""); code != http.StatusBadRequest || !strings.Contains(body, `class="err"`) {
			t.Errorf("GET %s: %d, want 400 with the error shown: %s", p, code, body)
		}
	}
	if code, _ := s.do("GET", "/ui/f/instance?id=nope", "", ""); code != http.StatusNotFound {
		t.Errorf("unknown instance: %d, want 404", code)
	}
	for _, b := range []string{`{`, `{"action":"explode","ids":["a"]}`, `{"action":"purge"}`, `{"action":"purge","ids":["a"],"filter":""}`, `{"action":"purge","filter":"status=Nope"}`, `{"extra":1}`} {
		if code, body := s.do("POST", "/ui/api/bulk", "", b); code != http.StatusBadRequest || !strings.Contains(body, `"error"`) {
			t.Errorf("bulk %s: %d %s, want 400", b, code, body)
		}
	}
	if code, _ := s.do("POST", "/ui/api/instances/x/explode", "", ""); code != http.StatusNotFound {
		t.Errorf("unknown action: %d, want 404", code)
	}
	if code, _ := s.do("POST", "/ui/api/instances/nope/terminate", "", ""); code != http.StatusNotFound {
		t.Errorf("terminate of an unknown instance through the API: %d, want the API's 404", code)
	}
}

// TestReadOnlyRefusesActions: a read-only dashboard offers no action and
// its action routes answer 403, changing nothing.
func TestReadOnlyRefusesActions(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOpts{readOnly: true})
	s.start("ro-1")
	for _, p := range []string{"/ui/f/instances", "/ui/f/instance?id=ro-1"} {
		code, body := s.do("GET", p, "", "")
		if code != http.StatusOK || strings.Contains(body, "data-act") || strings.Contains(body, "data-bulk") || strings.Contains(body, `class="sel"`) {
			t.Errorf("GET %s read-only: %d, offers an action:\n%s", p, code, body)
		}
	}
	for _, a := range []string{"terminate", "suspend", "purge", "raiseEvent?name=go", "restart", "rewind", "resume"} {
		if code, body := s.do("POST", "/ui/api/instances/ro-1/"+a, "", "null"); code != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("%s read-only: %d %s, want 403", a, code, body)
		}
	}
	if code, _ := s.do("POST", "/ui/api/bulk", "", `{"action":"terminate","ids":["ro-1"]}`); code != http.StatusForbidden {
		t.Errorf("bulk read-only: %d, want 403", code)
	}
	if st, _ := s.status("ro-1"); st.Terminal() {
		t.Fatalf("a refused action changed the instance: %s", st)
	}
}
