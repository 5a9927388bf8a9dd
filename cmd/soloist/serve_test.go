package main

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/soloist-dev/soloist/orchestrator"
)

func mapEnv(kv ...string) env {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return newEnv(func(k string) string { return m[k] })
}

func TestServeDefaults(t *testing.T) {
	t.Parallel()
	o, err := parseServe(nil, mapEnv())
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen != "127.0.0.1:8080" || o.DataDir != "./soloist-data" || o.EmbeddedClientURL != "http://127.0.0.1:2379" ||
		o.EtcdPrefix != "/soloist/" || o.LeaseTTL != 10*time.Second || o.MaxConcurrent != 0 ||
		o.MaxPayload != 256<<10 || o.LogFormat != "auto" || o.LogLevel != "info" || o.ShutdownTimeout != 25*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	if o.EtcdMaxRequest != 1536<<10 || o.EtcdMaxTxnOps != 128 || o.EmbeddedQuota != 2<<30 || o.EmbeddedRevisions != 10000 ||
		o.Role != "all" || o.Retention != 168*time.Hour || o.Pprof {
		t.Fatalf("defaults of the limits, role, retention and pprof: %+v", o)
	}
	host, _ := os.Hostname()
	if !strings.HasPrefix(o.NodeID, host+"-") || len(o.NodeID) != len(host)+5 {
		t.Fatalf("default node ID %q, want %s-XXXX", o.NodeID, host)
	}
}

func TestServeEnvAndFlagPrecedence(t *testing.T) {
	t.Parallel()
	e := mapEnv(
		"SOLOIST_LISTEN", "127.0.0.1:9000",
		"SOLOIST_NODE_ID", "from-env",
		"SOLOIST_LEASE_TTL", "5s",
		"SOLOIST_MAX_CONCURRENT", "7",
		"SOLOIST_EMBEDDED_ETCD_CLIENT_URL", "http://127.0.0.1:3379",
		"SOLOIST_DEMO", "true",
		"SOLOIST_MAX_PAYLOAD", "1MiB",
	)
	o, err := parseServe([]string{"--node-id", "from-flag", "--lease-ttl=3s"}, e)
	if err != nil {
		t.Fatal(err)
	}
	if o.NodeID != "from-flag" || o.LeaseTTL != 3*time.Second {
		t.Errorf("flags did not beat the environment: node %q, ttl %s", o.NodeID, o.LeaseTTL)
	}
	if o.Listen != "127.0.0.1:9000" || o.MaxConcurrent != 7 || o.EmbeddedClientURL != "http://127.0.0.1:3379" || !o.Demo || o.MaxPayload != 1<<20 {
		t.Errorf("environment not applied: %+v", o)
	}

	_, err = parseServe(nil, mapEnv("SOLOIST_LEASE_TTL", "ten seconds"))
	if err == nil || !strings.Contains(err.Error(), `invalid SOLOIST_LEASE_TTL="ten seconds"`) {
		t.Fatalf("bad variable: %v", err)
	}
}

func TestServeValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	writeFile(t, keys, "k1\n")
	cases := []struct {
		name string
		args []string
		env  []string
		want string // "" means valid
	}{
		{"ttl 2s", []string{"--lease-ttl", "2s"}, nil, ""},
		{"ttl 1s", []string{"--lease-ttl", "1s"}, nil, "invalid --lease-ttl 1s: etcd counts lease TTLs in whole seconds and needs at least 2s"},
		{"ttl fraction", []string{"--lease-ttl", "2500ms"}, nil, "invalid --lease-ttl 2.5s"},
		{"ttl zero", []string{"--lease-ttl", "0s"}, nil, "invalid --lease-ttl"},
		{"ttl env", nil, []string{"SOLOIST_LEASE_TTL", "1s"}, "invalid --lease-ttl 1s"},
		{"max concurrent", []string{"--max-concurrent", "-1"}, nil, "invalid --max-concurrent -1"},
		{"max payload", []string{"--max-payload", "0"}, nil, "invalid --max-payload"},
		{"max payload unit", []string{"--max-payload", "lots"}, nil, `invalid argument "lots" for "--max-payload"`},
		{"max payload env", nil, []string{"SOLOIST_MAX_PAYLOAD", "lots"}, `invalid SOLOIST_MAX_PAYLOAD="lots"`},
		{"request timeout", []string{"--request-timeout", "0s"}, nil, "invalid --request-timeout"},
		{"dial timeout", []string{"--etcd-dial-timeout", "-1s"}, nil, "invalid --etcd-dial-timeout"},
		{"max connections", []string{"--max-connections", "-1"}, nil, "invalid --max-connections -1"},
		{"no connection limit", []string{"--max-connections", "0"}, nil, ""},
		{"metrics listen", []string{"--metrics-listen", "9090"}, nil, `invalid --metrics-listen "9090"`},
		{"metrics on listen", []string{"--metrics-listen", "127.0.0.1:8080"}, nil, "give the metrics listener its own port"},
		{"metrics public", []string{"--metrics-listen", "0.0.0.0:9090"}, nil, ""},
		{"public url", []string{"--public-url", "https://soloist.example.com/base/"}, nil, ""},
		{"public url relative", []string{"--public-url", "soloist.example.com"}, nil, `invalid --public-url "soloist.example.com"`},
		{"public url query", []string{"--public-url", "https://h/?code=x"}, nil, "invalid --public-url"},
		{"tls with http", []string{"--etcd-endpoints", "http://e:2379", "--etcd-cafile", "ca.pem"}, nil, "--etcd-endpoints http://e:2379 is plain http://"},
		{"tls with host:port", []string{"--etcd-endpoints", "e:2379", "--etcd-cafile", "ca.pem"}, nil, ""},
		{"mixed schemes", []string{"--etcd-endpoints", "http://e1:2379,https://e2:2379"}, nil, "mixes http:// (http://e1:2379) and https:// (https://e2:2379)"},
		{"bad scheme", []string{"--etcd-endpoints", "ftp://e1:2379"}, nil, `invalid --etcd-endpoints "ftp://e1:2379"`},
		{"shutdown timeout", []string{"--shutdown-timeout", "0s"}, nil, "invalid --shutdown-timeout"},
		{"log format", []string{"--log-format", "xml"}, nil, `invalid --log-format "xml": use auto, text or json`},
		{"log level", []string{"--log-level", "loud"}, nil, `invalid --log-level "loud"`},
		{"all interfaces", []string{"--listen", ":8080"}, nil, "refusing to serve on --listen :8080 without authentication"},
		{"public ip", []string{"--listen", "0.0.0.0:8080"}, nil, "pass --api-keys-file FILE"},
		{"host name", []string{"--listen", "example.com:8080"}, nil, "--insecure-no-auth"},
		{"public via env", nil, []string{"SOLOIST_LISTEN", "10.1.2.3:80"}, "refusing to serve"},
		{"public with keys", []string{"--listen", "0.0.0.0:8080", "--api-keys-file", keys}, nil, ""},
		{"public insecure", []string{"--listen", "0.0.0.0:8080", "--insecure-no-auth"}, nil, ""},
		{"public insecure env", []string{"--listen", "0.0.0.0:8080"}, []string{"SOLOIST_INSECURE_NO_AUTH", "true"}, ""},
		{"localhost", []string{"--listen", "localhost:8080"}, nil, ""},
		{"ipv6 loopback", []string{"--listen", "[::1]:8080"}, nil, ""},
		{"bad listen", []string{"--listen", "8080"}, nil, `invalid --listen "8080"`},
		{"cert without key", []string{"--etcd-endpoints", "e:2379", "--etcd-certfile", "c.pem"}, nil, "--etcd-certfile and --etcd-keyfile go together"},
		{"both passwords", []string{"--etcd-endpoints", "e:2379", "--etcd-username", "u", "--etcd-password", "p", "--etcd-password-file", "f"}, nil, "not both"},
		{"password no user", []string{"--etcd-endpoints", "e:2379", "--etcd-password", "p"}, nil, "needs --etcd-username"},
		{"tls on embedded", []string{"--etcd-cafile", "ca.pem"}, nil, "for an external etcd"},
		{"bad node id", []string{"--node-id", "a/b"}, nil, `invalid --node-id "a/b"`},
		{"payload 1.4MB", []string{"--max-payload", "1.4MB"}, nil, ""},
		{"payload 8MiB", []string{"--max-payload", "8MiB"}, nil,
			fmt.Sprintf("--max-payload 8388608 bytes cannot fit etcd's request limit of 1572864 bytes (--etcd-max-request-bytes, etcd's --max-request-bytes): the largest payload that fits is %d bytes",
				orchestrator.MaxPayloadFor(orchestrator.Limits{}))},
		{"payload fits a raised limit", []string{"--max-payload", "8MiB", "--etcd-max-request-bytes", "10MiB"}, nil, ""},
		{"payload env", nil, []string{"SOLOIST_MAX_PAYLOAD", "2MiB"}, "--max-payload 2097152 bytes cannot fit"},
		{"request bytes zero", []string{"--etcd-max-request-bytes", "0"}, nil, "invalid --etcd-max-request-bytes 0"},
		{"request bytes small", []string{"--etcd-max-request-bytes", "100KiB", "--max-payload", "1KiB"}, nil, "--max-request-bytes of 102400 is too small"},
		{"txn ops zero", []string{"--etcd-max-txn-ops", "0"}, nil, "invalid --etcd-max-txn-ops 0"},
		{"txn ops small", []string{"--etcd-max-txn-ops", "8"}, nil, "etcd's --max-txn-ops of 8 is too small"},
		{"txn ops env", nil, []string{"SOLOIST_ETCD_MAX_TXN_OPS", "1024"}, ""},
		{"quota zero", []string{"--embedded-etcd-quota", "0"}, nil, "invalid --embedded-etcd-quota 0"},
		{"quota 8GiB", []string{"--embedded-etcd-quota", "8GiB"}, nil, ""},
		{"no compaction", []string{"--embedded-etcd-compaction-revisions", "0"}, nil, "invalid --embedded-etcd-compaction-revisions 0"},
		{"role runner", []string{"--role", "runner"}, nil, ""},
		{"role api env", nil, []string{"SOLOIST_ROLE", "api"}, ""},
		{"role bad", []string{"--role", "worker"}, nil, `invalid --role "worker": use all`},
		{"role empty", []string{"--role", ""}, nil, `invalid --role ""`},
		{"retention forever", []string{"--retention", "0"}, nil, ""},
		{"retention negative", []string{"--retention", "-1h"}, nil, "invalid --retention -1h0m0s"},
		{"pprof", []string{"--pprof", "--metrics-listen", "127.0.0.1:9090"}, nil, ""},
		{"pprof without metrics listener", []string{"--pprof"}, nil, "--pprof serves /debug/pprof/ on --metrics-listen only"},
		{"positional", []string{"extra"}, nil, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseServe(c.args, mapEnv(c.env...))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if err != nil && exitCode(err) != exitUsage {
				t.Fatalf("error %T has exit code %d, want a usage error (2)", err, exitCode(err))
			}
		})
	}
}

func TestServeHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"serve", "-h"}, {"serve", "--help"}, {"help", "serve"}} {
		out, errOut, code := runCLI(t, "", nil, args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
		}
		for _, w := range []string{"--etcd-endpoints", "[$SOLOIST_ETCD_ENDPOINTS]", "--lease-ttl TTL", "(default 10s)", "--max-payload size",
			"(default 256KiB)", "--request-timeout", "--max-connections", "--metrics-listen", "--public-url", "--etcd-dial-timeout",
			"--etcd-max-request-bytes size", "(default 1536KiB)", "--etcd-max-txn-ops operations", "(default 128)",
			"--embedded-etcd-quota size", "(default 2GiB)", "--embedded-etcd-compaction-revisions revisions", "(default 10000)",
			"--role role", `(default "all")`, "--retention duration", "(default 168h0m0s)", "--pprof"} {
			if !strings.Contains(out, w) {
				t.Errorf("%q: usage lacks %q:\n%s", args, w, out)
			}
		}
	}
}

// Help goes to stdout, and no flag's default is printed twice.
func TestHelpDefaults(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"", "serve", "start", "status", "list", "wait", "terminate", "suspend", "resume", "raise", "restart", "purge", "version", "completion"} {
		args := []string{"--help"}
		if cmd != "" {
			args = []string{cmd, "-h"}
		}
		out, errOut, code := runCLI(t, "", nil, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Fatalf("%q: exit %d, stderr %q, stdout %q", args, code, errOut, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Count(strings.ToLower(l), "default") > 1 {
				t.Errorf("%q: a default twice: %q", args, l)
			}
		}
	}
}

func TestEtcdConfig(t *testing.T) {
	t.Parallel()
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, "s3cret\n")
	o, err := parseServe([]string{"--etcd-endpoints", " https://e1:2379, e2:2379 ,", "--etcd-username", "soloist", "--etcd-password-file", pw}, mapEnv())
	if err != nil {
		t.Fatal(err)
	}
	target, err := o.etcdConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := target.cfg
	if strings.Join(cfg.Endpoints, ",") != "https://e1:2379,e2:2379" || cfg.Username != "soloist" || cfg.Password != "s3cret" || cfg.TLS == nil {
		t.Fatalf("etcd config: endpoints %q user %q password %q tls %v", cfg.Endpoints, cfg.Username, cfg.Password, cfg.TLS != nil)
	}
	o.EtcdCAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := o.etcdConfig(); err == nil || !strings.Contains(err.Error(), "etcd TLS") {
		t.Fatalf("missing CA file: %v", err)
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	// go-humanize: KiB and MiB are powers of 1024, KB, MB, K and M of 1000.
	for in, want := range map[string]int64{"100": 100, "256KiB": 256 << 10, "256 KiB": 256 << 10, "1MiB": 1 << 20, "1.5MiB": 3 << 19,
		"2mb": 2_000_000, "4k": 4000, "10B": 10, " 1GiB ": 1 << 30, "1TiB": 1 << 40} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "lots", "2TiB", "1 furlong"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	b := byteSize(256 << 10)
	if b.String() != "256KiB" {
		t.Errorf("String() = %q", b.String())
	}
	if b := byteSize(1000); b.String() != "1000" {
		t.Errorf("String() = %q", b.String())
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.2:1": true, "localhost:80": true, "[::1]:80": true,
		":8080": false, "0.0.0.0:80": false, "[::]:80": false, "192.168.1.1:80": false, "myhost:80": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// --metrics-listen serves /metrics without keys while the API keeps them;
// --public-url and --no-code-in-urls shape the URLs of answers.
func TestServeMetricsListenerAndPublicURL(t *testing.T) {
	t.Parallel()
	keys := filepath.Join(t.TempDir(), "keys")
	writeFile(t, keys, "k1\n")
	metricsAddr := freeAddr(t)
	srv := startServe(t, "--demo", "--api-keys-file", keys, "--metrics-listen", metricsAddr,
		"--public-url", "https://soloist.example.com/", "--no-code-in-urls")
	srv.waitReady()

	get := func(url string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + metricsAddr + "/metrics"); code != 200 || !strings.Contains(body, "soloist_build_info{") || !strings.Contains(body, "soloist_etcd_session_up 1") {
		t.Fatalf("--metrics-listen /metrics without a key: %d\n%.500s", code, body)
	}
	if code, _ := get(srv.url + "/metrics"); code != http.StatusUnauthorized {
		t.Fatalf("/metrics on --listen without a key: %d, want 401", code)
	}
	if code, _ := get(srv.url+"/metrics", "Authorization", "Bearer k1"); code != 200 {
		t.Fatalf("/metrics on --listen with a key: %d", code)
	}
	if code, body := get("http://" + metricsAddr + "/runtime/webhooks/durabletask/instances"); code != 404 || !strings.Contains(body, "serves GET /metrics only") {
		t.Fatalf("the API on --metrics-listen: %d %s", code, body)
	}
	// A scraper that hangs up at once.
	for range 5 {
		c := rawRequest(t, metricsAddr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		c.Close()
	}

	out, errOut, code := srv.cli([]string{"SOLOIST_API_KEY=k1"}, "start", "HelloCities", "pub-1", "-o", "json")
	if code != 0 {
		t.Fatalf("start: %d %s", code, errOut)
	}
	var cs struct {
		StatusQueryGetURI string `json:"statusQueryGetUri"`
	}
	decode(t, out, &cs)
	if cs.StatusQueryGetURI != "https://soloist.example.com/runtime/webhooks/durabletask/instances/pub-1" {
		t.Fatalf("statusQueryGetUri %q, want it under --public-url", cs.StatusQueryGetURI)
	}
	req, _ := http.NewRequest("POST", srv.url+"/api/orchestrators/HelloCities/pub-2?code=k1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || strings.Contains(string(b), "code=") || strings.Contains(resp.Header.Get("Location"), "code=") {
		t.Fatalf("start with ?code= and --no-code-in-urls: %d %s, Location %q", resp.StatusCode, b, resp.Header.Get("Location"))
	}
	if code := srv.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	checkLogs(t, srv.logLines())
}

// Every SOLOIST_ variable the deploy files and the documentation (README.md,
// docs/*.md) set is a flag of
// serve (or of the client verbs).
func TestDeployVariablesAreFlags(t *testing.T) {
	t.Parallel()
	known := map[string]bool{"SOLOIST_SERVER": true, "SOLOIST_API_KEY": true}
	flags := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addServeFlags(flags, &serveOptions{})
	flags.VisitAll(func(f *pflag.Flag) { known[envName(f.Name)] = true })
	// Not flags: the compose file's substitution variables (images and
	// host ports) and what the Docker tests read.
	for _, v := range []string{"SOLOIST_IMAGE", "SOLOIST_ETCD_IMAGE", "SOLOIST_PROMETHEUS_IMAGE",
		"SOLOIST_PORT", "SOLOIST_ETCD_PORT", "SOLOIST_PROMETHEUS_PORT", "SOLOIST_REQUIRE_DOCKER"} {
		known[v] = true
	}
	// Not flags: what exec functions get.
	for _, v := range []string{"SOLOIST_INSTANCE_ID", "SOLOIST_EXECUTION_ID", "SOLOIST_FUNCTION", "SOLOIST_FENCING_TOKEN"} {
		known[v] = true
	}
	re := regexp.MustCompile(`SOLOIST_[A-Z][A-Z_]*[A-Z]`)
	var files []string
	_ = filepath.WalkDir("../../deploy", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) < 3 {
		t.Fatalf("docs/*.md: %v %v", docs, err)
	}
	files = append(files, "../../README.md")
	files = append(files, docs...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range re.FindAllString(string(b), -1) {
			if !known[v] {
				t.Errorf("%s sets %s, which is no flag of soloist serve", f, v)
			}
		}
	}
}
