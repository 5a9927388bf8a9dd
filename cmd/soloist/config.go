package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // schedules' timeZone: also in images without /usr/share/zoneinfo (FROM scratch)

	"go.yaml.in/yaml/v3"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/scheduler"
)

// fileConfig is the --config file (SPEC section 6).
type fileConfig struct {
	Functions []functionConfig
	Schedules []scheduleConfig
}

// scheduleConfig is one entry of schedules:.
type scheduleConfig struct {
	Name       string
	Cron       string
	Function   string
	Input      json.RawMessage // null when not given
	TimeZone   string          // as written; "" means UTC
	Location   *time.Location
	InstanceID string // defaults to Name
	Line       int
	// Lines of fields checked again once the registry is built.
	FunctionLine, InputLine int
}

// functionConfig is one entry of functions:: exactly one of Exec and HTTP.
type functionConfig struct {
	Name    string
	Exec    []string
	HTTP    *httpfn.Spec
	Timeout time.Duration
	Retry   retryConfig
	Line    int
}

type retryConfig struct {
	MaxAttempts int
	Backoff     time.Duration
}

// configError points at the place in the config file that is wrong.
type configError struct {
	file string
	line int
	msg  string
}

func (e *configError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("config %s, line %d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("config %s: %s", e.file, e.msg)
}

var functionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$`)

// loadConfig reads and validates a config file.
func loadConfig(path string) (*fileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --config: %w", err)
	}
	return parseConfig(path, b)
}

// parseConfig validates the YAML of a config file. Errors name the file, the
// line and the field, and say how to fix it.
func parseConfig(file string, data []byte) (*fileConfig, error) {
	cfg := &fileConfig{}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil // an empty file registers nothing
		}
		return nil, &configError{file: file, msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	bad := func(n *yaml.Node, format string, args ...any) error {
		return &configError{file: file, line: n.Line, msg: fmt.Sprintf(format, args...)}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return cfg, nil
	}
	top, err := mapping(root, bad, "the file", "functions", "schedules")
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	if fns := top["functions"]; fns != nil && fns.Tag != "!!null" {
		if fns.Kind != yaml.SequenceNode {
			return nil, bad(fns, "functions must be a list of entries like '- name: report' with exec: [...]")
		}
		for _, fn := range fns.Content {
			f, err := parseFunction(fn, bad)
			if err != nil {
				return nil, err
			}
			if line, dup := seen[f.Name]; dup {
				return nil, bad(fn, "function %q is defined twice (first on line %d); names must be unique", f.Name, line)
			}
			seen[f.Name] = f.Line
			cfg.Functions = append(cfg.Functions, f)
		}
	}
	if scs := top["schedules"]; scs != nil && scs.Tag != "!!null" {
		if scs.Kind != yaml.SequenceNode {
			return nil, bad(scs, "schedules must be a list of entries like '- name: nightly' with cron: and function:")
		}
		names := map[string]int{}
		for _, sn := range scs.Content {
			sc, err := parseSchedule(sn, bad, seen)
			if err != nil {
				return nil, err
			}
			if line, dup := names[sc.Name]; dup {
				return nil, bad(sn, "schedule %q is defined twice (first on line %d); names must be unique", sc.Name, line)
			}
			names[sc.Name] = sc.Line
			cfg.Schedules = append(cfg.Schedules, sc)
		}
	}
	return cfg, nil
}

// parseSchedule reads one entry of schedules:. functions are the names
// defined in the file; a schedule may also name a --demo function, which
// buildRegistry checks.
func parseSchedule(n *yaml.Node, bad badFunc, functions map[string]int) (scheduleConfig, error) {
	sc := scheduleConfig{Line: n.Line, Input: json.RawMessage("null"), Location: time.UTC}
	m, err := mapping(n, bad, "a schedule", "name", "cron", "function", "input", "timeZone", "instanceId")
	if err != nil {
		return sc, err
	}
	name := m["name"]
	if name == nil || name.Kind != yaml.ScalarNode || name.Value == "" {
		return sc, bad(n, "a schedule needs a name: (letters, digits, '.', '_' and '-'); it is also the default instance ID")
	}
	sc.Name = name.Value
	if !functionNameRE.MatchString(sc.Name) {
		return sc, bad(name, "schedule name %q: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", sc.Name)
	}
	what := fmt.Sprintf("schedule %q", sc.Name)
	c := m["cron"]
	if c == nil || c.Kind != yaml.ScalarNode || strings.TrimSpace(c.Value) == "" {
		return sc, bad(n, "%s needs cron: e.g. cron: \"0 2 * * *\" (minute hour day-of-month month day-of-week), @hourly or \"@every 30s\"", what)
	}
	sc.Cron = c.Value
	if _, err := scheduler.ParseCron(sc.Cron); err != nil {
		return sc, bad(c, "%s: %v", what, err)
	}
	if tz := m["timeZone"]; tz != nil {
		if tz.Kind != yaml.ScalarNode || tz.Value == "" {
			return sc, bad(tz, "%s: timeZone must be an IANA time zone name like Europe/Berlin or America/New_York", what)
		}
		if tz.Value == "Local" {
			return sc, bad(tz, "%s: timeZone Local differs from node to node, and every node must compute the same ticks; name the zone, e.g. Europe/Berlin", what)
		}
		loc, err := time.LoadLocation(tz.Value)
		if err != nil {
			return sc, bad(tz, "%s: unknown timeZone %q; use an IANA time zone name like Europe/Berlin, America/New_York or UTC", what, tz.Value)
		}
		sc.TimeZone, sc.Location = tz.Value, loc
	}
	fn := m["function"]
	if fn == nil || fn.Kind != yaml.ScalarNode || fn.Value == "" {
		return sc, bad(n, "%s needs function: the name of a function to start at each tick", what)
	}
	sc.Function, sc.FunctionLine = fn.Value, fn.Line
	if _, ok := functions[sc.Function]; !ok && !slices.Contains(demoFunctions, sc.Function) {
		defined := make([]string, 0, len(functions))
		for f := range functions {
			defined = append(defined, f)
		}
		sort.Strings(defined)
		hint := "this file defines no functions"
		if len(defined) > 0 {
			hint = "this file defines " + strings.Join(defined, ", ")
		}
		return sc, bad(fn, "%s: function %q is not defined (%s); define it under functions: or fix the name", what, sc.Function, hint)
	}
	if in := m["input"]; in != nil {
		v, err := yamlToJSON(in, 0)
		if err != nil {
			return sc, bad(in, "%s: input: %v", what, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return sc, bad(in, "%s: input cannot be written as JSON (%v)", what, err)
		}
		sc.Input, sc.InputLine = b, in.Line
	}
	sc.InstanceID = sc.Name
	if id := m["instanceId"]; id != nil {
		if id.Kind != yaml.ScalarNode {
			return sc, bad(id, "%s: instanceId must be a string", what)
		}
		if err := orchestrator.ValidateInstanceID(id.Value); err != nil {
			return sc, bad(id, "%s: %v", what, err)
		}
		sc.InstanceID = id.Value
	}
	return sc, nil
}

// yamlToJSON turns a YAML value into one json.Marshal writes: mappings
// become objects (scalar keys as strings), timestamps and binary stay the
// text as written, and numbers must be finite.
func yamlToJSON(n *yaml.Node, depth int) (any, error) {
	if depth > 100 {
		return nil, errors.New("nested more than 100 levels deep")
	}
	switch n.Kind {
	case yaml.AliasNode:
		return yamlToJSON(n.Alias, depth+1)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlToJSON(c, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				return nil, fmt.Errorf("line %d: keys must be plain strings (merge keys and complex keys are not supported)", k.Line)
			}
			v, err := yamlToJSON(n.Content[i+1], depth+1)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str", "!!timestamp", "!!binary":
			return n.Value, nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, err
			}
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("line %d: %s has no JSON form; quote it to pass a string", n.Line, n.Value)
			}
			return f, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		return v, nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML value", n.Line)
}

type badFunc func(n *yaml.Node, format string, args ...any) error

// mapping checks that n is a mapping with only the allowed keys and returns
// its values by key.
func mapping(n *yaml.Node, bad badFunc, what string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, bad(n, "%s must be a mapping of %s", what, strings.Join(allowed, ", "))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ok := false
		for _, a := range allowed {
			ok = ok || k.Value == a
		}
		if !ok {
			return nil, bad(k, "unknown field %q in %s; the fields are %s", k.Value, what, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, bad(k, "field %q appears twice in %s", k.Value, what)
		}
		out[k.Value] = v
	}
	return out, nil
}

func parseFunction(n *yaml.Node, bad badFunc) (functionConfig, error) {
	f := functionConfig{Line: n.Line}
	m, err := mapping(n, bad, "a function", "name", "exec", "http", "timeout", "retry")
	if err != nil {
		return f, err
	}
	name := m["name"]
	if name == nil || name.Kind != yaml.ScalarNode || name.Value == "" {
		return f, bad(n, "a function needs a name: (letters, digits, '.', '_' and '-')")
	}
	f.Name = name.Value
	if !functionNameRE.MatchString(f.Name) {
		return f, bad(name, "function name %q: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", f.Name)
	}
	what := fmt.Sprintf("function %q", f.Name)
	x, h := m["exec"], m["http"]
	switch {
	case x != nil && h != nil:
		return f, bad(n, "%s has both exec: and http:; a function is one or the other", what)
	case h != nil:
		if f.HTTP, err = parseHTTP(h, bad, what); err != nil {
			return f, err
		}
	case x == nil:
		return f, bad(n, "%s needs exec: (the program and its arguments as a list, e.g. exec: [\"/usr/local/bin/report\", \"--full\"]) "+
			"or http: (e.g. http: {url: \"https://search.internal/reindex\"})", what)
	default:
		if f.Exec, err = parseExec(x, bad, what); err != nil {
			return f, err
		}
	}
	if t := m["timeout"]; t != nil {
		if f.Timeout, err = parseDuration(t, bad, what+": timeout"); err != nil {
			return f, err
		}
	}
	if r := m["retry"]; r != nil {
		rm, err := mapping(r, bad, what+": retry", "maxAttempts", "backoff")
		if err != nil {
			return f, err
		}
		if a := rm["maxAttempts"]; a != nil {
			if err := a.Decode(&f.Retry.MaxAttempts); err != nil || f.Retry.MaxAttempts < 1 {
				return f, bad(a, "%s: retry.maxAttempts must be a whole number of at least 1 (attempts in all, the first included), not %q", what, a.Value)
			}
		}
		if b := rm["backoff"]; b != nil {
			if f.Retry.Backoff, err = parseDuration(b, bad, what+": retry.backoff"); err != nil {
				return f, err
			}
		}
	}
	return f, nil
}

func parseExec(x *yaml.Node, bad badFunc, what string) ([]string, error) {
	if x.Kind != yaml.SequenceNode {
		return nil, bad(x, "%s: exec must be a list like [\"/usr/local/bin/report\", \"--full\"]; "+
			"for a shell command use [\"/bin/sh\", \"-c\", \"...\"]", what)
	}
	var argv []string
	for _, a := range x.Content {
		if a.Kind != yaml.ScalarNode {
			return nil, bad(a, "%s: every exec item must be a string", what)
		}
		argv = append(argv, a.Value)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, bad(x, "%s: exec is empty; name the program to run first", what)
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, bad(x, "%s: cannot run %q: %v; use an absolute path to an executable that exists on every node", what, argv[0], unwrapPathError(err))
	}
	return argv, nil
}

// parseHTTP reads http: {url, method, headers} and checks it as httpfn
// will use it.
func parseHTTP(h *yaml.Node, bad badFunc, what string) (*httpfn.Spec, error) {
	hm, err := mapping(h, bad, what+": http", "url", "method", "headers")
	if err != nil {
		return nil, err
	}
	spec := &httpfn.Spec{}
	if u := hm["url"]; u == nil || u.Kind != yaml.ScalarNode || u.Value == "" {
		return nil, bad(h, "%s: http needs url:, e.g. url: \"https://search.internal/reindex\"", what)
	} else {
		spec.URL = u.Value
	}
	if mt := hm["method"]; mt != nil {
		if mt.Kind != yaml.ScalarNode {
			return nil, bad(mt, "%s: http.method must be a word like POST or PUT", what)
		}
		spec.Method = mt.Value
	}
	if hd := hm["headers"]; hd != nil {
		if hd.Kind != yaml.MappingNode {
			return nil, bad(hd, "%s: http.headers must be a mapping of header names to values, e.g. {X-Team: search}", what)
		}
		spec.Headers = map[string]string{}
		for i := 0; i+1 < len(hd.Content); i += 2 {
			k, v := hd.Content[i], hd.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return nil, bad(v, "%s: header %q must have a text value", what, k.Value)
			}
			spec.Headers[k.Value] = v.Value
		}
	}
	if _, err := httpfn.New(*spec, httpfn.Options{}); err != nil {
		return nil, bad(h, "%s: %v", what, err)
	}
	return spec, nil
}

func parseDuration(n *yaml.Node, bad badFunc, what string) (time.Duration, error) {
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || d < 0 {
		return 0, bad(n, "%s must be a duration like 30s, 10m or 1h, not %q", what, n.Value)
	}
	return d, nil
}

func unwrapPathError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// loadAPIKeys reads an API keys file: one key a line; blank lines and lines
// starting with # are ignored.
func loadAPIKeys(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --api-keys-file: %w", err)
	}
	var keys []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--api-keys-file %s has no keys; put one key a line (e.g. from 'openssl rand -hex 32')", path)
	}
	sort.Strings(keys)
	return keys, nil
}
