package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const unitPath = "deploy/systemd/soloist.service"

// unitSettings reads the [Service] section of the unit: key to values (a
// key may repeat).
func unitSettings(t *testing.T) (text string, svc map[string][]string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, unitPath))
	if err != nil {
		t.Fatal(err)
	}
	svc = map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			svc[k] = append(svc[k], v)
		}
	}
	return string(b), svc
}

// systemd-analyze verify finds no problem in the unit. It wants ExecStart
// to name an executable file, so it verifies a copy whose ExecStart is
// this test's own binary (it only checks that the file is executable).
func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	analyze := tool(t, "SOLOIST_SYSTEMD_ANALYZE", "systemd-analyze", "it comes with Debian's systemd package (apt-get install systemd)")
	text, _ := unitSettings(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/soloist `)
	if !re.MatchString(text) {
		t.Fatalf("%s: no line ExecStart=/usr/local/bin/soloist ...", unitPath)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "soloist.service")
	if err := os.WriteFile(copyPath, []byte(re.ReplaceAllString(text, "ExecStart="+self+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	// verify exits 0 on warnings (an unknown key, a value it cannot
	// parse), so any line about the unit fails the test too.
	out := run(t, dir, analyze, "verify", copyPath)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "soloist.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// The unit is what serve's systemd support (cmd/soloist/systemd.go) needs,
// and stops later than the drain ends.
func TestSystemdUnitSettings(t *testing.T) {
	t.Parallel()
	_, svc := unitSettings(t)
	one := func(k string) string {
		t.Helper()
		if len(svc[k]) != 1 {
			t.Errorf("%s: %s= set %d times, want once", unitPath, k, len(svc[k]))
			return ""
		}
		return svc[k][0]
	}
	if v := one("Type"); v != "notify" {
		t.Errorf("Type=%s, want notify: soloist sends READY=1", v)
	}
	if v := one("NotifyAccess"); v != "main" {
		t.Errorf("NotifyAccess=%s, want main: exec functions inherit NOTIFY_SOCKET", v)
	}
	watchdog := systemdDuration(t, "WatchdogSec", one("WatchdogSec"))
	if watchdog < 10*time.Second {
		t.Errorf("WatchdogSec=%s: soloist pings at half of it while /livez answers; under 10s a busy node may be killed", watchdog)
	}
	var drain time.Duration
	for _, env := range svc["Environment"] {
		for _, kv := range strings.Fields(env) {
			if v, ok := strings.CutPrefix(kv, "SOLOIST_SHUTDOWN_TIMEOUT="); ok {
				drain = systemdDuration(t, "SOLOIST_SHUTDOWN_TIMEOUT", v)
			}
		}
	}
	if drain == 0 {
		t.Fatal("the unit sets no SOLOIST_SHUTDOWN_TIMEOUT")
	}
	if stop := systemdDuration(t, "TimeoutStopSec", one("TimeoutStopSec")); stop <= drain+5*time.Second {
		t.Errorf("TimeoutStopSec=%s must exceed SOLOIST_SHUTDOWN_TIMEOUT=%s by some seconds, or systemd kills a draining node", stop, drain)
	}
	if start := systemdDuration(t, "TimeoutStartSec", one("TimeoutStartSec")); start < 30*time.Second {
		t.Errorf("TimeoutStartSec=%s: READY=1 waits for etcd (up to --etcd-dial-timeout, 20s by default)", start)
	}
	if v := one("KillMode"); v != "mixed" {
		t.Errorf("KillMode=%s, want mixed: SIGTERM to soloist only, which stops its exec functions itself", v)
	}
}

// systemdDuration reads a time span as systemd writes one here: "30s",
// "1min 30s", or bare seconds.
func systemdDuration(t *testing.T, what, v string) time.Duration {
	t.Helper()
	s := strings.ReplaceAll(strings.ReplaceAll(v, "min", "m"), " ", "")
	if s != "" && strings.Trim(s, "0123456789") == "" {
		s += "s"
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("%s=%s: %v", what, v, err)
	}
	return d
}
