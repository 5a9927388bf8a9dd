package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// root is the repository's root, from this package's directory.
const root = "../.."

// tool finds a command: the path in the variable env if it is set (then it
// must exist), else name on PATH; without it the test skips, saying how to
// get it.
func tool(t *testing.T, env, name, how string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not available (not on PATH, %s not set), so this test does not run; %s", name, env, how)
	}
	return p
}

// run runs a command in dir and returns its combined output, failing the
// test if it does not exit 0.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	shown := filepath.Base(name) + " " + strings.Join(args, " ")
	if err != nil {
		t.Fatalf("%s (in %s): %v\n%s", shown, dir, err, out.String())
	}
	t.Logf("%s:\n%s", shown, out.String())
	return out.String()
}
