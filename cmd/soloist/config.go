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
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // schedules' timeZone: also in images without /usr/share/zoneinfo (FROM scratch)
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/orchestrator/httpfn"
	"github.com/soloist-dev/soloist/scheduler"
)

// fileConfig is the --config file (docs/contract.md section 6), checked.
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

// The file as YAML, decoded with KnownFields(true) so that an unknown key
// is an error. at records the line of a mapping; leaf records the line and
// the text of a value, and a value of the wrong type, which check reports
// with the field's name.
type (
	fileYAML struct {
		Functions at[[]*at[functionYAML]] `yaml:"functions"`
		Schedules at[[]*at[scheduleYAML]] `yaml:"schedules"`
	}
	functionYAML struct {
		Name    leaf[string]   `yaml:"name"`
		Exec    leaf[[]string] `yaml:"exec"`
		HTTP    *at[httpYAML]  `yaml:"http"`
		Timeout leaf[string]   `yaml:"timeout"`
		Retry   *at[retryYAML] `yaml:"retry"`
	}
	retryYAML struct {
		MaxAttempts leaf[int]    `yaml:"maxAttempts"`
		Backoff     leaf[string] `yaml:"backoff"`
	}
	httpYAML struct {
		URL     leaf[string]            `yaml:"url"`
		Method  leaf[string]            `yaml:"method"`
		Headers leaf[map[string]string] `yaml:"headers"`
	}
	scheduleYAML struct {
		Name       leaf[string]    `yaml:"name"`
		Cron       leaf[string]    `yaml:"cron"`
		Function   leaf[string]    `yaml:"function"`
		Input      leaf[yaml.Node] `yaml:"input"`
		TimeZone   leaf[string]    `yaml:"timeZone"`
		InstanceID leaf[string]    `yaml:"instanceId"`
	}
)

// at is a mapping of the file and the line it starts on. It decodes V with
// the decoder's settings (KnownFields), which a yaml.Node's Decode would not.
type at[T any] struct {
	V    T
	Line int
}

func (a *at[T]) UnmarshalYAML(unmarshal func(any) error) error {
	var n nodeRef
	if err := unmarshal(&n); err != nil {
		return err
	}
	a.Line = n.Line
	return unmarshal(&a.V)
}

// nodeRef keeps the node it is decoded from.
type nodeRef struct{ *yaml.Node }

func (r *nodeRef) UnmarshalYAML(n *yaml.Node) error {
	r.Node = n
	return nil
}

// leaf is a value of the file. A value that does not decode into T is kept
// as Err, for check to report with the field's name and what to write.
type leaf[T any] struct {
	V    T
	Set  bool // the key is there with a value that is not null
	Line int
	Node *yaml.Node
	Err  error
}

func (l *leaf[T]) UnmarshalYAML(n *yaml.Node) error {
	l.Set, l.Line, l.Node = true, n.Line, n
	l.Err = n.Decode(&l.V) // T holds no struct, so KnownFields does not matter
	return nil
}

// text is the value as written, for messages.
func (l *leaf[T]) text() string {
	if l.Node == nil {
		return ""
	}
	return l.Node.Value
}

// str is the value of a leaf that must be a non-empty string.
func (l *leaf[T]) str() (string, bool) {
	if !l.Set || l.Err != nil || l.Node.Kind != yaml.ScalarNode {
		return "", false
	}
	s := l.Node.Value
	return s, s != ""
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
	var y fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil && !errors.Is(err, io.EOF) { // an empty file registers nothing
		return nil, decodeError(file, err)
	}
	c := &checker{file: file}
	cfg := &fileConfig{}
	seen := map[string]int{}
	for _, fn := range y.Functions.V {
		if fn == nil {
			return nil, c.bad(y.Functions.Line, "functions has an empty entry (a '-' with nothing after it); complete it or remove it")
		}
		f, err := c.function(*fn)
		if err != nil {
			return nil, err
		}
		if line, dup := seen[f.Name]; dup {
			return nil, c.bad(fn.Line, "function %q is defined twice (first on line %d); names must be unique", f.Name, line)
		}
		seen[f.Name] = f.Line
		cfg.Functions = append(cfg.Functions, f)
	}
	names := map[string]int{}
	for _, sn := range y.Schedules.V {
		if sn == nil {
			return nil, c.bad(y.Schedules.Line, "schedules has an empty entry (a '-' with nothing after it); complete it or remove it")
		}
		sc, err := c.schedule(*sn, seen)
		if err != nil {
			return nil, err
		}
		if line, dup := names[sc.Name]; dup {
			return nil, c.bad(sn.Line, "schedule %q is defined twice (first on line %d); names must be unique", sc.Name, line)
		}
		names[sc.Name] = sc.Line
		cfg.Schedules = append(cfg.Schedules, sc)
	}
	return cfg, nil
}

// shapes say what the mappings and lists of the file must look like, for
// the decoder's errors, which name Go types.
var shapes = map[string]struct{ what, must string }{
	typeName[fileYAML]():            {"the file", "the file must be a mapping of %s"},
	typeName[[]*at[functionYAML]](): {"functions", "functions must be a list of entries like '- name: report' with exec: [...]"},
	typeName[[]*at[scheduleYAML]](): {"schedules", "schedules must be a list of entries like '- name: nightly' with cron: and function:"},
	typeName[functionYAML]():        {"a function", "a function must be a mapping of %s"},
	typeName[scheduleYAML]():        {"a schedule", "a schedule must be a mapping of %s"},
	typeName[retryYAML]():           {"retry", "retry must be a mapping of %s, e.g. retry: {maxAttempts: 3, backoff: 10s}"},
	typeName[httpYAML]():            {"http", "http must be a mapping of %s, e.g. http: {url: \"https://search.internal/reindex\", method: POST}"},
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// yamlFields lists the keys of a YAML struct type by name, in order.
func yamlFields(name string) string {
	for _, t := range []reflect.Type{reflect.TypeFor[fileYAML](), reflect.TypeFor[functionYAML](),
		reflect.TypeFor[scheduleYAML](), reflect.TypeFor[retryYAML](), reflect.TypeFor[httpYAML]()} {
		if t.String() != name {
			continue
		}
		var keys []string
		for i := range t.NumField() {
			k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			keys = append(keys, k)
		}
		return strings.Join(keys, ", ")
	}
	return ""
}

// The decoder's messages quote the file's text, which may span lines: (?s).
var (
	reUnknownField = regexp.MustCompile(`(?s)^line (\d+): field (.*) not found in type (\S+)$`)
	reKeyTwice     = regexp.MustCompile(`(?s)^line (\d+): mapping key "(.*)" already defined at line (\d+)$`)
	reWrongType    = regexp.MustCompile("(?s)^line (\\d+): cannot unmarshal (!!\\w+)(?: `.*`)? into (\\S+)$")
	reLine         = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
)

// decodeError turns the decoder's first error into a configError. The
// decoder reports unknown keys and wrong types as text only ("line 4: field
// tiemout not found in type main.functionYAML"), which is matched here.
func decodeError(file string, err error) error {
	line := func(s string) int { n, _ := strconv.Atoi(s); return n }
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		// A syntax error: "yaml: line 3: mapping values are not allowed in this context".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := reLine.FindStringSubmatch(msg); m != nil {
			return &configError{file: file, line: line(m[1]), msg: "not valid YAML: " + m[2]}
		}
		return &configError{file: file, msg: "not valid YAML: " + msg}
	}
	msg := te.Errors[0]
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		return &configError{file: file, line: line(m[1]), msg: fmt.Sprintf("unknown field %q in %s; the fields are %s",
			m[2], orDefault(shapes[m[3]].what, m[3]), yamlFields(m[3]))}
	}
	if m := reKeyTwice.FindStringSubmatch(msg); m != nil {
		return &configError{file: file, line: line(m[1]), msg: fmt.Sprintf("field %q appears twice (first on line %s); keep one", m[2], m[3])}
	}
	if m := reWrongType.FindStringSubmatch(msg); m != nil {
		if s, ok := shapes[m[3]]; ok {
			must := s.must
			if strings.Contains(must, "%s") {
				must = fmt.Sprintf(must, yamlFields(m[3]))
			}
			return &configError{file: file, line: line(m[1]), msg: must}
		}
	}
	if m := reLine.FindStringSubmatch(msg); m != nil {
		return &configError{file: file, line: line(m[1]), msg: m[2]}
	}
	return &configError{file: file, msg: msg}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checker checks the decoded entries of one file.
type checker struct{ file string }

func (c *checker) bad(line int, format string, args ...any) error {
	return &configError{file: c.file, line: line, msg: fmt.Sprintf(format, args...)}
}

func (c *checker) function(a at[functionYAML]) (functionConfig, error) {
	y := &a.V
	f := functionConfig{Line: a.Line}
	name, ok := y.Name.str()
	if !ok {
		return f, c.bad(a.Line, "a function needs a name: (letters, digits, '.', '_' and '-')")
	}
	f.Name = name
	if !functionNameRE.MatchString(f.Name) {
		return f, c.bad(y.Name.Line, "function name %q: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", f.Name)
	}
	what := fmt.Sprintf("function %q", f.Name)
	switch {
	case y.Exec.Set && y.HTTP != nil:
		return f, c.bad(a.Line, "%s has both exec: and http:; a function is one or the other", what)
	case y.HTTP != nil:
		spec, err := c.http(*y.HTTP, what)
		if err != nil {
			return f, err
		}
		f.HTTP = spec
	case !y.Exec.Set:
		return f, c.bad(a.Line, "%s needs exec: (the program and its arguments as a list, e.g. exec: [\"/usr/local/bin/report\", \"--full\"]) "+
			"or http: (e.g. http: {url: \"https://search.internal/reindex\"})", what)
	default:
		argv, err := c.exec(&y.Exec, what)
		if err != nil {
			return f, err
		}
		f.Exec = argv
	}
	var err error
	if y.Timeout.Set {
		if f.Timeout, err = c.duration(&y.Timeout, what+": timeout"); err != nil {
			return f, err
		}
	}
	if r := y.Retry; r != nil {
		if a := &r.V.MaxAttempts; a.Set {
			if a.Err != nil || a.V < 1 {
				return f, c.bad(a.Line, "%s: retry.maxAttempts must be a whole number of at least 1 (attempts in all, the first included), not %q", what, a.text())
			}
			f.Retry.MaxAttempts = a.V
		}
		if b := &r.V.Backoff; b.Set {
			if f.Retry.Backoff, err = c.duration(b, what+": retry.backoff"); err != nil {
				return f, err
			}
		}
	}
	return f, nil
}

func (c *checker) exec(x *leaf[[]string], what string) ([]string, error) {
	if x.Node.Kind != yaml.SequenceNode {
		return nil, c.bad(x.Line, "%s: exec must be a list like [\"/usr/local/bin/report\", \"--full\"]; "+
			"for a shell command use [\"/bin/sh\", \"-c\", \"...\"]", what)
	}
	if x.Err != nil {
		return nil, c.bad(x.Line, "%s: every exec item must be a string", what)
	}
	argv := x.V
	if len(argv) == 0 || argv[0] == "" {
		return nil, c.bad(x.Line, "%s: exec is empty; name the program to run first", what)
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, c.bad(x.Line, "%s: cannot run %q: %v; use an absolute path to an executable that exists on every node", what, argv[0], unwrapPathError(err))
	}
	return argv, nil
}

// http checks http: {url, method, headers} as httpfn will use it.
func (c *checker) http(h at[httpYAML], what string) (*httpfn.Spec, error) {
	spec := &httpfn.Spec{}
	u, ok := h.V.URL.str()
	if !ok {
		return nil, c.bad(h.Line, "%s: http needs url:, e.g. url: \"https://search.internal/reindex\"", what)
	}
	spec.URL = u
	if m := &h.V.Method; m.Set {
		if m.Err != nil || m.Node.Kind != yaml.ScalarNode {
			return nil, c.bad(m.Line, "%s: http.method must be a word like POST or PUT", what)
		}
		spec.Method = m.V
	}
	if hd := &h.V.Headers; hd.Set {
		if hd.Err != nil || hd.Node.Kind != yaml.MappingNode {
			return nil, c.bad(hd.Line, "%s: http.headers must be a mapping of header names to text values, e.g. {X-Team: search}", what)
		}
		spec.Headers = hd.V
	}
	if _, err := httpfn.New(*spec, httpfn.Options{}); err != nil {
		return nil, c.bad(h.Line, "%s: %v", what, err)
	}
	return spec, nil
}

func (c *checker) duration(l *leaf[string], what string) (time.Duration, error) {
	d, err := time.ParseDuration(l.V)
	if l.Err != nil || l.Node.Kind != yaml.ScalarNode || err != nil || d < 0 {
		return 0, c.bad(l.Line, "%s must be a duration like 30s, 10m or 1h, not %q", what, l.text())
	}
	return d, nil
}

// schedule checks one entry of schedules:. functions are the names defined
// in the file; a schedule may also name a --demo function, which
// buildRegistry checks.
func (c *checker) schedule(a at[scheduleYAML], functions map[string]int) (scheduleConfig, error) {
	y := &a.V
	sc := scheduleConfig{Line: a.Line, Input: json.RawMessage("null"), Location: time.UTC}
	name, ok := y.Name.str()
	if !ok {
		return sc, c.bad(a.Line, "a schedule needs a name: (letters, digits, '.', '_' and '-'); it is also the default instance ID")
	}
	sc.Name = name
	if !functionNameRE.MatchString(sc.Name) {
		return sc, c.bad(y.Name.Line, "schedule name %q: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", sc.Name)
	}
	what := fmt.Sprintf("schedule %q", sc.Name)
	cron, ok := y.Cron.str()
	if !ok || strings.TrimSpace(cron) == "" {
		return sc, c.bad(a.Line, "%s needs cron: e.g. cron: \"0 2 * * *\" (minute hour day-of-month month day-of-week), @hourly or \"@every 30s\"", what)
	}
	sc.Cron = cron
	if _, err := scheduler.ParseCron(sc.Cron); err != nil {
		return sc, c.bad(y.Cron.Line, "%s: %v", what, err)
	}
	if tz := &y.TimeZone; tz.Set {
		zone, ok := tz.str()
		if !ok {
			return sc, c.bad(tz.Line, "%s: timeZone must be an IANA time zone name like Europe/Berlin or America/New_York", what)
		}
		if zone == "Local" {
			return sc, c.bad(tz.Line, "%s: timeZone Local differs from node to node, and every node must compute the same ticks; name the zone, e.g. Europe/Berlin", what)
		}
		loc, err := time.LoadLocation(zone)
		if err != nil {
			return sc, c.bad(tz.Line, "%s: unknown timeZone %q; use an IANA time zone name like Europe/Berlin, America/New_York or UTC", what, zone)
		}
		sc.TimeZone, sc.Location = zone, loc
	}
	fn, ok := y.Function.str()
	if !ok {
		return sc, c.bad(a.Line, "%s needs function: the name of a function to start at each tick", what)
	}
	sc.Function, sc.FunctionLine = fn, y.Function.Line
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
		return sc, c.bad(y.Function.Line, "%s: function %q is not defined (%s); define it under functions: or fix the name", what, sc.Function, hint)
	}
	if in := &y.Input; in.Set {
		// The input is the user's YAML, to be sent as JSON: converted from
		// the node, since decoding into any turns dates into time.Time.
		budget := maxInputNodes
		v, err := yamlToJSON(in.Node, 0, &budget)
		if err != nil {
			return sc, c.bad(in.Line, "%s: input: %v", what, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return sc, c.bad(in.Line, "%s: input cannot be written as JSON (%v)", what, err)
		}
		sc.Input, sc.InputLine = b, in.Line
	}
	sc.InstanceID = sc.Name
	if id := &y.InstanceID; id.Set {
		if id.Err != nil || id.Node.Kind != yaml.ScalarNode {
			return sc, c.bad(id.Line, "%s: instanceId must be a string", what)
		}
		if err := orchestrator.ValidateInstanceID(id.V); err != nil {
			return sc, c.bad(id.Line, "%s: %v", what, err)
		}
		sc.InstanceID = id.V
	}
	return sc, nil
}

// maxInputNodes bounds the values of a schedule's input once its aliases
// are expanded: a few aliases of aliases would otherwise expand to billions.
const maxInputNodes = 100000

// yamlToJSON turns a YAML value into one json.Marshal writes: mappings
// become objects (scalar keys as strings), timestamps and binary stay the
// text as written, and numbers must be finite. budget is the number of
// values it may still produce.
func yamlToJSON(n *yaml.Node, depth int, budget *int) (any, error) {
	if depth > 100 {
		return nil, errors.New("nested more than 100 levels deep")
	}
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("more than %d values once its aliases (*name) are expanded; write it out smaller", maxInputNodes)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return yamlToJSON(n.Alias, depth+1, budget)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlToJSON(c, depth+1, budget)
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
			v, err := yamlToJSON(n.Content[i+1], depth+1, budget)
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

func unwrapPathError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// loadAPIKeys reads an API keys file: one key a line; blank lines and lines
// starting with # are ignored. A key that cannot work is reported with its
// line.
func loadAPIKeys(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --api-keys-file: %w", err)
	}
	var keys []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.IndexFunc(line, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return nil, fmt.Errorf("--api-keys-file %s, line %d: the key contains white space or a control character, which a client cannot send in a header; "+
				"put one key a line, without spaces", path, i+1)
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("--api-keys-file %s has no keys; put one key a line (e.g. from 'openssl rand -hex 32')", path)
	}
	return keys, nil
}
