package leasetest

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestProxyStrand: a stranded client sees its connection cut at once, and
// what it sent, held by DelayTx, still reaches the upstream afterwards.
func TestProxyStrand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 7)
		_, _ = io.ReadFull(c, b)
		_, _ = c.Write([]byte("reply"))
		got <- string(b)
	}()
	p, err := StartProxy(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p.DelayTx(300 * time.Millisecond)
	sent := time.Now()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the proxy holds it
	p.DelayTx(0)
	if n := p.Strand(); n != 1 {
		t.Fatalf("Strand cut %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatal("the stranded client read a reply")
	}
	if cut := time.Since(sent); cut > 250*time.Millisecond {
		t.Errorf("the client saw its connection end after %s, before the held request was due", cut)
	}
	select {
	case b := <-got:
		if b != "request" {
			t.Errorf("upstream got %q, want the held request", b)
		}
		if d := time.Since(sent); d < 300*time.Millisecond {
			t.Errorf("upstream got the request after %s, before it was due", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the held request never reached the upstream")
	}
}
