package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the --config file (SPEC section 6).
type fileConfig struct {
	Functions []functionConfig
}

// functionConfig is one entry of functions:.
type functionConfig struct {
	Name    string
	Exec    []string
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
	if n := top["schedules"]; n != nil && !(n.Kind == yaml.SequenceNode && len(n.Content) == 0) && n.Tag != "!!null" {
		return nil, bad(n, "schedules are not supported in this version of soloist; remove the schedules section "+
			"and start the function from cron or a Kubernetes CronJob with 'soloist start FUNCTION ID' "+
			"(the singleton start never runs two at once)")
	}
	fns := top["functions"]
	if fns == nil || fns.Tag == "!!null" {
		return cfg, nil
	}
	if fns.Kind != yaml.SequenceNode {
		return nil, bad(fns, "functions must be a list of entries like '- name: report' with exec: [...]")
	}
	seen := map[string]int{}
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
	return cfg, nil
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
	if h := m["http"]; h != nil {
		return f, bad(h, "%s: http functions are not supported in this version of soloist; "+
			"use exec: [\"curl\", \"-fsS\", \"--data-binary\", \"@-\", URL] meanwhile", what)
	}
	x := m["exec"]
	if x == nil {
		return f, bad(n, "%s needs exec: the program and its arguments as a list, e.g. exec: [\"/usr/local/bin/report\", \"--full\"]", what)
	}
	if x.Kind != yaml.SequenceNode {
		return f, bad(x, "%s: exec must be a list like [\"/usr/local/bin/report\", \"--full\"]; "+
			"for a shell command use [\"/bin/sh\", \"-c\", \"...\"]", what)
	}
	for _, a := range x.Content {
		if a.Kind != yaml.ScalarNode {
			return f, bad(a, "%s: every exec item must be a string", what)
		}
		f.Exec = append(f.Exec, a.Value)
	}
	if len(f.Exec) == 0 || f.Exec[0] == "" {
		return f, bad(x, "%s: exec is empty; name the program to run first", what)
	}
	if _, err := exec.LookPath(f.Exec[0]); err != nil {
		return f, bad(x, "%s: cannot run %q: %v; use an absolute path to an executable that exists on every node", what, f.Exec[0], unwrapPathError(err))
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
