package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"go.yaml.in/yaml/v3"
)

const promtoolHow = "build it with `go install -tags remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/promtool@v0.316.0` " +
	"and put it on PATH, or set SOLOIST_PROMTOOL (.ci/run builds it into ~/.cache/soloist-tools)"

// Soloist's alerts: promtool checks the rules and the scrape config, and
// runs the unit tests of rules_test.yml.
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "SOLOIST_PROMTOOL", "promtool", promtoolHow)
	dir := filepath.Join(root, "deploy", "prometheus")
	out := run(t, dir, promtool, "check", "rules", "--lint=all", "--lint-fatal", "rules.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules did not say SUCCESS")
	}
	out = run(t, dir, promtool, "test", "rules", "rules_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules did not say SUCCESS")
	}
	run(t, dir, promtool, "check", "config", "--lint=all", "--lint-fatal", "scrape.yml")
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTestFile struct {
	Tests []struct {
		Name  string `yaml:"name"`
		Cases []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

const runbookBase = "https://github.com/soloist-dev/soloist/blob/main/docs/alerts.md#"

// Every alert says what is wrong and links to what to do about it, in
// docs/alerts.md; and rules_test.yml has, for every alert, a case where it fires
// and one where it does not. (Without promtool: this reads the files.)
func TestAlertsDocumentedAndTested(t *testing.T) {
	t.Parallel()
	var rules ruleFile
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "rules.yml"), &rules)
	var tests ruleTestFile
	readYAML(t, filepath.Join(root, "deploy", "prometheus", "rules_test.yml"), &tests)
	readme, err := os.ReadFile(filepath.Join(root, "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	var alertHeadings []string
	for _, line := range strings.Split(string(readme), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			title := strings.TrimSpace(strings.TrimLeft(h, "#"))
			anchors[githubAnchor(title)] = true
			if name, ok := strings.CutPrefix(title, "Alert: "); ok {
				alertHeadings = append(alertHeadings, name)
			}
		}
	}

	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tg := range tests.Tests {
		for _, c := range tg.Cases {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}

	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, sev)
			}
			want := runbookBase + "alert-" + strings.ToLower(r.Alert)
			if u := r.Annotations["runbook_url"]; u != want {
				t.Errorf("alert %s: runbook_url %s, want %s", r.Alert, u, want)
			}
			if !anchors["alert-"+strings.ToLower(r.Alert)] {
				t.Errorf("alert %s: docs/alerts.md has no heading \"Alert: %s\" for its runbook_url to point at", r.Alert, r.Alert)
			}
			if !fires[r.Alert] {
				t.Errorf("alert %s: rules_test.yml has no case in which it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("alert %s: rules_test.yml has no case in which it stays quiet", r.Alert)
			}
		}
	}
	if len(alerts) < 10 {
		t.Errorf("rules.yml has %d alerts; read wrongly?", len(alerts))
	}
	for _, h := range alertHeadings {
		if !alerts[h] {
			t.Errorf("docs/alerts.md documents alert %s, which rules.yml does not have", h)
		}
	}
	for name := range fires {
		if !alerts[name] {
			t.Errorf("rules_test.yml tests alert %s, which rules.yml does not have", name)
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading: lower
// case, punctuation dropped, spaces to hyphens.
func githubAnchor(title string) string {
	title = regexp.MustCompile("`").ReplaceAllString(title, "")
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestGithubAnchor(t *testing.T) {
	t.Parallel()
	for title, want := range map[string]string{
		"Alert: SoloistNoLiveNodes": "alert-soloistnolivenodes",
		"Operating etcd":            "operating-etcd",
		"`soloist serve` flags":     "soloist-serve-flags",
	} {
		if got := githubAnchor(title); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", title, got, want)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := yaml.NewDecoder(f).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
