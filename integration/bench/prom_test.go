package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseProm(t *testing.T) {
	in := `# HELP x y
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_handled_total{grpc_code="OK",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1
odd{a="x\"y,}z"} 2.5 1700000000
go_goroutines 12
broken{a="b" 1
`
	s, err := parseProm(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.sum("grpc_server_handled_total", map[string]string{"grpc_type": "unary"}); got != 8 {
		t.Errorf("unary = %v, want 8", got)
	}
	if got := s.by("grpc_server_handled_total", "grpc_method", map[string]string{"grpc_type": "unary"}); got["Txn"] != 8 || len(got) != 1 {
		t.Errorf("by method = %v", got)
	}
	if got := s.sum("odd", map[string]string{"a": `x"y,}z`}); got != 2.5 {
		t.Errorf("escaped label: %v", got)
	}
	if got := s.sum("go_goroutines", nil); got != 12 {
		t.Errorf("go_goroutines = %v", got)
	}
	if s.has("broken") {
		t.Error("an unterminated label set was read")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(d, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(nil, 99); p != 0 {
		t.Errorf("empty p99 = %v", p)
	}
}
