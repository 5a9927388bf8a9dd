package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The soloist binary, built once for every test that runs it.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// soloistBinary builds the binary once; tests that need it skip with -short.
func soloistBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binary with")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "soloist-test-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "soloist")
		built.out, built.err = exec.Command(gobin, "build", "-o", built.bin, ".").CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.bin
}

// removeBinary removes the built binary; TestMain calls it.
func removeBinary() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// serveProc is a running soloist serve.
type serveProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	waitErr error
	listen  string // --listen
	url     string // http://listen
}

// startServe runs soloist serve with an embedded etcd on free ports in a
// temporary directory, JSON logs and a 2s lease TTL; args come after those
// and win. The process is killed when the test ends, if it still runs.
func startServe(t *testing.T, args ...string) *serveProc {
	t.Helper()
	return startServeEnv(t, nil, args...)
}

// startServeEnv is startServe with env ("KEY=value") added to the
// process's environment.
func startServeEnv(t *testing.T, env []string, args ...string) *serveProc {
	t.Helper()
	bin := soloistBinary(t)
	dir := t.TempDir()
	listen := freeAddr(t)
	all := append([]string{"serve",
		"--listen", listen,
		"--embedded-etcd-client-url", "http://" + freeAddr(t),
		"--grpc-listen", freeAddr(t), // not the default 4001: tests run side by side
		"--data-dir", filepath.Join(dir, "data"),
		"--lease-ttl", "2s",
		"--log-format", "json",
	}, args...)
	for i := 0; i+1 < len(all); i++ {
		if all[i] == "--listen" {
			listen = all[i+1] // the last one wins
		}
	}
	p := &serveProc{t: t, cmd: exec.Command(bin, all...), logs: &syncBuffer{}, exited: make(chan struct{}), listen: listen, url: "http://" + listen}
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("soloist serve logs:\n%s", p.logs.String())
		}
	})
	return p
}

// waitReady waits until /readyz answers 200.
func (p *serveProc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("serve exited before it was ready: %v", p.waitErr)
		default:
		}
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatal("serve was not ready (/readyz 200) within 60s")
}

// exitCode waits up to d for the process to exit and returns its code.
func (p *serveProc) exitCode(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("serve still runs after %s", d)
	}
	var xe *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &xe):
		return xe.ExitCode()
	}
	p.t.Fatalf("serve: %v", p.waitErr)
	return -1
}

// stop sends SIGTERM and returns the exit code.
func (p *serveProc) stop(d time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	return p.exitCode(d)
}

// cli runs the binary with SOLOIST_SERVER set to the server.
func (p *serveProc) cli(env []string, args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	cmd := exec.Command(soloistBinary(p.t), args...)
	cmd.Env = append(append(cleanEnv(), "SOLOIST_SERVER="+p.url), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var xe *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &xe):
		code = xe.ExitCode()
	default:
		p.t.Fatalf("soloist %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// logLines are the JSON lines of the logs.
func (p *serveProc) logLines() []string {
	var out []string
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}
