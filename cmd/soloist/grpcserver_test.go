package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestGRPCListenFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		addr string // the address served, "" off
		err  string
	}{
		{"embedded default", nil, defaultGRPCListen, ""},
		{"external etcd default", []string{"--etcd-endpoints", "http://127.0.0.1:2379"}, "", ""},
		{"external etcd explicit", []string{"--etcd-endpoints", "http://127.0.0.1:2379", "--grpc-listen", "127.0.0.1:5001"}, "127.0.0.1:5001", ""},
		{"off", []string{"--grpc-listen", "off"}, "", ""},
		{"bad address", []string{"--grpc-listen", "nope"}, "", "invalid --grpc-listen"},
		{"same as listen", []string{"--grpc-listen", "127.0.0.1:8080"}, "", "its own port"},
		{"public without keys", []string{"--grpc-listen", "0.0.0.0:4001"}, "", "without authentication"},
		{"cert without key", []string{"--grpc-certfile", "c.pem"}, "", "go together"},
		{"client CA without TLS", []string{"--grpc-client-cafile", "ca.pem"}, "", "needs --grpc-certfile"},
		{"TLS while off", []string{"--grpc-listen", "off", "--grpc-certfile", "c.pem", "--grpc-keyfile", "k.pem"}, "", "which is off"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseServe(append([]string{"--data-dir", t.TempDir()}, c.args...), mapEnv())
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, want an error containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := o.grpcAddress(); got != c.addr {
				t.Fatalf("address %q, want %q", got, c.addr)
			}
		})
	}
}

// rawBytes is a message as raw bytes, for calls without the generated
// stubs (internal to scheduler/sidecar).
type rawBytes []byte

type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawBytes))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawBytes) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

func TestServeGRPC(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("secret-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startServe(t, "--api-keys-file", keys, "--grpc-listen", addr)
	p.waitReady()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(key string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if key != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
		}
		// Hello: an empty message in, an empty message out.
		return conn.Invoke(ctx, "/TaskHubSidecarService/Hello", &rawBytes{}, new(rawBytes), grpc.ForceCodecV2(rawCodec{}))
	}
	if err := call(""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Hello without a key: %v", err)
	}
	if err := call("secret-key"); err != nil {
		t.Fatalf("Hello with the key: %v", err)
	}
	// A worker's GetWorkItems stream (an empty request: no filters) shows
	// on the dashboard's cluster page, and goes from it when it ends; the
	// dashboard's event stream says so as it happens.
	sreq, _ := http.NewRequest("GET", p.url+"/ui/api/stream", nil)
	sreq.Header.Set("Authorization", "Bearer secret-key")
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil || sresp.StatusCode != http.StatusOK {
		t.Fatalf("the dashboard's event stream: %v %v", err, sresp)
	}
	defer sresp.Body.Close()
	workerEvents := make(chan struct{}, 4)
	go func() {
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"kind":"workers"`) {
				workerEvents <- struct{}{}
			}
		}
	}()
	workerEvent := func(what string) {
		t.Helper()
		select {
		case <-workerEvents:
		case <-time.After(10 * time.Second):
			t.Fatalf("no workers event on the dashboard's stream within 10 s of %s", what)
		}
	}
	wctx, endWorker := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer secret-key"))
	defer endWorker()
	stream, err := conn.NewStream(wctx, &grpc.StreamDesc{ServerStreams: true}, "/TaskHubSidecarService/GetWorkItems", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&rawBytes{}); err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	workerEvent("a worker connecting")
	cluster := func() string {
		req, _ := http.NewRequest("GET", p.url+"/ui/f/cluster", nil)
		req.Header.Set("Authorization", "Bearer secret-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitFor(t, 10*time.Second, func() bool {
		b := cluster()
		return strings.Contains(b, `data-worker="1"`) && strings.Contains(b, "any (no filter)") && strings.Contains(b, "127.0.0.1:")
	})
	endWorker()
	workerEvent("a worker going")
	waitFor(t, 10*time.Second, func() bool {
		b := cluster()
		return !strings.Contains(b, "data-worker") && strings.Contains(b, "no worker connected")
	})
	logged := false
	for _, l := range p.logLines() {
		logged = logged || (strings.Contains(l, "Durable Task sidecar gRPC service") && strings.Contains(l, `"grpc_listen":"`+addr+`"`))
	}
	if !logged {
		t.Fatal("no log line names the gRPC listener")
	}
	if code := p.stop(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if err := call("secret-key"); status.Code(err) != codes.Unavailable {
		t.Fatalf("Hello after the drain: %v", err)
	}
}

func TestServeGRPCMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "grpc")
	serverCert, serverKey := ca.issue(t, dir, "server")
	clientCert, clientKey := ca.issue(t, dir, "client")
	addr := freeAddr(t)
	p := startServe(t, "--grpc-listen", addr, "--grpc-certfile", serverCert, "--grpc-keyfile", serverKey, "--grpc-client-cafile", ca.file)
	p.waitReady()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	hello := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return conn.Invoke(ctx, "/TaskHubSidecarService/Hello", &rawBytes{}, new(rawBytes), grpc.ForceCodecV2(rawCodec{}))
	}
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := hello(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})); err != nil {
		t.Fatalf("Hello over mTLS: %v", err)
	}
	if err := hello(credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})); err == nil {
		t.Fatal("Hello without a client certificate succeeded")
	}
	if err := hello(insecure.NewCredentials()); err == nil {
		t.Fatal("Hello in plain text succeeded")
	}
}
