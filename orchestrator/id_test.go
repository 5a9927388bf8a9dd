package orchestrator_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/soloist-dev/soloist/orchestrator"
)

func TestValidateInstanceID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		id   string
		ok   bool
		why  string // a word the error must contain
	}{
		{"empty", "", false, "empty"},
		{"one char", "a", true, ""},
		{"256 ascii", strings.Repeat("a", 256), true, ""},
		{"257 ascii", strings.Repeat("a", 257), false, "256"},
		{"256 two-byte runes (512 bytes)", strings.Repeat("é", 256), true, ""},
		{"257 two-byte runes", strings.Repeat("é", 257), false, "256"},
		{"256 four-byte runes (1024 bytes)", strings.Repeat("😀", 256), true, ""},
		{"257 four-byte runes", strings.Repeat("😀", 257), false, "256"},
		{"255 ascii and one 3-byte rune", strings.Repeat("a", 255) + "日", true, ""},
		{"NUL", "a\x00b", false, "control"},
		{"tab", "a\tb", false, "control"},
		{"newline", "a\nb", false, "control"},
		{"carriage return", "a\r", false, "control"},
		{"escape", "\x1b[31m", false, "control"},
		{"DEL", "a\x7f", false, "control"},
		{"C1 control NEL", "a\u0085b", false, "control"},
		{"slash", "a/b", false, "/"},
		{"backslash", `a\b`, false, `\`},
		{"hash", "a#b", false, "#"},
		{"question mark", "a?b", false, "?"},
		{"dot", ".", false, "path segment"},
		{"dot dot", "..", false, "path segment"},
		{"three dots", "...", true, ""},
		{"dot prefix", ".a", true, ""},
		{"only slash", "/", false, "/"},
		{"leading at", "@job", false, "@"},
		{"only at", "@", false, "@"},
		{"at inside", "job@host", true, ""},
		{"at at end", "job@", true, ""},
		{"invalid UTF-8", "a\xffb", false, "UTF-8"},
		{"truncated UTF-8", "\xe6\x97", false, "UTF-8"},
		{"overlong UTF-8", "\xc0\xaf", false, "UTF-8"},
		{"spaces", "nightly report 2024", true, ""},
		{"leading space", " job", true, ""},
		{"unicode", "日本語-ジョブ", true, ""},
		{"emoji", "job-🚀", true, ""},
		{"punctuation", "a.b-c_d:e;f,g(h)[i]{j}!$%&'*+=~|<>\"", true, ""},
		{"percent-encoded slash stays literal", "a%2Fb", true, ""},
		{"32 hex", "0123456789abcdef0123456789abcdef", true, ""},
	}
	for _, c := range cases {
		err := orchestrator.ValidateInstanceID(c.id)
		if c.ok {
			if err != nil {
				t.Errorf("%s: %v, want valid", c.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: %q accepted, want an error", c.name, c.id)
			continue
		}
		var ve *orchestrator.ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, orchestrator.ErrInvalidInstanceID) || !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("%s: %v (%T), want a *ValidationError matching ErrInvalidInstanceID and ErrInvalidInput", c.name, err, err)
			continue
		}
		if ve.Field != "instance ID" || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %q (field %q) does not say %q", c.name, err, ve.Field, c.why)
		}
	}
}

// The messages of long IDs are truncated, so an error never echoes 256
// characters of user input.
func TestValidationErrorTruncates(t *testing.T) {
	t.Parallel()
	err := orchestrator.ValidateInstanceID(strings.Repeat("x", 300))
	if len(err.Error()) > 200 {
		t.Fatalf("error is %d bytes: %s", len(err.Error()), err)
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := orchestrator.NewID()
		if !hex32.MatchString(id) {
			t.Fatalf("NewID() = %q, want 32 hex characters", id)
		}
		if err := orchestrator.ValidateInstanceID(id); err != nil {
			t.Fatalf("NewID() = %q is not a valid instance ID: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestParsePolicies(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]orchestrator.ConflictPolicy{
		"": orchestrator.ConflictFail, "fail": orchestrator.ConflictFail,
		"useExisting": orchestrator.ConflictUseExisting, "terminateExisting": orchestrator.ConflictTerminateExisting,
	} {
		if got, err := orchestrator.ParseConflictPolicy(in); err != nil || got != want {
			t.Errorf("ParseConflictPolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]orchestrator.ReusePolicy{
		"": orchestrator.ReuseAllow, "allow": orchestrator.ReuseAllow, "ignore": orchestrator.ReuseIgnore,
		"allowFailedOnly": orchestrator.ReuseAllowFailedOnly, "reject": orchestrator.ReuseReject,
	} {
		if got, err := orchestrator.ParseReusePolicy(in); err != nil || got != want {
			t.Errorf("ParseReusePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"Fail", "terminate", "use_existing", " fail", "allow", "x"} {
		_, err := orchestrator.ParseConflictPolicy(bad)
		var ve *orchestrator.ValidationError
		if !errors.As(err, &ve) || ve.Field != "conflictPolicy" || !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("ParseConflictPolicy(%q) = %v, want a conflictPolicy ValidationError", bad, err)
		} else if !strings.Contains(err.Error(), "terminateExisting") {
			t.Errorf("ParseConflictPolicy(%q) error %q does not list the values", bad, err)
		}
	}
	for _, bad := range []string{"Allow", "allowFailed", "never", "fail"} {
		_, err := orchestrator.ParseReusePolicy(bad)
		var ve *orchestrator.ValidationError
		if !errors.As(err, &ve) || ve.Field != "reusePolicy" || !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("ParseReusePolicy(%q) = %v, want a reusePolicy ValidationError", bad, err)
		}
	}
}

func TestRuntimeStatuses(t *testing.T) {
	t.Parallel()
	active := map[orchestrator.RuntimeStatus]bool{"Pending": true, "Running": true, "Suspended": true, "ContinuedAsNew": true}
	if len(orchestrator.AllStatuses) != 7 {
		t.Fatalf("AllStatuses = %v", orchestrator.AllStatuses)
	}
	for _, s := range orchestrator.AllStatuses {
		if s.Active() != active[s] || s.Terminal() == active[s] {
			t.Errorf("%s: Active %v Terminal %v", s, s.Active(), s.Terminal())
		}
		if s.Runnable() != (active[s] && s != orchestrator.StatusSuspended) {
			t.Errorf("%s: Runnable %v", s, s.Runnable())
		}
		for _, spelling := range []string{string(s), strings.ToLower(string(s)), strings.ToUpper(string(s)), " " + string(s) + " "} {
			if got, err := orchestrator.ParseRuntimeStatus(spelling); err != nil || got != s {
				t.Errorf("ParseRuntimeStatus(%q) = %q, %v", spelling, got, err)
			}
		}
	}
	for _, bad := range []string{"", "Done", "Runnin", "Canceled"} {
		if _, err := orchestrator.ParseRuntimeStatus(bad); !errors.Is(err, orchestrator.ErrInvalidInput) {
			t.Errorf("ParseRuntimeStatus(%q) = %v, want ErrInvalidInput", bad, err)
		}
	}
	var unknown orchestrator.RuntimeStatus = "Bogus"
	if unknown.Active() || unknown.Terminal() || unknown.Runnable() {
		t.Error("an unknown status counts as active or terminal")
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "/soloist/", "/x": "/x/", "/x/": "/x/", "tenant-a/": "tenant-a/"} {
		if got := orchestrator.NewKeys(in).Prefix(); got != want {
			t.Errorf("NewKeys(%q).Prefix() = %q, want %q", in, got, want)
		}
	}
	k := orchestrator.NewKeys("/p/")
	for got, want := range map[string]string{
		k.Instance("a b"): "/p/v1/instances/a b", k.Owner("a"): "/p/v1/owners/a",
		k.Handoff("a"): "/p/v1/handoffs/a", k.Node("n1"): "/p/v1/nodes/n1",
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
	if id, ok := orchestrator.IDFrom(k.Instances(), k.Instance("x@y")); !ok || id != "x@y" {
		t.Errorf("IDFrom = %q, %v", id, ok)
	}
	if _, ok := orchestrator.IDFrom(k.Owners(), k.Instance("x")); ok {
		t.Error("IDFrom accepted a key under another prefix")
	}
	// No instance prefix is a prefix of another kind's: an ID cannot make
	// an instance key collide with an owners key.
	if strings.HasPrefix(k.Owners(), k.Instances()) || strings.HasPrefix(k.Instances(), k.Owners()) {
		t.Error("key kinds overlap")
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := orchestrator.NewRegistry()
	fn := func(*orchestrator.OrchestrationContext) (any, error) { return nil, nil }
	if err := r.AddOrchestrator("", fn); err == nil {
		t.Error("empty name accepted")
	}
	if err := r.AddOrchestrator("x", nil); err == nil {
		t.Error("nil function accepted")
	}
	for _, n := range []string{"b", "a", "c"} {
		if err := r.AddOrchestrator(n, fn); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.AddOrchestrator("a", fn); err == nil {
		t.Error("duplicate name accepted")
	}
	if got := strings.Join(r.Names(), ","); got != "a,b,c" {
		t.Errorf("Names() = %s", got)
	}
	if _, ok := r.Orchestrator("a"); !ok {
		t.Error("registered function not found")
	}
	if _, ok := r.Orchestrator("x"); ok {
		t.Error("unregistered function found")
	}
}
