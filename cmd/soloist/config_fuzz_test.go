package main

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// FuzzParseConfig reads arbitrary bytes as a --config file: it never
// panics; an error is a configError that names the file and, whenever the
// YAML decoder knew one, the line; a file it accepts has functions and
// schedules that follow the rules (unique names, one kind of function, a
// schedule's input that is JSON, a schedule of a function it defines or of
// a demo function).
func FuzzParseConfig(f *testing.F) {
	// More seeds in testdata/fuzz/FuzzParseConfig.
	for _, s := range []string{
		"", "functions: [", "functions:\n  - name: a\n    exec: [/bin/sh]\n  - name: a\n    exec: [/bin/sh]\n",
		"functions:\n  -\n", "functions:\n  - name: a\n    tiemout: 1s\n    exec: [sh]\n", "functions: {a: 1}\n",
		"functions:\n  - name: a\n    exec: [sh]\n    name: b\n", "schedules:\n  - name: s\n    cron: '@every 1s'\n    function: nope\n",
		"schedules:\n  - name: s\n    cron: '0 0 30 2 *'\n    function: HelloCities\n    input: .inf\n",
		"a: &a [x, x]\nb: &b [*a, *a]\n", "\t", "functions:\n- name: x\n  http: {url: 'ftp://x'}\n", "%YAML 1.1\n---\n",
	} {
		f.Add([]byte(s))
	}
	lineRE := regexp.MustCompile(`\bline (\d+)\b`)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig("f.yaml", data)
		if err != nil {
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a configError", err, err)
			}
			if !strings.HasPrefix(err.Error(), "config f.yaml") || ce.msg == "" {
				t.Fatalf("error %q does not name the file", err)
			}
			if ce.line == 0 && lineRE.MatchString(ce.msg) {
				t.Fatalf("error %q names a line in its text but not as the error's line", err)
			}
			if ce.line < 0 {
				t.Fatalf("error %q has line %d", err, ce.line)
			}
			return
		}
		names := map[string]bool{}
		for _, fn := range cfg.Functions {
			if !functionNameRE.MatchString(fn.Name) || names[fn.Name] || (len(fn.Exec) > 0) == (fn.HTTP != nil) || fn.Line <= 0 ||
				fn.Timeout < 0 || fn.Retry.MaxAttempts < 0 || fn.Retry.Backoff < 0 {
				t.Fatalf("accepted a function that breaks the rules: %+v", fn)
			}
			names[fn.Name] = true
		}
		scheds := map[string]bool{}
		for _, sc := range cfg.Schedules {
			if !functionNameRE.MatchString(sc.Name) || scheds[sc.Name] || sc.Cron == "" || sc.Location == nil || sc.InstanceID == "" ||
				!json.Valid(sc.Input) || sc.Line <= 0 {
				t.Fatalf("accepted a schedule that breaks the rules: %+v", sc)
			}
			if !names[sc.Function] && !isDemoFunction(sc.Function) {
				t.Fatalf("schedule %q of function %q, which is neither defined nor a demo function", sc.Name, sc.Function)
			}
			scheds[sc.Name] = true
		}
	})
}

func isDemoFunction(name string) bool {
	for _, d := range demoFunctions {
		if d == name {
			return true
		}
	}
	return false
}
