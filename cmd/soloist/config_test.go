package main

import (
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
		{"http function", "functions:\n  - name: reindex\n    http: {url: \"https://x\"}\n", []string{"line 3", "http functions are not supported", "use exec"}},
		{"schedules", "functions: []\nschedules:\n  - name: nightly\n    cron: \"0 2 * * *\"\n    function: x\n", []string{"line 3", "schedules are not supported", "soloist start"}},
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
	writeFile(t, dir+"/empty", "# nothing\n")
	if _, err := loadAPIKeys(dir + "/empty"); err == nil || !strings.Contains(err.Error(), "has no keys") {
		t.Fatalf("empty keys file: %v", err)
	}
}
