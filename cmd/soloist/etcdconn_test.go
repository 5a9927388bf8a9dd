package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// testCA is a certificate authority made by the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+"-ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue makes a certificate for 127.0.0.1 (server and client use) and
// returns the certificate and key files.
func (ca *testCA) issue(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLSEtcd starts an embedded etcd that serves clients over TLS with
// the server certificate and requires client certificates of ca.
func startTLSEtcd(t *testing.T, dir string, ca *testCA) string {
	t.Helper()
	serverCert, serverKey := ca.issue(t, dir, "etcd-server")
	return startEtcd(t, dir, &transport.TLSInfo{CertFile: serverCert, KeyFile: serverKey, TrustedCAFile: ca.file, ClientCertAuth: true})
}

// startEtcd starts an embedded etcd in dir on free ports, over TLS if tls
// is set, and returns its client URL. Its bcrypt cost is the lowest: this
// test binary runs with the race detector, which makes the default cost
// take seconds per authentication.
func startEtcd(t *testing.T, dir string, tls *transport.TLSInfo) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	cfg.BcryptCost = 4 // bcrypt.MinCost
	cu := url.URL{Scheme: "http", Host: freeAddr(t)}
	if tls != nil {
		cu.Scheme = "https"
		cfg.ClientTLSInfo = *tls
	}
	pu := url.URL{Scheme: "http", Host: freeAddr(t)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close) // after the test's clients' Close, registered later
	select {
	case <-srv.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready within 30s")
	}
	return cu.String()
}

// errorLine is the last line serve printed that is not a JSON log line:
// its error.
func errorLine(logs string) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.HasPrefix(lines[i], "{") {
			return lines[i]
		}
	}
	return ""
}

// soloist serve against an etcd with TLS and client certificates: the
// right certificates work; each wrong one stops serve with exit code 3 and
// a message that names the cause, after warnings while it retries.
func TestServeEtcdTLS(t *testing.T) {
	t.Parallel()
	soloistBinary(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "good")
	other := newTestCA(t, dir, "other")
	endpoint := startTLSEtcd(t, dir, ca)
	clientCert, clientKey := ca.issue(t, dir, "soloist")
	otherCert, otherKey := other.issue(t, dir, "stranger")

	t.Run("good", func(t *testing.T) {
		t.Parallel()
		srv := startServe(t, "--etcd-endpoints", endpoint, "--etcd-cafile", ca.file, "--etcd-certfile", clientCert, "--etcd-keyfile", clientKey, "--demo")
		srv.waitReady()
		if out, errOut, code := srv.cli(nil, "start", "HelloCities", "tls-1"); code != 0 {
			t.Fatalf("start over TLS etcd: exit %d: %s %s", code, out, errOut)
		}
		if code := srv.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		checkLogs(t, srv.logLines())
	})
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no client certificate", []string{"--etcd-cafile", ca.file}, exitUnreachable,
			[]string{"cannot connect to etcd at " + endpoint + " within --etcd-dial-timeout 4s", "requires a client certificate", "--etcd-certfile"}},
		{"client certificate of another CA", []string{"--etcd-cafile", ca.file, "--etcd-certfile", otherCert, "--etcd-keyfile", otherKey}, exitUnreachable,
			[]string{"refused the client certificate (bad certificate)"}},
		{"wrong CA file", []string{"--etcd-cafile", other.file, "--etcd-certfile", clientCert, "--etcd-keyfile", clientKey}, exitUnreachable,
			[]string{"etcd's certificate is not signed by a CA in --etcd-cafile (unknown authority)"}},
		{"no TLS at all", nil, exitUnreachable, []string{"etcd expects TLS there; use https:// endpoints"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ep := endpoint
			if c.args == nil {
				ep = strings.Replace(endpoint, "https://", "http://", 1)
			}
			srv := startServe(t, append([]string{"--etcd-endpoints", ep, "--etcd-dial-timeout", "4s"}, c.args...)...)
			if code := srv.exitCode(30 * time.Second); code != c.code {
				t.Fatalf("exit %d, want %d", code, c.code)
			}
			msg := errorLine(srv.logs.String())
			t.Log(msg)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			wantRetryWarning(t, srv, ep)
			checkLogs(t, srv.logLines())
		})
	}
	t.Run("TLS flags with http://", func(t *testing.T) {
		t.Parallel()
		ep := strings.Replace(endpoint, "https://", "http://", 1)
		srv := startServe(t, "--etcd-endpoints", ep, "--etcd-cafile", ca.file, "--etcd-certfile", clientCert, "--etcd-keyfile", clientKey)
		if code := srv.exitCode(30 * time.Second); code != exitUsage {
			t.Fatalf("exit %d, want %d", code, exitUsage)
		}
		if msg := srv.logs.String(); !strings.Contains(msg, "--etcd-endpoints "+ep+" is plain http://, which the etcd client would use without TLS") {
			t.Errorf("message %q", msg)
		}
	})
}

// wantRetryWarning checks that serve warned, naming the endpoint, while it
// retried.
func wantRetryWarning(t *testing.T, srv *serveProc, endpoint string) {
	t.Helper()
	for _, l := range srv.logLines() {
		var e struct {
			Level, Msg string
			Endpoints  []string
			Error      string
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Level == "WARN" && e.Msg == "cannot connect to etcd yet; retrying" &&
			len(e.Endpoints) == 1 && e.Endpoints[0] == endpoint && e.Error != "" {
			return
		}
	}
	t.Errorf("no warning naming %s while serve retried", endpoint)
}

// Connection refused and a wrong password stop serve with exit code 3 and
// say so.
func TestServeEtcdRefusedAndAuth(t *testing.T) {
	t.Parallel()
	soloistBinary(t)

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ep := "http://" + freeAddr(t) // nothing listens there
		srv := startServe(t, "--etcd-endpoints", ep, "--etcd-dial-timeout", "5s")
		// While it waits for etcd, the process is live and not ready.
		waitFor(t, 4*time.Second, func() bool {
			resp, err := http.Get(srv.url + "/livez")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		resp, err := http.Get(srv.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "connecting to etcd") {
			t.Errorf("/readyz while connecting: %d %s", resp.StatusCode, b)
		}
		if code := srv.exitCode(30 * time.Second); code != exitUnreachable {
			t.Fatalf("exit %d, want %d", code, exitUnreachable)
		}
		if msg := errorLine(srv.logs.String()); !strings.Contains(msg, "within --etcd-dial-timeout 5s") || !strings.Contains(msg, "connection refused") {
			t.Errorf("message %q", msg)
		}
		wantRetryWarning(t, srv, ep)
	})

	endpoint := startEtcd(t, t.TempDir(), nil)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() }) // before the etcd's Close
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "s3cret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, "s3cret\n")
	t.Run("right password", func(t *testing.T) {
		t.Parallel()
		srv := startServe(t, "--etcd-endpoints", endpoint, "--etcd-username", "root", "--etcd-password-file", pw)
		srv.waitReady()
		if code := srv.stop(30 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("prefix-only role, then revoked", func(t *testing.T) {
		t.Parallel()
		root, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Username: "root", Password: "s3cret", Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		const prefix = "/denied/"
		for _, step := range []func() error{
			func() error { _, err := root.RoleAdd(ctx, "soloist"); return err },
			func() error {
				_, err := root.RoleGrantPermission(ctx, "soloist", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
				return err
			},
			func() error { _, err := root.UserAdd(ctx, "soloist", "s3cret"); return err },
			func() error { _, err := root.UserGrantRole(ctx, "soloist", "soloist"); return err },
		} {
			if err := step(); err != nil {
				t.Fatalf("set up the prefix user: %v", err)
			}
		}
		srv := startServe(t, "--demo", "--etcd-endpoints", endpoint, "--etcd-prefix", prefix, "--etcd-username", "soloist", "--etcd-password-file", pw)
		srv.waitReady()
		// Read-write on the prefix is all a node needs: an orchestration
		// starts, runs its activities and completes.
		resp, err := http.Post(srv.url+"/api/orchestrators/HelloCities/granted-1", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start with the prefix grant: %d", resp.StatusCode)
		}
		waitFor(t, 20*time.Second, func() bool {
			resp, err := http.Get(srv.url + "/runtime/webhooks/durabletask/instances/granted-1")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return strings.Contains(string(b), `"runtimeStatus":"Completed"`)
		})
		if _, err := root.RoleRevokePermission(ctx, "soloist", prefix, clientv3.GetPrefixRangeEnd(prefix)); err != nil {
			t.Fatal(err)
		}
		resp, err = http.Post(srv.url+"/api/orchestrators/HelloCities/denied-1", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "grant-permission --prefix=true ROLE readwrite PREFIX") ||
			!strings.Contains(string(b), "permission denied") {
			t.Errorf("start after the grant was revoked: %d %s", resp.StatusCode, b)
		}
		// Revoking the lease needs write permission on its keys too: the
		// drain cannot finish, and the exit says so.
		if code := srv.stop(30 * time.Second); code != 1 || !strings.Contains(errorLine(srv.logs.String()), "permission denied") {
			t.Fatalf("exit %d, want 1 naming the permission; log:\n%s", code, srv.logs.String())
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		srv := startServe(t, "--etcd-endpoints", endpoint, "--etcd-username", "root", "--etcd-password", "wrong", "--etcd-dial-timeout", "4s")
		if code := srv.exitCode(30 * time.Second); code != exitUnreachable {
			t.Fatalf("exit %d, want %d", code, exitUnreachable)
		}
		if msg := errorLine(srv.logs.String()); !strings.Contains(msg, `authentication failed: etcd refused user "root"`) {
			t.Errorf("message %q", msg)
		}
		wantRetryWarning(t, srv, endpoint)
	})
}
