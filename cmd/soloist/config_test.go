package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig("c.yaml", []byte(`
functions:
  - name: nightly-report
    exec: ["/bin/sh", "-c", "echo hi"]
    timeout: 1h
    retry: {maxAttempts: 3, backoff: 10s}
  - name: plain
    exec: [sh]
schedules: []
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Functions) != 2 {
		t.Fatalf("functions = %+v", cfg.Functions)
	}
	f := cfg.Functions[0]
	if f.Name != "nightly-report" || strings.Join(f.Exec, " ") != "/bin/sh -c echo hi" || f.Timeout != time.Hour ||
		f.Retry.MaxAttempts != 3 || f.Retry.Backoff != 10*time.Second || f.Line != 3 {
		t.Fatalf("function = %+v", f)
	}
	hc, err := parseConfig("c.yaml", []byte(`
functions:
  - name: reindex
    http: {url: "https://search.internal/reindex", method: put, headers: {X-Team: search}}
    timeout: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	if h := hc.Functions[0].HTTP; h == nil || h.URL != "https://search.internal/reindex" || h.Method != "put" ||
		h.Headers["X-Team"] != "search" || hc.Functions[0].Timeout != 30*time.Second {
		t.Fatalf("http function = %+v", hc.Functions[0])
	}
	for _, empty := range []string{"", "# nothing\n", "functions:\n", "functions: []\n"} {
		cfg, err := parseConfig("c.yaml", []byte(empty))
		if err != nil || len(cfg.Functions) != 0 {
			t.Fatalf("%q: %+v, %v; want no functions", empty, cfg, err)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"not yaml", "functions: [", []string{"c.yaml", "not valid YAML"}},
		{"top level list", "- a\n", []string{"the file must be a mapping"}},
		{"unknown top field", "functoins: []\n", []string{"line 1", `unknown field "functoins"`, "functions, schedules"}},
		{"functions not a list", "functions: {name: x}\n", []string{"line 1", "functions must be a list"}},
		{"empty entry", "functions:\n  - name: a\n    exec: [sh]\n  -\n", []string{"line 2", "functions has an empty entry"}},
		{"function not a mapping", "functions:\n  - a\n", []string{"line 2", "a function must be a mapping of name, exec, http, timeout, retry"}},
		{"exec item", "functions:\n  - name: a\n    exec: [sh, [x]]\n", []string{"line 3", "every exec item must be a string"}},
		{"retry not a mapping", "functions:\n  - name: a\n    exec: [sh]\n    retry: 3\n", []string{"line 4", "retry must be a mapping of maxAttempts, backoff"}},
		{"attempts not a number", "functions:\n  - name: a\n    exec: [sh]\n    retry: {maxAttempts: many}\n", []string{"line 4", `retry.maxAttempts must be a whole number of at least 1`, `"many"`}},
		{"field twice", "functions:\n  - name: a\n    exec: [sh]\n    name: b\n", []string{"line 4", `field "name" appears twice (first on line 2)`}},
		{"http headers", "functions:\n  - name: r\n    http: {url: \"https://x/\", headers: {A: [1]}}\n", []string{"line 3", "http.headers must be a mapping of header names to text values"}},
		{"http not a mapping", "functions:\n  - name: r\n    http: [x]\n", []string{"line 3", "http must be a mapping of url, method, headers"}},
		{"no name", "functions:\n  - exec: [sh]\n", []string{"line 2", "needs a name"}},
		{"bad name", "functions:\n  - name: a/b\n    exec: [sh]\n", []string{"line 2", `function name "a/b"`}},
		{"no exec", "functions:\n  - name: a\n", []string{"line 2", `function "a" needs exec`}},
		{"exec string", "functions:\n  - name: a\n    exec: /bin/report --full\n", []string{"line 3", "exec must be a list", `["/bin/sh", "-c", "..."]`}},
		{"exec empty", "functions:\n  - name: a\n    exec: []\n", []string{"line 3", "exec is empty"}},
		{"exec missing program", "functions:\n  - name: a\n    exec: [/nonexistent/report]\n", []string{"line 3", `cannot run "/nonexistent/report"`}},
		{"bad timeout", "functions:\n  - name: a\n    exec: [sh]\n    timeout: 1 hour\n", []string{"line 4", `timeout must be a duration like 30s`, `"1 hour"`}},
		{"negative timeout", "functions:\n  - name: a\n    exec: [sh]\n    timeout: -1s\n", []string{"line 4", "timeout must be a duration"}},
		{"bad attempts", "functions:\n  - name: a\n    exec: [sh]\n    retry: {maxAttempts: 0}\n", []string{"line 4", "retry.maxAttempts must be a whole number of at least 1"}},
		{"bad backoff", "functions:\n  - name: a\n    exec: [sh]\n    retry: {backoff: soon}\n", []string{"line 4", "retry.backoff must be a duration"}},
		{"unknown retry field", "functions:\n  - name: a\n    exec: [sh]\n    retry: {attempts: 3}\n", []string{"line 4", `unknown field "attempts"`, "maxAttempts, backoff"}},
		{"typo in function", "functions:\n  - name: a\n    exec: [sh]\n    tiemout: 1s\n", []string{"line 4", `unknown field "tiemout" in a function`}},
		{"duplicate", "functions:\n  - name: a\n    exec: [sh]\n  - name: a\n    exec: [sh]\n", []string{"line 4", `function "a" is defined twice (first on line 2)`}},
		{"exec and http", "functions:\n  - name: reindex\n    exec: [sh]\n    http: {url: \"https://x\"}\n", []string{"line 2", "both exec: and http:"}},
		{"http without url", "functions:\n  - name: reindex\n    http: {method: PUT}\n", []string{"line 3", "http needs url:"}},
		{"http bad url", "functions:\n  - name: reindex\n    http: {url: \"search.internal/reindex\"}\n", []string{"line 3", "absolute URL"}},
		{"http reserved header", "functions:\n  - name: reindex\n    http: {url: \"https://x/\", headers: {Soloist-Fencing-Token: \"1\"}}\n", []string{"line 3", "Soloist-"}},
		{"http unknown field", "functions:\n  - name: reindex\n    http: {url: \"https://x/\", body: x}\n", []string{"line 3", `unknown field "body"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseConfig("c.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadAPIKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir+"/keys", "# ops team\nkey-one\n\n  key-two  \n")
	keys, err := loadAPIKeys(dir + "/keys")
	if err != nil || strings.Join(keys, ",") != "key-one,key-two" {
		t.Fatalf("keys %q, %v", keys, err)
	}
	writeFile(t, dir+"/spaces", "# ops team\nkey-one\n\nkey two\n")
	if _, err := loadAPIKeys(dir + "/spaces"); err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "white space") {
		t.Fatalf("key with a space on line 4: %v", err)
	}
	writeFile(t, dir+"/empty", "# nothing\n")
	if _, err := loadAPIKeys(dir + "/empty"); err == nil || !strings.Contains(err.Error(), "has no keys") {
		t.Fatalf("empty keys file: %v", err)
	}
}

func TestParseSchedules(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig("c.yaml", []byte(`
schedules:                          # before functions: order does not matter
  - name: nightly
    cron: "0 2 * * *"
    function: nightly-report
    input: {full: true, day: 2024-01-02, tags: [a, 1, 2.5, null], "n": 0x10}
    timeZone: Europe/Berlin
    instanceId: nightly-report-run
  - name: often
    cron: "@every 30s"
    function: nightly-report
  - name: demo
    cron: "@hourly"
    function: HelloCities
functions:
  - name: nightly-report
    exec: [sh]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Schedules) != 3 {
		t.Fatalf("schedules = %+v", cfg.Schedules)
	}
	s := cfg.Schedules[0]
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if s.Name != "nightly" || s.Cron != "0 2 * * *" || s.Function != "nightly-report" || s.InstanceID != "nightly-report-run" ||
		s.TimeZone != "Europe/Berlin" || s.Location.String() != berlin.String() || s.Line != 3 || s.FunctionLine != 5 || s.InputLine != 6 {
		t.Fatalf("schedule = %+v", s)
	}
	if want := `{"day":"2024-01-02","full":true,"n":16,"tags":["a",1,2.5,null]}`; string(s.Input) != want {
		t.Fatalf("input %s, want %s", s.Input, want)
	}
	// Defaults: instance ID = name, UTC, input null.
	d := cfg.Schedules[1]
	if d.InstanceID != "often" || d.Location != time.UTC || d.TimeZone != "" || string(d.Input) != "null" {
		t.Fatalf("defaults: %+v", d)
	}
	if cfg.Schedules[2].Function != "HelloCities" {
		t.Fatalf("a schedule of a demo function: %+v", cfg.Schedules[2])
	}
	for _, empty := range []string{"schedules:\n", "schedules: []\n"} {
		if cfg, err := parseConfig("c.yaml", []byte(empty)); err != nil || len(cfg.Schedules) != 0 {
			t.Fatalf("%q: %+v, %v; want no schedules", empty, cfg, err)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	t.Parallel()
	const fn = "functions:\n  - name: job\n    exec: [sh]\nschedules:\n"
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"not a list", "schedules: {name: x}\n", []string{"line 1", "schedules must be a list"}},
		{"empty entry", "schedules:\n  -\n", []string{"line 2", "schedules has an empty entry"}},
		{"not a mapping", "schedules: [nightly]\n", []string{"line 1", "a schedule must be a mapping of name, cron, function, input, timeZone, instanceId"}},
		{"cron not text", fn + "  - name: s\n    cron: [x]\n    function: job\n", []string{"line 5", `schedule "s" needs cron`}},
		{"no name", fn + "  - cron: '@hourly'\n    function: job\n", []string{"line 5", "a schedule needs a name"}},
		{"bad name", fn + "  - name: a/b\n    cron: '@hourly'\n    function: job\n", []string{"line 5", `schedule name "a/b"`}},
		{"no cron", fn + "  - name: s\n    function: job\n", []string{"line 5", `schedule "s" needs cron`, "0 2 * * *"}},
		{"bad cron", fn + "  - name: s\n    cron: '61 * * * *'\n    function: job\n", []string{"line 6", `schedule "s": invalid cron "61 * * * *"`, "use 5 fields"}},
		{"six fields", fn + "  - name: s\n    cron: '0 0 2 * * *'\n    function: job\n", []string{"line 6", "invalid cron", "use 5 fields"}},
		{"unknown descriptor", fn + "  - name: s\n    cron: '@fortnightly'\n    function: job\n", []string{"line 6", "invalid cron", "@every 30s"}},
		{"sub-second every", fn + "  - name: s\n    cron: '@every 500ms'\n    function: job\n", []string{"line 6", "@every needs a whole number of seconds"}},
		{"never fires", fn + "  - name: s\n    cron: '0 0 30 2 *'\n    function: job\n", []string{"line 6", "never fires"}},
		{"tz in cron", fn + "  - name: s\n    cron: 'CRON_TZ=Europe/Berlin 0 2 * * *'\n    function: job\n", []string{"line 6", "timeZone:"}},
		{"bad tz", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    timeZone: Mars/Olympus\n", []string{"line 8", `unknown timeZone "Mars/Olympus"`, "IANA"}},
		{"local tz", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    timeZone: Local\n", []string{"line 8", "Local differs from node to node"}},
		{"no function", fn + "  - name: s\n    cron: '@daily'\n", []string{"line 5", `schedule "s" needs function`}},
		{"unknown function", fn + "  - name: s\n    cron: '@daily'\n    function: jbo\n", []string{"line 7", `function "jbo" is not defined`, "this file defines job"}},
		{"no functions at all", "schedules:\n  - name: s\n    cron: '@daily'\n    function: job\n", []string{"line 4", "this file defines no functions"}},
		{"bad instance ID", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    instanceId: a/b\n", []string{"line 8", "invalid instance ID", "/ \\ # ? are not allowed"}},
		{"reserved instance ID", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    instanceId: '@s'\n", []string{"line 8", "starts with '@'"}},
		{"input inf", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    input: {x: .inf}\n", []string{"line 8", ".inf has no JSON form"}},
		{"input complex key", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    input: {[a]: 1}\n", []string{"line 8", "keys must be plain strings"}},
		{"unknown field", fn + "  - name: s\n    cron: '@daily'\n    function: job\n    timezone: UTC\n", []string{"line 8", `unknown field "timezone" in a schedule`, "timeZone"}},
		{"duplicate", fn + "  - name: s\n    cron: '@daily'\n    function: job\n  - name: s\n    cron: '@hourly'\n    function: job\n", []string{"line 8", `schedule "s" is defined twice (first on line 5)`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseConfig("c.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// buildRegistry checks what the file alone cannot: a demo function needs
// --demo, and the input must fit --max-payload.
func TestBuildRegistrySchedules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := dir + "/c.yaml"
	writeFile(t, file, "functions:\n  - name: job\n    exec: [sh]\nschedules:\n  - name: hello\n    cron: '@hourly'\n    function: HelloCities\n"+
		"  - name: big\n    cron: '@daily'\n    function: job\n    input: {blob: '"+strings.Repeat("x", 100)+"'}\n    timeZone: Asia/Tokyo\n")
	o := &serveOptions{Config: file, MaxPayload: 1 << 10, NodeID: "n1"}
	_, _, err := buildRegistry(o, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "line 7") || !strings.Contains(err.Error(), "pass --demo") {
		t.Fatalf("demo function without --demo: %v", err)
	}
	o.Demo = true
	reg, scheds, err := buildRegistry(o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(scheds) != 2 || scheds[0].Name != "hello" || scheds[0].InstanceID != "hello" || scheds[0].Location != time.UTC ||
		scheds[1].Location.String() != "Asia/Tokyo" || scheds[1].Spec != "@daily" || !strings.HasPrefix(string(scheds[1].Input), `{"blob":"xxx`) {
		t.Fatalf("schedules %+v", scheds)
	}
	if _, ok := reg.Orchestrator("job"); !ok {
		t.Fatal("job not registered")
	}
	o.MaxPayload = 64
	if _, _, err := buildRegistry(o, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "line 11") || !strings.Contains(err.Error(), "--max-payload") {
		t.Fatalf("input over --max-payload: %v", err)
	}
}
