package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The images the Docker tests run, built here from binaries built here:
// nothing is pulled. Each is the "runtime" stage of its Dockerfile in
// deploy/, with "--from=build /out/" read from a context directory that
// holds the files the build stage would have put in /out.
const (
	soloistImage    = "soloist:test"
	etcdImage       = "soloist-etcd:test"
	prometheusImage = "soloist-prometheus:test"

	prometheusVersion = "v0.316.0"
)

// dockerEnv says that Docker tests must run: .ci/run sets it, and then a
// missing engine fails them instead of skipping.
const dockerEnv = "SOLOIST_REQUIRE_DOCKER"

// needDocker returns the docker command, or skips (fails with
// SOLOIST_REQUIRE_DOCKER=1) if there is no engine to talk to.
func needDocker(t *testing.T) string {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv(dockerEnv) == "1" {
			t.Fatalf("%s, and %s=1 says Docker tests must run", msg, dockerEnv)
		}
		t.Skipf("%s, so this Docker test does not run (set %s=1 to make that a failure)", msg, dockerEnv)
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		missing("no docker command on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		missing("no Docker engine answers (docker version: %v: %s)", err, bytes.TrimSpace(out))
	}
	return docker
}

// runtimeStage returns the "FROM scratch AS runtime" stage of a
// Dockerfile, its COPY --from=build /out/X turned into COPY X, so that it
// builds from a context holding the files of /out. Every COPY of the
// stage must come from the build stage: then the image built here has
// the same instructions, in the same order, as the user's.
func runtimeStage(dockerfile []byte) (string, error) {
	var out strings.Builder
	in, copies := false, 0
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	cont := false // a continued line belongs to the instruction before
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		instr := strings.ToUpper(strings.SplitN(trimmed, " ", 2)[0])
		if !cont && instr == "FROM" {
			if in {
				break
			}
			if strings.EqualFold(trimmed, "FROM scratch AS runtime") {
				in = true
				out.WriteString("FROM scratch\n")
			}
			cont = strings.HasSuffix(trimmed, "\\")
			continue
		}
		if in && !cont && instr == "COPY" {
			rest, ok := strings.CutPrefix(trimmed, "COPY --from=build ")
			if !ok {
				return "", fmt.Errorf("runtime stage: %q does not copy from the build stage", trimmed)
			}
			var opts []string
			fields := strings.Fields(rest)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				opts = append(opts, fields[0])
				fields = fields[1:]
			}
			if len(fields) != 2 || !strings.HasPrefix(fields[0], "/out/") {
				return "", fmt.Errorf("runtime stage: %q: want COPY --from=build [--chown=..] /out/FILE DEST", trimmed)
			}
			line = strings.Join(append(append([]string{"COPY"}, opts...), strings.TrimPrefix(fields[0], "/out/"), fields[1]), " ")
			copies++
		}
		if in {
			out.WriteString(line + "\n")
		}
		cont = strings.HasSuffix(trimmed, "\\")
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if !in {
		return "", fmt.Errorf("no line \"FROM scratch AS runtime\"")
	}
	if copies == 0 {
		return "", fmt.Errorf("the runtime stage copies nothing from the build stage")
	}
	return out.String(), nil
}

// image is one image to build: its Dockerfile in deploy/, and the files
// of /out with how to make each.
type image struct {
	tag        string
	dockerfile string
	files      func(t *testing.T, dir string) error
}

var images struct {
	once sync.Once
	err  error
	took time.Duration
}

// buildImages builds soloist:test, soloist-etcd:test and
// soloist-prometheus:test once for the test binary.
func buildImages(t *testing.T, docker string) {
	t.Helper()
	images.once.Do(func() {
		started := time.Now()
		images.err = buildAll(t, docker)
		images.took = time.Since(started)
	})
	if images.err != nil {
		t.Fatalf("building the images: %v", images.err)
	}
	t.Logf("images built in %s", images.took.Round(time.Second))
}

func buildAll(t *testing.T, docker string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	goBuild := func(dir, name, pkg string, ldflags string) error {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = abs
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return nil
	}
	copyFile := func(from, to string) error {
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	}
	dataDir := filepath.Join(abs, "deploy", "data-dir.txt")
	all := []image{
		{soloistImage, "deploy/Dockerfile", func(t *testing.T, dir string) error {
			if err := goBuild(dir, "soloist", "./cmd/soloist", "-s -w -X main.version=test"); err != nil {
				return err
			}
			if err := copyFile(caBundle, filepath.Join(dir, "ca-certificates.crt")); err != nil {
				return fmt.Errorf("the CA roots (Debian's ca-certificates bundle): %w", err)
			}
			return copyFile(dataDir, filepath.Join(dir, "data-dir.txt"))
		}},
		{etcdImage, "deploy/etcd.Dockerfile", func(t *testing.T, dir string) error {
			if err := goBuild(dir, "etcd", "go.etcd.io/etcd/server/v3", "-s -w"); err != nil {
				return err
			}
			if err := goBuild(dir, "etcdctl", "go.etcd.io/etcd/etcdctl/v3", "-s -w"); err != nil {
				return err
			}
			return copyFile(dataDir, filepath.Join(dir, "data-dir.txt"))
		}},
		{prometheusImage, "deploy/prometheus/Dockerfile", func(t *testing.T, dir string) error {
			prom, err := prometheusBinary()
			if err != nil {
				return err
			}
			b, err := os.ReadFile(prom)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "prometheus"), b, 0o755)
		}},
	}
	for _, img := range all {
		src, err := os.ReadFile(filepath.Join(abs, img.dockerfile))
		if err != nil {
			return err
		}
		stage, err := runtimeStage(src)
		if err != nil {
			return fmt.Errorf("%s: %w", img.dockerfile, err)
		}
		dir := t.TempDir()
		if err := img.files(t, dir); err != nil {
			return fmt.Errorf("%s: %w", img.tag, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(stage), 0o644); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, docker, "build", "-q", "--build-arg", "VERSION=test", "-t", img.tag, dir)
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the classic builder: no buildx needed
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("docker build %s (%s's runtime stage): %v\n%s", img.tag, img.dockerfile, err, out)
		}
	}
	return nil
}

// caBundle is Debian's bundle of CA roots, as the golang image has it.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// prometheusBinary finds the prometheus server binary: SOLOIST_PROMETHEUS,
// else the one .ci/run builds into ~/.cache/soloist-tools.
func prometheusBinary() (string, error) {
	if p := os.Getenv("SOLOIST_PROMETHEUS"); p != "" {
		return p, nil
	}
	dir := os.Getenv("SOLOIST_TOOLS_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".cache", "soloist-tools")
	}
	p := filepath.Join(dir, "prometheus-"+prometheusVersion)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no prometheus binary at %s (.ci/run builds it: CGO_ENABLED=0 go install -tags remove_all_sd "+
			"github.com/prometheus/prometheus/cmd/prometheus@%s; or set SOLOIST_PROMETHEUS)", p, prometheusVersion)
	}
	return p, nil
}

// The runtime stage of each Dockerfile of deploy/ is what the Docker tests
// build: it is found, every file in it comes from the build stage's /out,
// and nothing else of the stage changes. (No engine needed.)
func TestDockerfileRuntimeStages(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"deploy/Dockerfile", "deploy/etcd.Dockerfile", "deploy/prometheus/Dockerfile"} {
		src, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		stage, err := runtimeStage(src)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if strings.Contains(stage, "--from=") || strings.Contains(stage, "/out/") {
			t.Errorf("%s: the rewritten stage still copies from the build stage:\n%s", name, stage)
		}
		for _, want := range []string{"USER 65532:65532", "ENTRYPOINT [", "org.opencontainers.image.source="} {
			if !strings.Contains(stage, want) {
				t.Errorf("%s: the runtime stage has no %q (non-root, exec-form entrypoint, OCI labels):\n%s", name, want, stage)
			}
		}
		if strings.Contains(strings.ToUpper(stage), "HEALTHCHECK") {
			t.Errorf("%s: a HEALTHCHECK in the image; the orchestrators' probes check health", name)
		}
	}
	for name, bad := range map[string]string{
		"no runtime stage":   "FROM scratch\nCOPY x /x\n",
		"copy from context":  "FROM golang AS build\nFROM scratch AS runtime\nCOPY soloist /usr/local/bin/soloist\n",
		"copy outside /out":  "FROM golang AS build\nFROM scratch AS runtime\nCOPY --from=build /src/soloist /s\n",
		"nothing from build": "FROM golang AS build\nFROM scratch AS runtime\nUSER 1\n",
	} {
		if _, err := runtimeStage([]byte(bad)); err == nil {
			t.Errorf("%s: runtimeStage took it", name)
		}
	}
	got, err := runtimeStage([]byte("FROM golang AS build\nRUN a \\\n  FROM b\nFROM scratch AS runtime\nCOPY --from=build --chown=1:1 /out/a /b\nUSER 1\nFROM x AS later\nRUN c\n"))
	if want := "FROM scratch\nCOPY --chown=1:1 a /b\nUSER 1\n"; err != nil || got != want {
		t.Errorf("runtimeStage = %q, %v; want %q", got, err, want)
	}
}
