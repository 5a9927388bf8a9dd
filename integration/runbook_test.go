package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/soloist-dev/soloist/integration/harness"
	"github.com/soloist-dev/soloist/integration/harness/proc"
	"github.com/soloist-dev/soloist/orchestrator"
)

// runbookQuota is etcd's --quota-backend-bytes in TestRunbook: small, so
// that the NOSPACE part fills it in a second.
const runbookQuota = 16 << 20

// TestRunbook runs every command of the "Operator runbook" section of
// docs/operations.md, as the runbook writes it, against a real etcd (one
// member, built from the module) and two `soloist serve --demo` nodes, and
// checks each command's output: the sample output the runbook shows under
// it (a ```text block: digits and hex IDs stand for any, "..." for
// anything) and what the runbook's prose says it shows or does. The
// commands are read out of the runbook's ```sh blocks and must be, in
// order, the ones this test has a step for, so that the runbook and the
// test cannot drift apart. Placeholders ($ETCD, $SERVER, $ID, ...) are
// filled from the deployment or from an earlier command's output, as the
// runbook says; `go tool etcdctl` runs in the module root, `soloist` is the
// built binary, `curl` and `grep` are the system's.
func TestRunbook(t *testing.T) {
	bin := binaries(t)
	for _, tool := range []string{"sh", "curl", "grep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the runbook runs %s, which is not installed here (apt-get install %s)", tool, tool)
		}
	}
	began := time.Now()
	readme, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := parseRunbook(string(readme))
	if err != nil {
		t.Fatalf("the runbook section of docs/operations.md: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	r := &runbook{t: t, root: root, bin: bin, vars: map[string]string{}}
	steps := r.steps()
	if err := matchSteps(cmds, steps); err != nil {
		t.Fatal(err)
	}
	// `go tool etcdctl` builds etcdctl the first time (then it is cached):
	// do that before the clock of the deployment runs.
	if res := r.exec("go tool etcdctl version", 5*time.Minute); res.code != 0 || !strings.Contains(res.stdout, "etcdctl version: 3.") {
		t.Fatalf("go tool etcdctl version: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	t.Logf("go tool etcdctl ready after %s", time.Since(began).Round(100*time.Millisecond))

	r.env = harness.New(t, bin, raceNodes, harness.Options{
		Nodes: 2, Members: 1, Demo: true,
		EtcdArgs: []string{"--quota-backend-bytes", strconv.Itoa(runbookQuota)},
	})
	r.cli = r.env.Etcd.Client()
	r.vars["ETCD"] = r.env.Etcd.Members[0].ClientURL
	r.vars["SERVER"] = r.env.Nodes[0].URL()
	r.setup()
	for i, c := range cmds {
		r.run(i, c, steps[i])
	}
	t.Logf("ran the %d commands of the runbook in %s (deployment up after %s)", len(cmds), time.Since(began).Round(100*time.Millisecond), r.deployedAfter.Round(100*time.Millisecond))
}

// A runbook command as the runbook writes it, with the sample output shown
// under it.
type rbCommand struct {
	text   string
	line   int      // docs/operations.md line of the command
	sample []string // the ```text block after it, if any
	// bgSample is a ```text bg block after it: the output that the last
	// background command shows by now.
	bgSample []string
}

// parseRunbook reads the commands of the runbook's "## Operator runbook"
// section: every line of a ```sh block (a trailing backslash continues it;
// blank lines and # comments are skipped), and the ```text blocks after
// them. Fences may be indented (in a list); their content is dedented.
func parseRunbook(readme string) ([]rbCommand, error) {
	lines := strings.Split(readme, "\n")
	start := slices.Index(lines, "## Operator runbook")
	if start < 0 {
		return nil, errors.New(`no "## Operator runbook" heading`)
	}
	var cmds []rbCommand
	for i := start + 1; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "## ") {
			break
		}
		trimmed := strings.TrimLeft(l, " ")
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := len(l) - len(trimmed)
		info := strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))
		open := i + 1
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			b := lines[i]
			if len(b)-len(strings.TrimLeft(b, " ")) >= indent {
				b = b[indent:]
			}
			body = append(body, b)
		}
		if i == len(lines) {
			return nil, fmt.Errorf("line %d: the code block is not closed", open)
		}
		switch info {
		case "sh":
			for j := 0; j < len(body); j++ {
				c := strings.TrimSpace(body[j])
				line := open + j + 1
				for strings.HasSuffix(c, `\`) && j+1 < len(body) {
					j++
					c = strings.TrimSuffix(c, `\`) + " " + strings.TrimSpace(body[j])
				}
				if c == "" || strings.HasPrefix(c, "#") {
					continue
				}
				cmds = append(cmds, rbCommand{text: c, line: line})
			}
		case "text", "text bg":
			if len(cmds) == 0 {
				return nil, fmt.Errorf("line %d: sample output before any command", open)
			}
			c := &cmds[len(cmds)-1]
			dst := &c.sample
			if info == "text bg" {
				dst = &c.bgSample
			}
			if *dst != nil {
				return nil, fmt.Errorf("line %d: a second sample output for the command of line %d", open, c.line)
			}
			*dst = body
		default:
			return nil, fmt.Errorf("line %d: a ```%s block; the runbook has ```sh (commands) and ```text (their output) only", open, info)
		}
	}
	if len(cmds) == 0 {
		return nil, errors.New("no ```sh commands")
	}
	return cmds, nil
}

// matchSteps checks that the runbook's commands are, in order, the test's.
func matchSteps(cmds []rbCommand, steps []rbStep) error {
	var diffs []string
	for i := 0; i < max(len(cmds), len(steps)); i++ {
		switch {
		case i >= len(steps):
			diffs = append(diffs, fmt.Sprintf("runbook command %d (line %d) has no step in the test: %s", i+1, cmds[i].line, cmds[i].text))
		case i >= len(cmds):
			diffs = append(diffs, fmt.Sprintf("the test's step %d is not in the runbook: %s", i+1, steps[i].cmd))
		case cmds[i].text != steps[i].cmd:
			diffs = append(diffs, fmt.Sprintf("runbook command %d (line %d):\n\t%s\nthe test's step %d:\n\t%s", i+1, cmds[i].line, cmds[i].text, i+1, steps[i].cmd))
		}
	}
	for i, c := range cmds {
		if c.bgSample != nil && !slices.ContainsFunc(steps[:min(i+1, len(steps))], func(s rbStep) bool { return s.bg }) {
			diffs = append(diffs, fmt.Sprintf("docs/operations.md line %d: a ```text bg block, but no background command before it", c.line))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("the runbook and TestRunbook differ; change both together:\n%s", strings.Join(diffs, "\n"))
	}
	return nil
}

// sampleMatches reports whether the sample output appears in out: its
// lines, blank ones dropped, match consecutive lines of out, where a line
// "..." matches any number of lines, "..." inside a line matches anything,
// a run of digits any digits, a hex ID (12 or more hex digits, one at least
// a digit) any hex ID, a fraction of seconds before Z any or none, and
// runs of spaces any spaces.
func sampleMatches(sample []string, out []string) bool {
	type part struct {
		gap bool
		re  *regexp.Regexp
	}
	var ps []part
	for _, l := range sample {
		l = strings.TrimSpace(l)
		switch l {
		case "":
		case "...":
			ps = append(ps, part{gap: true})
		default:
			ps = append(ps, part{re: sampleLine(l)})
		}
	}
	var at func(i, j int) bool
	at = func(i, j int) bool {
		if i == len(ps) {
			return true
		}
		if ps[i].gap {
			for k := j; k <= len(out); k++ {
				if at(i+1, k) {
					return true
				}
			}
			return false
		}
		return j < len(out) && ps[i].re.MatchString(out[j]) && at(i+1, j+1)
	}
	for j := 0; j <= len(out); j++ {
		if at(0, j) {
			return true
		}
	}
	return false
}

var hexID = regexp.MustCompile(`^[0-9a-f]{12,}`)

func sampleLine(l string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(l); {
		rest := l[i:]
		switch {
		case strings.HasPrefix(rest, "..."):
			b.WriteString(".*")
			i += 3
		case l[i] == ' ' || l[i] == '\t':
			for i < len(l) && (l[i] == ' ' || l[i] == '\t') {
				i++
			}
			b.WriteString(`\s+`)
		case hexID.MatchString(rest) && strings.ContainsAny(hexID.FindString(rest), "0123456789"):
			b.WriteString(`[0-9a-f]+`)
			i += len(hexID.FindString(rest))
		case l[i] >= '0' && l[i] <= '9':
			for i < len(l) && l[i] >= '0' && l[i] <= '9' {
				i++
			}
			b.WriteString(`\d+`)
		case l[i] == '.' && regexp.MustCompile(`^\.\d+Z`).MatchString(rest):
			n := len(regexp.MustCompile(`^\.\d+Z`).FindString(rest))
			b.WriteString(`(\.\d+)?Z`)
			i += n
		default:
			b.WriteString(regexp.QuoteMeta(l[i : i+1]))
			i++
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// outLines is what a command printed, stdout then stderr, line by line,
// trimmed, blank lines dropped.
func outLines(s ...string) []string {
	var out []string
	for _, x := range s {
		for _, l := range strings.Split(x, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

// rbStep is the test's side of one runbook command.
type rbStep struct {
	cmd string
	// bg runs the command in the background ("in a second terminal"); its
	// output is checked (check, and the runbook's ```text bg block) when a later
	// command's sample says what it shows by then. It is stopped then.
	bg bool
	// exit is the exit code the runbook says the command has.
	exit int
	// within retries the command (one that only reads) until its checks
	// pass, for what the runbook says settles by itself within a time.
	within time.Duration
	// before runs first: the test's own preparations (never an operator's
	// step) and the placeholders.
	before func()
	// check checks what the command printed and did; it may wait for what
	// the command sets off.
	check func(res rbResult) error
}

type rbResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (res rbResult) lines() []string { return outLines(res.stdout, res.stderr) }

// runbook is TestRunbook's state.
type runbook struct {
	t             *testing.T
	root          string // the module root, where `go tool etcdctl` runs
	bin           *harness.Binaries
	env           *harness.Env
	cli           *clientv3.Client
	vars          map[string]string
	deployedAfter time.Duration

	bgCmd  *exec.Cmd
	bgOut  *lockedBuffer
	bgStep rbStep
	bgLine int
}

var placeholder = regexp.MustCompile(`\$([A-Z_]+)`)

// run runs the runbook's command c with the test's step s and checks it.
func (r *runbook) run(i int, c rbCommand, s rbStep) {
	t := r.t
	t.Helper()
	if s.before != nil {
		s.before()
	}
	for _, m := range placeholder.FindAllStringSubmatch(c.text, -1) {
		if r.vars[m[1]] == "" {
			t.Fatalf("runbook command %d (line %d) uses $%s, which the test has not set: %s", i+1, c.line, m[1], c.text)
		}
	}
	if s.bg {
		r.startBackground(c, s)
		return
	}
	deadline := time.Now().Add(s.within)
	for attempt := 1; ; attempt++ {
		res := r.exec(c.text, 60*time.Second)
		err := r.verify(c.sample, s, res)
		if err == nil {
			t.Logf("ok %2d (docs/operations.md line %d, %s): %s", i+1, c.line, res.took.Round(time.Millisecond), r.expand(c.text))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runbook command %d (line %d), attempt %d:\n$ %s\n(%s)\nexit %d\n--- stdout:\n%s--- stderr:\n%s---\n%v",
				i+1, c.line, attempt, c.text, r.expand(c.text), res.code, res.stdout, res.stderr, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if c.bgSample != nil {
		r.finishBackground(c)
	}
}

func (r *runbook) verify(sample []string, s rbStep, res rbResult) error {
	if res.code != s.exit {
		return fmt.Errorf("exit code %d, the runbook says %d", res.code, s.exit)
	}
	if sample != nil && !sampleMatches(sample, res.lines()) {
		return fmt.Errorf("the output does not match the runbook's sample output:\n%s", strings.Join(sample, "\n"))
	}
	if s.check != nil {
		return s.check(res)
	}
	return nil
}

// expand is the command with its placeholders filled, for the log.
func (r *runbook) expand(cmd string) string {
	return placeholder.ReplaceAllStringFunc(cmd, func(m string) string { return r.vars[m[1:]] })
}

func (r *runbook) environ() []string {
	var env []string
	for _, kv := range proc.CleanEnv() {
		if !strings.HasPrefix(kv, "ETCDCTL_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+filepath.Dir(r.bin.Soloist)+string(os.PathListSeparator)+os.Getenv("PATH"))
	for k, v := range r.vars {
		env = append(env, k+"="+v)
	}
	return env
}

// exec runs cmd with sh in the module root, in a process group of its own
// (killed whole on timeout: `go tool` runs etcdctl as its child).
func (r *runbook) exec(cmd string, timeout time.Duration) rbResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Dir, c.Env = r.root, r.environ()
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	began := time.Now()
	err := c.Run()
	res := rbResult{stdout: out.String(), stderr: errb.String(), took: time.Since(began)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		res.code = -1
		res.stderr += "\n(test: " + err.Error() + ")"
	}
	return res
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBackground starts a background command (an etcdctl watch) and waits
// until etcd has its watcher, so that nothing after it is missed.
func (r *runbook) startBackground(c rbCommand, s rbStep) {
	t := r.t
	before := r.etcdWatchers()
	cmd := exec.Command("sh", "-c", c.text)
	cmd.Dir, cmd.Env = r.root, r.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.bgOut = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = r.bgOut, r.bgOut
	if err := cmd.Start(); err != nil {
		t.Fatalf("docs/operations.md line %d: %v", c.line, err)
	}
	r.bgCmd, r.bgStep, r.bgLine = cmd, s, c.line
	t.Cleanup(r.stopBackground)
	deadline := time.Now().Add(15 * time.Second)
	for r.etcdWatchers() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("docs/operations.md line %d: etcd has no new watcher 15s after the start of: %s\n%s", c.line, c.text, r.bgOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ok    (docs/operations.md line %d, in the background): %s", c.line, r.expand(c.text))
}

// finishBackground waits until the background command's output matches
// the sample the runbook shows after command c, and its step's check, then
// stops it.
func (r *runbook) finishBackground(c rbCommand) {
	t := r.t
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := r.bgOut.String()
		err := error(nil)
		if !sampleMatches(c.bgSample, outLines(out)) {
			err = fmt.Errorf("the output does not match the runbook's sample output (line %d):\n%s", c.line, strings.Join(c.bgSample, "\n"))
		} else if r.bgStep.check != nil {
			err = r.bgStep.check(rbResult{stdout: out})
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("docs/operations.md line %d, in the background: %s\n--- output:\n%s---\n%v", r.bgLine, r.bgStep.cmd, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.stopBackground()
	t.Logf("ok    (docs/operations.md line %d): the background command showed what docs/operations.md line %d says", r.bgLine, c.line)
}

func (r *runbook) stopBackground() {
	if r.bgCmd == nil {
		return
	}
	_ = syscall.Kill(-r.bgCmd.Process.Pid, syscall.SIGKILL)
	_ = r.bgCmd.Wait()
	r.bgCmd = nil
}

// etcdWatchers is etcd's count of watchers (-1 if it cannot be read).
func (r *runbook) etcdWatchers() int {
	_, body := rbHTTP("GET", r.vars["ETCD"]+"/metrics", "")
	m := regexp.MustCompile(`(?m)^etcd_debugging_mvcc_watcher_total (\d+)`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// rbHTTP sends one request without keeping the connection.
func rbHTTP(method, url, body string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls fn until it returns nil, or fails after timeout with
// its last error.
func eventually(timeout time.Duration, what string, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s, not within %s: %w", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *runbook) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// owner reads instance id's owners key: holder, lease (hex) and token.
func (r *runbook) owner(id string) (node, lease string, token int64, ok bool) {
	ctx, cancel := r.ctx()
	defer cancel()
	resp, err := r.cli.Get(ctx, r.env.Keys.Owner(id))
	if err != nil || len(resp.Kvs) == 0 {
		return "", "", 0, false
	}
	var o orchestrator.Owner
	_ = json.Unmarshal(resp.Kvs[0].Value, &o)
	return o.Node, o.LeaseID, resp.Kvs[0].CreateRevision, true
}

// rec reads instance id's control record and its ModRevision.
func (r *runbook) rec(id string) (*orchestrator.Record, int64) {
	ctx, cancel := r.ctx()
	defer cancel()
	resp, err := r.cli.Get(ctx, r.env.Keys.Instance(id))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0
	}
	rec, err := orchestrator.ParseRecord(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0
	}
	return rec, resp.Kvs[0].ModRevision
}

// value reads one key's value ("" and false if absent).
func (r *runbook) value(key string) (string, bool) {
	ctx, cancel := r.ctx()
	defer cancel()
	resp, err := r.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

// keys lists the keys under prefix.
func (r *runbook) keys(prefix string) []string {
	ctx, cancel := r.ctx()
	defer cancel()
	resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		r.t.Fatalf("read %s: %v", prefix, err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

func (r *runbook) node(id string) *harness.Node {
	n := r.env.Node(id)
	if n == nil {
		r.t.Fatalf("no node %q", id)
	}
	return n
}

func (r *runbook) other(id string) *harness.Node {
	for _, n := range r.env.Nodes {
		if n.ID != id {
			return n
		}
	}
	r.t.Fatalf("no node but %q", id)
	return nil
}

// logs parses node's JSON log lines (every incarnation) from its log file.
func (r *runbook) logs(node string) []map[string]any {
	f, err := os.Open(r.node(node).Proc.LogPath)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if i := strings.IndexByte(l, '{'); i >= 0 {
			var m map[string]any
			if json.Unmarshal([]byte(l[i:]), &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out
}

// logged finds node's first log line with msg whose fields have the given
// values (compared as text).
func (r *runbook) logged(node, msg string, fields map[string]string) (map[string]any, bool) {
	for _, l := range r.logs(node) {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range fields {
			if fmt.Sprint(l[k]) != v {
				ok = false
			}
		}
		if ok {
			return l, true
		}
	}
	return nil, false
}

func (r *runbook) waitLogged(node, msg string, fields map[string]string) (map[string]any, error) {
	var line map[string]any
	err := eventually(5*time.Second, fmt.Sprintf("%s logs %q %v", node, msg, fields), func() error {
		var ok bool
		if line, ok = r.logged(node, msg, fields); !ok {
			return errors.New("no such line")
		}
		return nil
	})
	return line, err
}

// metric is a sample of node's /metrics ("name" or "name{labels}").
func (r *runbook) metric(node, name string) float64 {
	m, err := r.node(node).Scrape(3 * time.Second)
	if err != nil {
		r.t.Fatalf("metrics of %s: %v", node, err)
	}
	return m[name]
}

// promLines parses `name value` lines of a /metrics excerpt.
func promLines(out string) map[string]float64 {
	m := map[string]float64{}
	for _, l := range outLines(out) {
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
				m[l[:i]] = v
			}
		}
	}
	return m
}

// kvPairs parses `etcdctl get` output: key and value lines in turn.
func kvPairs(out string) ([][2]string, error) {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" {
		return nil, nil
	}
	if len(lines)%2 != 0 {
		return nil, fmt.Errorf("etcdctl get printed %d lines, not key and value pairs", len(lines))
	}
	var out2 [][2]string
	for i := 0; i < len(lines); i += 2 {
		out2 = append(out2, [2]string{lines[i], lines[i+1]})
	}
	return out2, nil
}

// fields parses `etcdctl -w fields` output and the CLI's key/value tables
// ("Name: value" or `"Name" : value`).
func fields(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, " : "); ok && strings.HasPrefix(k, `"`) {
			m[strings.Trim(k, `"`)] = strings.TrimSpace(v)
		} else if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			if _, seen := m[k]; !seen {
				m[k] = strings.TrimSpace(v)
			}
		}
	}
	return m
}

// start starts fn as id through node's API and waits until it is held (and
// Running) or, with wantTerminal, terminal.
func (r *runbook) start(node *harness.Node, fn, id, input string, wantTerminal bool) {
	t := r.t
	if code, body := rbHTTP("POST", node.URL()+"/api/orchestrators/"+fn+"/"+id, input); code != http.StatusAccepted {
		t.Fatalf("start %s %s: %d %s", fn, id, code, body)
	}
	err := eventually(15*time.Second, "instance "+id+" runs", func() error {
		rec, _ := r.rec(id)
		switch {
		case rec == nil:
			return errors.New("no record")
		case wantTerminal && rec.RuntimeStatus.Terminal():
			return nil
		case wantTerminal:
			return fmt.Errorf("%s", rec.RuntimeStatus)
		case rec.RuntimeStatus != orchestrator.StatusRunning:
			return fmt.Errorf("%s", rec.RuntimeStatus)
		}
		if _, _, _, ok := r.owner(id); !ok {
			return errors.New("not held")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// setup starts what the runbook's examples show: hello-1 (Completed), and
// order-42 and order-43, Approvals waiting for their event.
func (r *runbook) setup() {
	r.deployedAfter = r.env.Clock.Now()
	n1 := r.env.Nodes[0]
	r.start(n1, "HelloCities", "hello-1", "", true)
	for _, id := range []string{"order-42", "order-43"} {
		r.start(n1, "Approval", id, `{"timeoutSeconds":300}`, false)
		if err := eventually(5*time.Second, id+" sets its custom status", func() error {
			if _, ok := r.value(r.env.Keys.CustomStatus(id)); !ok {
				return errors.New("none yet")
			}
			return nil
		}); err != nil {
			r.t.Fatal(err)
		}
	}
}

// fill writes to one key outside Soloist's prefix until etcd refuses it
// with NOSPACE, as an etcd without compaction fills up.
func (r *runbook) fill() {
	junk := strings.Repeat("j", 512<<10)
	for i := 0; i < 4*runbookQuota/len(junk); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := r.cli.Put(ctx, "/runbook-junk/x", junk)
		cancel()
		if err != nil {
			if !strings.Contains(err.Error(), "database space exceeded") {
				r.t.Fatalf("fill etcd: %v", err)
			}
			r.env.Fault("etcd-nospace", "", fmt.Sprintf("%d puts of 512 KiB", i))
			return
		}
	}
	r.t.Fatalf("etcd took %d MiB without raising NOSPACE", 4*runbookQuota>>20)
}

// steps are the test's side of the runbook, in the runbook's order.
func (r *runbook) steps() []rbStep {
	t := r.t
	ttl := func() int { return int(r.env.Opts.TTL / time.Second) }
	var (
		holder0, lease0 string // order-42's first holder and its lease
		token0          int64
		holder1         string // after the lease revoke
		token1          int64
		exec42          string
		probe           = "nospace-probe"
		revBefore       int64
		disarmedAt      time.Time
		drained         *harness.Node
		stays           *harness.Node
		handed          []string
		handoffs0       float64
		failovers0      float64
		lost0           float64
		sentAt          time.Duration
	)
	set := func(kv ...string) {
		for i := 0; i < len(kv); i += 2 {
			r.vars[kv[i]] = kv[i+1]
		}
	}
	exactly := func(want string) func(rbResult) error {
		return func(res rbResult) error {
			if got := strings.TrimSpace(res.stdout); got != want {
				return fmt.Errorf("printed %q, the runbook says %q", got, want)
			}
			return nil
		}
	}
	statusOf := func(id string, want orchestrator.RuntimeStatus, held bool) func() error {
		return func() error {
			rec, _ := r.rec(id)
			if rec == nil || rec.RuntimeStatus != want {
				return fmt.Errorf("record %+v, want %s", rec, want)
			}
			if _, _, _, ok := r.owner(id); ok != held {
				return fmt.Errorf("%s: owners key present %v, want %v", id, ok, held)
			}
			return nil
		}
	}
	return []rbStep{
		// Instances and their status.
		{cmd: "soloist list --server $SERVER -o table", before: func() { set("ID", "order-42") }, check: func(res rbResult) error {
			rows := map[string][]string{}
			for _, l := range outLines(res.stdout) {
				f := strings.Fields(l)
				rows[f[0]] = f
			}
			h42, _, _, _ := r.owner("order-42")
			h43, _, _, _ := r.owner("order-43")
			for id, want := range map[string][]string{
				"hello-1":  {"HelloCities", "Completed", "-"},
				"order-42": {"Approval", "Running", h42},
				"order-43": {"Approval", "Running", h43},
			} {
				f := rows[id]
				if len(f) != 6 || f[1] != want[0] || f[2] != want[1] || f[5] != want[2] {
					return fmt.Errorf("row of %s is %q, want function, status and node %q", id, f, want)
				}
			}
			return nil
		}},
		{cmd: "soloist status $ID --server $SERVER -o table", check: func(res rbResult) error {
			f := fields(res.stdout)
			node, _, token, ok := r.owner("order-42")
			rec, _ := r.rec("order-42")
			if !ok || rec == nil {
				return errors.New("order-42 is not held")
			}
			if f["Node"] != node || f["Fencing token"] != strconv.FormatInt(token, 10) || f["Execution"] != rec.ExecutionID ||
				f["Status"] != "Running" || f["Input"] != `{"timeoutSeconds":300}` {
				return fmt.Errorf("status shows %v; etcd: holder %s, token %d, execution %s", f, node, token, rec.ExecutionID)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/instances/", check: func(res rbResult) error {
			pairs, err := kvPairs(res.stdout)
			if err != nil {
				return err
			}
			recs := map[string]map[string]any{}
			for _, p := range pairs {
				var m map[string]any
				if err := json.Unmarshal([]byte(p[1]), &m); err != nil {
					return fmt.Errorf("%s: %v", p[0], err)
				}
				recs[strings.TrimPrefix(p[0], "/soloist/v1/instances/")] = m
			}
			_, _, token, _ := r.owner("order-42")
			h, o := recs["hello-1"], recs["order-42"]
			if h == nil || o == nil || h["runtimeStatus"] != "Completed" || o["runtimeStatus"] != "Running" || h["fencingToken"] == 0.0 {
				return fmt.Errorf("records %v", recs)
			}
			if o["fencingToken"] != float64(token) {
				return fmt.Errorf("order-42's record has fencingToken %v; its only holder so far wrote it with %d", o["fencingToken"], token)
			}
			for _, f := range []string{"input", "output", "customStatus"} {
				if _, ok := o[f]; ok {
					return fmt.Errorf("the record has %q; the runbook says it lives in payloads/", f)
				}
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/payloads/$ID/", check: func(res rbResult) error {
			pairs, err := kvPairs(res.stdout)
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, p := range pairs {
				got[p[0]] = p[1]
			}
			want := map[string]string{
				"/soloist/v1/payloads/order-42/customStatus": `"waiting for event 'approve'"`,
				"/soloist/v1/payloads/order-42/input":        `{"timeoutSeconds":300}`,
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("payloads %v, want %v", got, want)
			}
			return nil
		}},
		// Who holds an instance.
		{cmd: "go tool etcdctl --endpoints $ETCD get /soloist/v1/owners/$ID -w fields", check: func(res rbResult) error {
			f := fields(res.stdout)
			v, err := strconv.Unquote(f["Value"])
			if err != nil {
				return fmt.Errorf("Value %s: %v", f["Value"], err)
			}
			var o orchestrator.Owner
			if err := json.Unmarshal([]byte(v), &o); err != nil {
				return err
			}
			dec, _ := strconv.ParseUint(f["Lease"], 10, 64)
			hex, _ := strconv.ParseUint(o.LeaseID, 16, 64)
			node, lease, token, _ := r.owner("order-42")
			if f["CreateRevision"] != strconv.FormatInt(token, 10) || o.Node != node || o.LeaseID != lease || dec != hex || dec == 0 {
				return fmt.Errorf("fields %v; etcd: holder %s, lease %s, token %d", f, node, lease, token)
			}
			holder0, lease0, token0 = o.Node, o.LeaseID, token
			set("LEASE", lease0, "NODE", holder0)
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD lease timetolive $LEASE --keys", check: func(res rbResult) error {
			m := regexp.MustCompile(`^lease (\w+) granted with TTL\((\d+)s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)$`).FindStringSubmatch(strings.TrimSpace(res.stdout))
			if m == nil {
				return errors.New("not the line the runbook shows")
			}
			ttlS, _ := strconv.Atoi(m[2])
			rem, _ := strconv.Atoi(m[3])
			keys := strings.Fields(m[4])
			if !sameLease(m[1], lease0) || ttlS != ttl() || rem < 0 || rem > ttlS ||
				!slices.Contains(keys, "/soloist/v1/nodes/"+holder0) || !slices.Contains(keys, "/soloist/v1/owners/order-42") {
				return fmt.Errorf("lease %s TTL %d remaining %d keys %v; want lease %s, TTL %d, the keys of node %s and of order-42", m[1], ttlS, rem, keys, lease0, ttl(), holder0)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get /soloist/v1/nodes/$NODE", check: func(res rbResult) error {
			pairs, err := kvPairs(res.stdout)
			if err != nil || len(pairs) != 1 {
				return fmt.Errorf("pairs %v (%v)", pairs, err)
			}
			var n orchestrator.NodeInfo
			if err := json.Unmarshal([]byte(pairs[0][1]), &n); err != nil {
				return err
			}
			if pairs[0][0] != "/soloist/v1/nodes/"+holder0 || n.Node != holder0 || n.LeaseID != lease0 || n.Address != r.node(holder0).URL() ||
				n.Role != "all" || !slices.Contains(n.Functions, "Approval") || n.Draining {
				return fmt.Errorf("node key %s = %+v; want node %s on lease %s at %s", pairs[0][0], n, holder0, lease0, r.node(holder0).URL())
			}
			return nil
		}},
		// Force a takeover.
		{cmd: "go tool etcdctl --endpoints $ETCD watch --prefix /soloist/v1/owners/", bg: true, check: func(res rbResult) error {
			// DELETE and PUT events, each: type, key, value.
			lines := strings.Split(res.stdout, "\n")
			deleted := false
			for i := 0; i+2 < len(lines); i++ {
				switch {
				case lines[i] == "DELETE" && lines[i+1] == "/soloist/v1/owners/order-42":
					deleted = true
				case lines[i] == "PUT" && lines[i+1] == "/soloist/v1/owners/order-42" && deleted:
					var o orchestrator.Owner
					if err := json.Unmarshal([]byte(lines[i+2]), &o); err != nil {
						return err
					}
					if o.Node == holder0 {
						return fmt.Errorf("the watch shows order-42 taken again by %s, the node whose lease was revoked", o.Node)
					}
					return nil
				}
			}
			return errors.New("no DELETE then PUT of order-42's owners key yet")
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD lease revoke $LEASE", check: func(res rbResult) error {
			if m := regexp.MustCompile(`^lease (\w+) revoked$`).FindStringSubmatch(strings.TrimSpace(res.stdout)); m == nil || !sameLease(m[1], lease0) {
				return fmt.Errorf("printed %q, the runbook says lease %s revoked", res.stdout, lease0)
			}
			if err := eventually(10*time.Second, "another node takes order-42", func() error {
				node, _, token, ok := r.owner("order-42")
				if !ok || node == holder0 || token <= token0 {
					return fmt.Errorf("holder %q token %d (before: %s, %d)", node, token, holder0, token0)
				}
				holder1, token1 = node, token
				return nil
			}); err != nil {
				return err
			}
			tok0 := strconv.FormatInt(token0, 10)
			if _, err := r.waitLogged(holder0, "run stopped: lease lost", map[string]string{"instance_id": "order-42", "fencing_token": tok0, "reason": "lease: owners key deleted"}); err != nil {
				return err
			}
			if _, err := r.waitLogged(holder0, "etcd session ended; every held instance stops", map[string]string{"lease_id": lease0}); err != nil {
				return err
			}
			renewed, err := r.waitLogged(holder0, "etcd session renewed", nil)
			if err != nil {
				return err
			}
			if renewed["lease_id"] == lease0 {
				return fmt.Errorf("%s renewed its session with the revoked lease %s", holder0, lease0)
			}
			if _, err := r.waitLogged(holder1, "took over instance", map[string]string{"instance_id": "order-42", "how": "failover", "from": holder0}); err != nil {
				return err
			}
			if err := r.node(holder0).WaitReady(10 * time.Second); err != nil {
				return err
			}
			info, _ := r.value(r.env.Keys.Node(holder1))
			var n orchestrator.NodeInfo
			_ = json.Unmarshal([]byte(info), &n)
			set("NODE_URL", n.Address)
			t.Logf("    order-42 moved from %s (token %d) to %s (token %d)", holder0, token0, holder1, token1)
			return nil
		}},
		{cmd: "soloist status $ID --server $SERVER -o table", check: func(res rbResult) error {
			f := fields(res.stdout)
			rec, _ := r.rec("order-42")
			if f["Node"] != holder1 || f["Fencing token"] != strconv.FormatInt(token1, 10) {
				return fmt.Errorf("status shows node %q token %q; the owners key: %s, %d", f["Node"], f["Fencing token"], holder1, token1)
			}
			if rec == nil || rec.FencingToken >= token1 {
				return fmt.Errorf("the record's fencingToken is %v; the runbook says it is the last writer's, older than the new holder's %d", rec, token1)
			}
			return nil
		}},
		{cmd: "curl -s $NODE_URL/metrics | grep -E '^soloist_(failovers_total|takeover_seconds_count)'", check: func(res rbResult) error {
			m := promLines(res.stdout)
			if len(m) != 2 || m["soloist_failovers_total"] < 1 || m["soloist_takeover_seconds_count"] < 1 {
				return fmt.Errorf("%v; the node that took over must count a failover and its time", m)
			}
			if lost := r.metric(holder0, `soloist_leases_lost_total{reason="key_deleted"}`); lost < 1 {
				return fmt.Errorf("%s counts %v leases lost as key_deleted", holder0, lost)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD del /soloist/v1/owners/$ID",
			before: func() {
				node, _, token, ok := r.owner("order-42")
				if !ok || node != holder1 || token != token1 {
					t.Fatalf("order-42 moved again by itself: %s %d", node, token)
				}
				failovers0 = r.metric(r.other(holder1).ID, "soloist_failovers_total") + r.metric(holder1, "soloist_failovers_total")
				lost0 = r.metric(holder1, `soloist_leases_lost_total{reason="key_deleted"}`)
			},
			check: func(res rbResult) error {
				if err := exactly("1")(res); err != nil {
					return err
				}
				var holder2 string
				var token2 int64
				if err := eventually(10*time.Second, "order-42 is taken again", func() error {
					node, _, token, ok := r.owner("order-42")
					if !ok || token <= token1 {
						return fmt.Errorf("holder %q token %d", node, token)
					}
					holder2, token2 = node, token
					return nil
				}); err != nil {
					return err
				}
				if _, err := r.waitLogged(holder1, "run stopped: lease lost", map[string]string{"instance_id": "order-42", "fencing_token": strconv.FormatInt(token1, 10), "reason": "lease: owners key deleted"}); err != nil {
					return err
				}
				if lost := r.metric(holder1, `soloist_leases_lost_total{reason="key_deleted"}`); lost != lost0+1 {
					return fmt.Errorf("%s counts %v leases lost as key_deleted, %v before", holder1, lost, lost0)
				}
				failovers := r.metric(r.other(holder1).ID, "soloist_failovers_total") + r.metric(holder1, "soloist_failovers_total")
				if holder2 == holder1 {
					if failovers != failovers0 {
						return fmt.Errorf("%s took order-42 again itself, yet failovers went from %v to %v", holder1, failovers0, failovers)
					}
				} else {
					if _, err := r.waitLogged(holder2, "took over instance", map[string]string{"instance_id": "order-42", "how": "failover"}); err != nil {
						return err
					}
					if failovers != failovers0+1 {
						return fmt.Errorf("%s took order-42 from %s, and failovers went from %v to %v", holder2, holder1, failovers0, failovers)
					}
				}
				t.Logf("    after the del, order-42 is held by %s (token %d; %s held it with %d)", holder2, token2, holder1, token1)
				return nil
			}},
		// History, events, suspend, resume, terminate, purge.
		{cmd: "soloist status $ID --history --server $SERVER -o table", check: func(res rbResult) error {
			f := fields(res.stdout)
			rec, _ := r.rec("order-42")
			if rec == nil || f["Execution"] != rec.ExecutionID {
				return fmt.Errorf("Execution %q, the record's %v", f["Execution"], rec)
			}
			exec42 = rec.ExecutionID
			set("EXEC", exec42)
			lines := outLines(res.stdout)
			i := slices.Index(lines, "History:")
			if i < 0 || len(lines) < i+4 || strings.Join(strings.Fields(lines[i+1]), " ") != "TIME EVENT NAME DETAIL" {
				return errors.New("no History table")
			}
			started, timer := strings.Fields(lines[i+2]), strings.Fields(lines[i+3])
			if len(started) != 3 || started[1] != "ExecutionStarted" || started[2] != "Approval" || len(timer) != 5 || timer[1] != "TimerCreated" || timer[3] != "fires" {
				return fmt.Errorf("history rows %q, %q", started, timer)
			}
			at, err1 := time.Parse(time.RFC3339, started[0])
			fires, err2 := time.Parse(time.RFC3339, timer[4])
			if err := errors.Join(err1, err2); err != nil || fires.Sub(at) < 299*time.Second || fires.Sub(at) > 301*time.Second {
				return fmt.Errorf("the timer fires at %s, started %s (%v): want 300 s later", timer[4], started[0], err)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/history/$ID/$EXEC/", check: func(res rbResult) error {
			pairs, err := kvPairs(res.stdout)
			if err != nil || len(pairs) == 0 {
				return fmt.Errorf("pairs %v (%v)", pairs, err)
			}
			seq := 0
			var types []string
			for _, p := range pairs {
				var evs []orchestrator.HistoryEvent
				if err := json.Unmarshal([]byte(p[1]), &evs); err != nil || len(evs) == 0 {
					return fmt.Errorf("%s: not a JSON array of events: %v", p[0], err)
				}
				if want := fmt.Sprintf("/soloist/v1/history/order-42/%s/%010d", exec42, seq); p[0] != want {
					return fmt.Errorf("key %s, want %s (named by its first event's seq)", p[0], want)
				}
				for _, ev := range evs {
					if ev.Seq != seq {
						return fmt.Errorf("%s: seq %d, want %d", p[0], ev.Seq, seq)
					}
					seq++
					types = append(types, string(ev.EventType))
				}
			}
			if len(types) < 2 || types[0] != "ExecutionStarted" || types[1] != "TimerCreated" {
				return fmt.Errorf("events %v", types)
			}
			return nil
		}},
		{cmd: `soloist raise $ID approve --data '"alice"' --server $SERVER -o table`, check: func(res rbResult) error {
			// Stored before the answer: in the inbox, or consumed into the
			// history already (one transaction moves it).
			ctx, cancel := r.ctx()
			defer cancel()
			for _, prefix := range []string{r.env.Keys.InboxPrefix("order-42"), r.env.Keys.History("order-42", exec42)} {
				resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
				if err != nil {
					return err
				}
				for _, kv := range resp.Kvs {
					if bytes.Contains(kv.Value, []byte(`"EventRaised"`)) && bytes.Contains(kv.Value, []byte(`"alice"`)) {
						return nil
					}
				}
			}
			return errors.New("the event is neither in the inbox nor in the history")
		}},
		{cmd: "soloist wait $ID --server $SERVER -o table", check: func(res rbResult) error {
			f := fields(res.stdout)
			out, _ := r.value(r.env.Keys.Output("order-42"))
			if f["Status"] != "Completed" || f["Output"] != `{"approved":true,"by":"alice"}` || out != f["Output"] {
				return fmt.Errorf("wait shows %v; the output key %q", f, out)
			}
			return statusOf("order-42", orchestrator.StatusCompleted, false)()
		}},
		{cmd: "soloist suspend $ID --reason maintenance --server $SERVER -o table",
			before: func() { set("ID", "order-43") },
			check: func(res rbResult) error {
				if err := eventually(5*time.Second, "order-43 is Suspended and not held", statusOf("order-43", orchestrator.StatusSuspended, false)); err != nil {
					return err
				}
				// An event raised meanwhile waits in the inbox.
				if code, body := rbHTTP("POST", r.vars["SERVER"]+"/runtime/webhooks/durabletask/instances/order-43/raiseEvent/ping", `"pong"`); code != http.StatusAccepted {
					return fmt.Errorf("raise ping while suspended: %d %s", code, body)
				}
				time.Sleep(300 * time.Millisecond) // it must still wait: nobody holds the instance
				keys := r.keys(r.env.Keys.InboxPrefix("order-43"))
				var ping bool
				for _, k := range keys {
					if v, _ := r.value(k); strings.Contains(v, `"ping"`) {
						ping = true
					}
				}
				if !ping {
					return fmt.Errorf("the event raised while suspended is not in the inbox: %v", keys)
				}
				return statusOf("order-43", orchestrator.StatusSuspended, false)()
			}},
		{cmd: "soloist resume $ID --server $SERVER -o table", check: func(res rbResult) error {
			return eventually(5*time.Second, "order-43 is Running and held again", statusOf("order-43", orchestrator.StatusRunning, true))
		}},
		{cmd: `soloist terminate $ID --reason "cancelled by ops" --server $SERVER -o table`,
			before: func() {
				// The runbook: a purge refuses an active instance with 409.
				if code, body := rbHTTP("DELETE", r.vars["SERVER"]+"/runtime/webhooks/durabletask/instances/order-43", ""); code != http.StatusConflict {
					t.Fatalf("purge of the active order-43: %d %s, the runbook says 409", code, body)
				}
			},
			check: func(res rbResult) error {
				if err := eventually(5*time.Second, "order-43 is Terminated", statusOf("order-43", orchestrator.StatusTerminated, false)); err != nil {
					return err
				}
				if out, _ := r.value(r.env.Keys.Output("order-43")); out != `"cancelled by ops"` {
					return fmt.Errorf("output %q, want the reason", out)
				}
				if keys := r.keys(r.env.Keys.InboxPrefix("order-43")); len(keys) > 0 {
					return fmt.Errorf("inbox left: %v", keys)
				}
				return nil
			}},
		{cmd: "soloist purge $ID --server $SERVER -o table", check: func(res rbResult) error {
			var left []string
			for _, k := range r.keys("/soloist/") {
				if strings.Contains(k, "/order-43") {
					left = append(left, k)
				}
			}
			if len(left) > 0 {
				return fmt.Errorf("keys of order-43 left after the purge: %v", left)
			}
			return nil
		}},
		// What is safe to delete by hand.
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/finished/ --keys-only", check: func(res rbResult) error {
			keys := outLines(res.stdout)
			if !sort.StringsAreSorted(keys) {
				return fmt.Errorf("not oldest first: %v", keys)
			}
			var ids []string
			for _, k := range keys {
				m := regexp.MustCompile(`^/soloist/v1/finished/(\d{13})/(.+)$`).FindStringSubmatch(k)
				if m == nil {
					return fmt.Errorf("key %s", k)
				}
				ids = append(ids, m[2])
				rec, _ := r.rec(m[2])
				v, _ := r.value(k)
				if rec == nil || !rec.RuntimeStatus.Terminal() || m[1] != fmt.Sprintf("%013d", rec.LastUpdatedTime.UnixMilli()) || v != rec.ExecutionID {
					return fmt.Errorf("entry %s = %q for the record %+v", k, v, rec)
				}
			}
			if !slices.Equal(ids, []string{"hello-1", "order-42"}) {
				return fmt.Errorf("entries for %v, want hello-1 and order-42 (order-43 was purged)", ids)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD del --prefix /soloist/v1/inbox/$ID/",
			before: func() {
				set("ID", "hello-1")
				ctx, cancel := r.ctx()
				defer cancel()
				// A leftover, as a raise racing a final write could leave.
				if _, err := r.cli.Put(ctx, r.env.Keys.InboxPrefix("hello-1")+"leftover", `{"seq":0,"eventType":"EventRaised","name":"late","input":1}`); err != nil {
					t.Fatal(err)
				}
			},
			check: func(res rbResult) error {
				if err := exactly("1")(res); err != nil {
					return err
				}
				if keys := r.keys(r.env.Keys.InboxPrefix("hello-1")); len(keys) > 0 {
					return fmt.Errorf("left: %v", keys)
				}
				return statusOf("hello-1", orchestrator.StatusCompleted, false)()
			}},
		// NOSPACE.
		{cmd: "soloist start HelloCities $ID --server $SERVER", exit: 1,
			before: func() {
				set("ID", "hello-2")
				r.start(r.env.Nodes[0], "Approval", probe, `{"timeoutSeconds": 3600}`, false)
				r.fill()
				r.startBeforeNoticed()
				// The nodes list etcd's alarms every 30 s; a campaign refused
				// with NOSPACE makes them look at once. Make one, not to wait.
				ctx, cancel := r.ctx()
				defer cancel()
				if _, err := r.cli.Delete(ctx, r.env.Keys.Owner(probe)); err != nil {
					t.Fatal(err)
				}
				for _, n := range r.env.Nodes {
					if err := eventually(35*time.Second, n.ID+" is unready with NOSPACE", func() error {
						if code, body := rbHTTP("GET", n.URL()+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "NOSPACE") {
							return fmt.Errorf("%d %s", code, body)
						}
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
			},
			check: func(res rbResult) error {
				if !strings.Contains(res.stderr, "(HTTP 507)") {
					return errors.New("no HTTP 507")
				}
				if rec, _ := r.rec("hello-2"); rec != nil {
					return fmt.Errorf("the refused start wrote %+v", rec)
				}
				return nil
			}},
		{cmd: "curl -si $SERVER/readyz", check: func(res rbResult) error {
			lines := outLines(res.stdout)
			var body struct{ Error, Status string }
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &body); err != nil || !strings.Contains(body.Error, "NOSPACE") || body.Status != "unavailable" {
				return fmt.Errorf("body %+v (%v)", body, err)
			}
			// Each node logs the refused writes, or the alarm its listing found.
			for _, n := range r.env.Nodes {
				if err := eventually(5*time.Second, n.ID+" logs NOSPACE", func() error {
					for _, l := range r.logs(n.ID) {
						msg, _ := l["msg"].(string)
						e, _ := l["error"].(string)
						switch {
						case msg == "etcd raised its NOSPACE alarm: it refuses every write, so no instance can start or progress" && l["level"] == "ERROR",
							(msg == "campaign failed" || msg == "commit failed; retrying" || msg == "request failed: etcd is out of space") &&
								l["level"] == "WARN" && strings.Contains(e, "database space exceeded"):
							return nil
						}
					}
					return errors.New("no line")
				}); err != nil {
					return err
				}
			}
			return nil
		}},
		{cmd: "curl -s $SERVER/metrics | grep '^soloist_etcd_alarm'", check: func(res rbResult) error {
			if m := promLines(res.stdout); m[`soloist_etcd_alarm{alarm="NOSPACE"}`] != 1 || len(m) != 1 {
				return fmt.Errorf("%v", m)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD alarm list", check: func(res rbResult) error {
			ctx, cancel := r.ctx()
			defer cancel()
			ml, err := r.cli.MemberList(ctx)
			if err != nil {
				return err
			}
			// etcdctl prints the alarm in protobuf's text format, whose
			// spacing varies on purpose.
			if got := strings.Join(strings.Fields(res.stdout), " "); got != fmt.Sprintf("memberID:%d alarm:NOSPACE", ml.Members[0].ID) {
				return fmt.Errorf("printed %q, want the alarm of member %d", res.stdout, ml.Members[0].ID)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD endpoint status -w table", check: func(res rbResult) error {
			for _, s := range []string{"DB SIZE", "IN USE", "QUOTA", "ERRORS", "alarm:NOSPACE", r.vars["ETCD"]} {
				if !strings.Contains(res.stdout, s) {
					return fmt.Errorf("no %q in the table", s)
				}
			}
			ctx, cancel := r.ctx()
			defer cancel()
			if size := r.env.Etcd.DBSizes(ctx)["etcd1"]; size < runbookQuota*9/10 {
				return fmt.Errorf("the database is %d bytes, not at its quota of %d", size, runbookQuota)
			}
			return nil
		}},
		{cmd: "soloist purge $ID --server $SERVER -o table",
			before: func() {
				set("ID", "hello-1")
				r.startDuringNoSpace()
			},
			check: func(res rbResult) error {
				if rec, _ := r.rec("hello-1"); rec != nil {
					return fmt.Errorf("hello-1 is still there: %+v", rec)
				}
				for _, k := range r.keys(r.env.Keys.Finished()) {
					if strings.HasSuffix(k, "/hello-1") {
						return fmt.Errorf("its retention entry %s is left", k)
					}
				}
				return nil
			}},
		{cmd: `go tool etcdctl --endpoints $ETCD compact $(go tool etcdctl --endpoints $ETCD endpoint status -w json | grep -o '"revision":[0-9]*' | grep -o '[0-9]*$')`,
			before: func() {
				ctx, cancel := r.ctx()
				defer cancel()
				resp, err := r.cli.Get(ctx, "/", clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				revBefore = resp.Header.Revision
			},
			check: func(res rbResult) error {
				m := regexp.MustCompile(`^compacted revision (\d+)$`).FindStringSubmatch(strings.TrimSpace(res.stdout))
				if m == nil {
					return errors.New("no 'compacted revision N'")
				}
				rev, _ := strconv.ParseInt(m[1], 10, 64)
				ctx, cancel := r.ctx()
				defer cancel()
				resp, err := r.cli.Get(ctx, "/", clientv3.WithCountOnly())
				if err != nil {
					return err
				}
				if rev < revBefore || rev > resp.Header.Revision {
					return fmt.Errorf("compacted to %d; etcd's revision was %d before and is %d now", rev, revBefore, resp.Header.Revision)
				}
				return nil
			}},
		{cmd: "go tool etcdctl --endpoints $ETCD defrag --cluster",
			before: func() {
				// The runbook: disarming before the defragmentation does not help.
				ctx, cancel := r.ctx()
				defer cancel()
				if _, err := r.cli.AlarmDisarm(ctx, &clientv3.AlarmMember{}); err != nil {
					t.Fatal(err)
				}
				_, err := r.cli.Put(ctx, "/runbook-junk/after-disarm", "x")
				if err == nil || !strings.Contains(err.Error(), "database space exceeded") {
					t.Fatalf("a write after a compaction and a disarm without the defragmentation: %v; the runbook says it raises NOSPACE again", err)
				}
				if alarms, _ := r.env.Etcd.Alarms(ctx); len(alarms) != 1 || !strings.HasPrefix(alarms[0], "NOSPACE") {
					t.Fatalf("alarms after that write: %v", alarms)
				}
			},
			check: func(res rbResult) error {
				if err := exactly("")(rbResult{stdout: regexp.MustCompile(`(?m)^Finished defragmenting etcd member\[`+regexp.QuoteMeta(r.vars["ETCD"])+`\]\. took .*$`).ReplaceAllString(res.stdout, "")}); err != nil {
					return err
				}
				ctx, cancel := r.ctx()
				defer cancel()
				if size := r.env.Etcd.DBSizes(ctx)["etcd1"]; size <= 0 || size > runbookQuota/2 {
					return fmt.Errorf("the database is %d bytes after the defragmentation", size)
				}
				return nil
			}},
		{cmd: "go tool etcdctl --endpoints $ETCD alarm disarm", check: func(res rbResult) error {
			disarmedAt = time.Now()
			if !strings.Contains(res.stdout, "alarm:NOSPACE") {
				return errors.New("it does not print the NOSPACE alarm it cleared")
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD alarm list", check: exactly("")},
		{cmd: "curl -si $SERVER/readyz", within: 10 * time.Second, check: func(res rbResult) error {
			lines := outLines(res.stdout)
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "HTTP/1.1 200") || lines[len(lines)-1] != `{"status":"ok"}` {
				return fmt.Errorf("not ready yet: %q", lines)
			}
			t.Logf("    %s ready %s after the disarm", r.vars["SERVER"], time.Since(disarmedAt).Round(100*time.Millisecond))
			for _, n := range r.env.Nodes {
				if err := eventually(10*time.Second, n.ID+" is ready, its gauge 0", func() error {
					if code, body := rbHTTP("GET", n.URL()+"/readyz", ""); code != http.StatusOK {
						return fmt.Errorf("%d %s", code, body)
					}
					if v := r.metric(n.ID, `soloist_etcd_alarm{alarm="NOSPACE"}`); v != 0 {
						return fmt.Errorf("gauge %v", v)
					}
					return nil
				}); err != nil {
					return err
				}
				if _, err := r.waitLogged(n.ID, "etcd's NOSPACE alarm is cleared; writes work again", nil); err != nil {
					return err
				}
				if n.Proc.Incarnation() != 1 || !n.Proc.Running() {
					return fmt.Errorf("%s was restarted (incarnation %d, running %v); the runbook says the nodes recover by themselves", n.ID, n.Proc.Incarnation(), n.Proc.Running())
				}
			}
			return nil
		}},
		{cmd: "soloist start HelloCities $ID --server $SERVER",
			before: func() { set("ID", "hello-2") },
			check: func(res rbResult) error {
				var st struct{ ID string }
				if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || st.ID != "hello-2" {
					return fmt.Errorf("%q (%v)", res.stdout, err)
				}
				if s := waitTerminal(r.env, "hello-2", 10*time.Second); s != orchestrator.StatusCompleted {
					return fmt.Errorf("hello-2 ended %q", s)
				}
				return nil
			}},
		// Drain a node.
		{cmd: "kill -TERM $PID",
			before: func() {
				// The probe stops, so that only the drain's instances are held.
				if code, body := rbHTTP("POST", r.vars["SERVER"]+"/runtime/webhooks/durabletask/instances/"+probe+"/terminate", ""); code != http.StatusAccepted {
					t.Fatalf("terminate the probe: %d %s", code, body)
				}
				if s := waitTerminal(r.env, probe, 10*time.Second); s == "" {
					t.Fatal("the probe did not end")
				}
				for i := 1; i <= 6; i++ {
					r.start(r.env.Nodes[0], "Approval", fmt.Sprintf("drain-%d", i), `{"timeoutSeconds": 3600}`, false)
				}
				held := map[string][]string{}
				hs, err := r.env.Holdings(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range hs {
					held[h.Node] = append(held[h.Node], h.InstanceID)
				}
				drained = r.env.Nodes[0]
				if len(held[r.env.Nodes[1].ID]) > len(held[drained.ID]) {
					drained = r.env.Nodes[1]
				}
				stays = r.other(drained.ID)
				handed = held[drained.ID]
				handoffs0 = r.metric(stays.ID, "soloist_handoffs_total")
				failovers0 = r.metric(stays.ID, "soloist_failovers_total")
				set("PID", strconv.Itoa(drained.Proc.Pid()), "SERVER", stays.URL())
				sentAt = r.env.Clock.Now()
				r.env.Fault("sigterm", drained.ID, "the runbook's kill -TERM $PID")
				t.Logf("    draining %s, which holds %v", drained.ID, handed)
			},
			check: func(res rbResult) error {
				if err := exactly("")(res); err != nil {
					return err
				}
				if !drained.Proc.Wait(2 * r.env.Opts.ShutdownTimeout) {
					return fmt.Errorf("%s did not exit", drained.ID)
				}
				if err := drained.Proc.ExitErr(); err != nil {
					return fmt.Errorf("%s exited with %v, the runbook says 0", drained.ID, err)
				}
				var msgs []string
				var held, released float64 = -1, -1
				for _, l := range r.logs(drained.ID) {
					switch m, _ := l["msg"].(string); m {
					case "signal received; draining", "drained", "stopped":
						msgs = append(msgs, m)
					case "draining":
						msgs = append(msgs, m)
						held, _ = l["held"].(float64)
					case "released for handoff":
						msgs = append(msgs, m)
						released, _ = l["instances"].(float64)
					}
				}
				want := []string{"signal received; draining", "draining", "released for handoff", "drained", "stopped"}
				if !slices.Equal(msgs, want) || int(held) != len(handed) || int(released) != len(handed) {
					return fmt.Errorf("%s logged %q (held %v, released %v); want %q with %d", drained.ID, msgs, held, released, want, len(handed))
				}
				var slowest time.Duration
				for _, id := range handed {
					if err := eventually(5*time.Second, stays.ID+" takes "+id, func() error {
						if node, _, _, ok := r.owner(id); !ok || node != stays.ID {
							return fmt.Errorf("held by %q", node)
						}
						return nil
					}); err != nil {
						return err
					}
					if _, err := r.waitLogged(stays.ID, "took over instance", map[string]string{"instance_id": id, "how": "handoff", "from": drained.ID}); err != nil {
						return err
					}
					for _, ev := range r.env.Events() {
						if ev.Node == stays.ID && ev.Msg == "took over instance" && ev.InstanceID == id {
							slowest = max(slowest, ev.At-sentAt)
						}
					}
				}
				if slowest <= 0 || slowest >= r.env.Opts.TTL {
					return fmt.Errorf("the last instance was taken %s after the SIGTERM; the runbook says at once, not after a TTL (%s)", slowest, r.env.Opts.TTL)
				}
				t.Logf("    %s took %d instances within %s of the SIGTERM", stays.ID, len(handed), slowest.Round(time.Millisecond))
				return nil
			}},
		{cmd: "curl -s $SERVER/metrics | grep -E '^soloist_(handoffs_total|failovers_total)'", check: func(res rbResult) error {
			m := promLines(res.stdout)
			if len(m) != 2 || m["soloist_handoffs_total"] != handoffs0+float64(len(handed)) || m["soloist_failovers_total"] != failovers0 {
				return fmt.Errorf("%v; before the drain handoffs %v, failovers %v; %d instances handed over", m, handoffs0, failovers0, len(handed))
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/handoffs/", check: func(res rbResult) error {
			pairs, err := kvPairs(res.stdout)
			if err != nil || len(pairs) != 1 || pairs[0][0] != "/soloist/v1/handoffs/"+drained.ID {
				return fmt.Errorf("%v (%v)", pairs, err)
			}
			var h struct {
				Node, Reason string
				ReleasedTime time.Time
			}
			if err := json.Unmarshal([]byte(pairs[0][1]), &h); err != nil || h.Node != drained.ID || h.Reason != "drain" || time.Since(h.ReleasedTime) > time.Minute {
				return fmt.Errorf("marker %+v (%v)", h, err)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD get --prefix /soloist/v1/nodes/ --keys-only", check: func(res rbResult) error {
			if got := outLines(res.stdout); !slices.Equal(got, []string{"/soloist/v1/nodes/" + stays.ID}) {
				return fmt.Errorf("node keys %v, want only %s's", got, stays.ID)
			}
			return nil
		}},
		{cmd: "go tool etcdctl --endpoints $ETCD del --prefix /soloist/v1/handoffs/", check: func(res rbResult) error {
			if err := exactly("1")(res); err != nil {
				return err
			}
			if keys := r.keys(r.env.Keys.Handoffs()); len(keys) > 0 {
				return fmt.Errorf("left: %v", keys)
			}
			for _, id := range handed {
				if node, _, _, ok := r.owner(id); !ok || node != stays.ID {
					return fmt.Errorf("%s is held by %q after the marker's delete", id, node)
				}
			}
			return nil
		}},
	}
}

// sameLease reports whether two hex lease IDs are the same lease: etcdctl
// prints 16 digits, Soloist's keys drop leading zeros.
func sameLease(a, b string) bool {
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	return err1 == nil && err2 == nil && x == y
}

// startBeforeNoticed checks what the runbook says a start answers while etcd
// has NOSPACE but the node has not noticed yet (it is still ready): 507,
// "was not written", naming the alarm.
func (r *runbook) startBeforeNoticed() {
	n := r.env.Nodes[0]
	ready := func() bool { code, _ := rbHTTP("GET", n.URL()+"/readyz", ""); return code == http.StatusOK }
	if !ready() {
		r.t.Logf("    %s noticed NOSPACE at once; the start before it noticed is not checked", n.ID)
		return
	}
	code, body := rbHTTP("POST", n.URL()+"/api/orchestrators/HelloCities/hello-early", "")
	if !ready() {
		r.t.Logf("    %s noticed NOSPACE meanwhile; the start before it noticed is not checked", n.ID)
		return
	}
	if code != http.StatusInsufficientStorage || !strings.Contains(body, "start of 'hello-early' was not written: orchestrator: etcd is out of space (NOSPACE alarm)") {
		r.t.Fatalf("a start while etcd has NOSPACE, before %s noticed: %d %s", n.ID, code, body)
	}
}

// startDuringNoSpace checks the runbook's warning: a node started while etcd
// has its NOSPACE alarm cannot get a session lease; it says why while it
// waits, and exits with code 3 once --etcd-dial-timeout has passed.
func (r *runbook) startDuringNoSpace() {
	t := r.t
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, r.bin.Soloist, "serve", "--etcd-endpoints", r.vars["ETCD"],
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--node-id", "n3", "--demo", "--log-format", "json",
		"--etcd-dial-timeout", "3s")
	c.Env = proc.CleanEnv()
	began := time.Now()
	out, err := c.CombinedOutput()
	took := time.Since(began)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 ||
		!bytes.Contains(out, []byte("etcd is out of space (NOSPACE alarm) and refuses the node's session")) ||
		!bytes.Contains(out, []byte("is out of space (NOSPACE alarm) and refused the node's session lease for --etcd-dial-timeout 3s")) {
		t.Fatalf("a node started during NOSPACE: %v\n%s\nthe runbook says it waits, saying why, then exits with code 3", err, out)
	}
	if took < 3*time.Second {
		t.Fatalf("a node started during NOSPACE exited after %v, before its --etcd-dial-timeout 3s", took)
	}
	t.Logf("    a node started during NOSPACE waited %v and exited with code 3: %s", took.Round(100*time.Millisecond), lastLine(out))
}

func lastLine(b []byte) string {
	l := outLines(string(b))
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// TestRunbookReadme checks, without a deployment (so with -short too),
// that the runbook section of docs/operations.md parses and that its
// commands are the ones TestRunbook has steps for, and that the sample
// matching can fail.
func TestRunbookReadme(t *testing.T) {
	readme, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := parseRunbook(string(readme))
	if err != nil {
		t.Fatalf("the runbook section of docs/operations.md: %v", err)
	}
	r := &runbook{t: t, vars: map[string]string{}}
	if err := matchSteps(cmds, r.steps()); err != nil {
		t.Fatal(err)
	}
	samples := 0
	for _, c := range cmds {
		if c.sample != nil {
			samples++
		}
	}
	t.Logf("%d commands, %d with a sample output", len(cmds), samples)

	for _, tc := range []struct {
		sample, out []string
		want        bool
	}{
		{[]string{"lease 2040a233e468df07 revoked"}, []string{"lease 7386a233f58d9306 revoked"}, true},
		{[]string{"lease 2040a233e468df07 revoked"}, []string{"lease 7386a233f58d9306 not found"}, false},
		{[]string{"Node:    n1", "Fencing token:  5"}, []string{"Status: Running", "Node: n2", "Fencing token: 17", "Input: null"}, true},
		{[]string{"Node:    n1", "Fencing token:  5"}, []string{"Node: n2", "Input: null", "Fencing token: 17"}, false},
		{[]string{"DELETE", "/k/a", "...", "PUT", "/k/a"}, []string{"DELETE", "/k/a", "DELETE", "/k/b", "PUT", "/k/b", "PUT", "/k/a"}, true},
		{[]string{"DELETE", "/k/a", "...", "PUT", "/k/a"}, []string{"PUT", "/k/a", "DELETE", "/k/a"}, false},
		{[]string{`{"t":"2026-12-01T23:15:43.091Z","x":...}`}, []string{`{"t":"2026-12-01T23:15:43Z","x":1}`}, true},
		{[]string{"Purged instance 'order-43'."}, []string{"Purged instance 'order-44'."}, true},
		{[]string{"Purged instance 'order-43'."}, []string{"Deleted instance 'order-43'."}, false},
	} {
		if got := sampleMatches(tc.sample, tc.out); got != tc.want {
			t.Errorf("sample %q against %q: %v, want %v", tc.sample, tc.out, got, tc.want)
		}
	}
}
