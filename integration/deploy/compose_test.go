package deploy

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// docker-compose accepts the compose file (its schema refuses unknown
// keys), and in the configuration it resolves every Soloist node serves
// metrics without keys on its own port and has time to drain.
func TestComposeConfig(t *testing.T) {
	t.Parallel()
	compose := tool(t, "SOLOIST_DOCKER_COMPOSE", "docker-compose",
		"install Debian's docker-compose (apt-get install docker-compose)")
	file, err := filepath.Abs(filepath.Join(root, "deploy", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, t.TempDir(), compose, "-f", file, "config")

	var cfg struct {
		Services map[string]struct {
			Image           string            `yaml:"image"`
			Init            bool              `yaml:"init"`
			StopGracePeriod string            `yaml:"stop_grace_period"`
			Environment     map[string]string `yaml:"environment"`
			Command         []string          `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("the output of docker-compose config: %v", err)
	}
	nodes, etcds := 0, 0
	for name, s := range cfg.Services {
		if strings.HasPrefix(s.Image, "soloist-etcd:") {
			// Without compaction etcd's history grows until NOSPACE.
			// (A flag on the command line or its ETCD_ variable.)
			cmd := strings.Join(s.Command, " ")
			for _, flag := range []string{"auto-compaction-mode", "auto-compaction-retention", "quota-backend-bytes"} {
				env := "ETCD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
				if !strings.Contains(cmd, "--"+flag+"=") && s.Environment[env] == "" {
					t.Errorf("%s: etcd runs without --%s (or %s): %s", name, flag, env, cmd)
				}
			}
			etcds++
		}
		if !strings.HasPrefix(s.Image, "soloist:") {
			continue
		}
		nodes++
		env := s.Environment
		if _, port, err := net.SplitHostPort(env["SOLOIST_METRICS_LISTEN"]); err != nil || port == "" {
			t.Errorf("%s: SOLOIST_METRICS_LISTEN=%q, want HOST:PORT so Prometheus can scrape without a key", name, env["SOLOIST_METRICS_LISTEN"])
		}
		drain, err := time.ParseDuration(env["SOLOIST_SHUTDOWN_TIMEOUT"])
		if err != nil {
			t.Errorf("%s: SOLOIST_SHUTDOWN_TIMEOUT=%q: %v", name, env["SOLOIST_SHUTDOWN_TIMEOUT"], err)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || grace <= drain+5*time.Second {
			t.Errorf("%s: stop_grace_period %q must exceed SOLOIST_SHUTDOWN_TIMEOUT %s by some seconds", name, s.StopGracePeriod, drain)
		}
		if !s.Init {
			t.Errorf("%s: init is not true: soloist is PID 1 and does not reap orphans of exec functions", name)
		}
		if env["SOLOIST_NODE_ID"] == "" {
			t.Errorf("%s: no SOLOIST_NODE_ID", name)
		}
	}
	if etcds != 3 {
		t.Errorf("%d etcd members in the compose file, want 3", etcds)
	}
	if nodes < 3 {
		t.Errorf("%d Soloist nodes in the compose file, want 3", nodes)
	}
}
