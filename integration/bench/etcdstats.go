package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// etcdReqs counts the unary gRPC requests etcd handled, by method
// (grpc_server_handled_total{grpc_type="unary"}, every grpc_code). Streams
// (Watch, LeaseKeepAlive) are bidi_stream and not counted: their messages
// are not requests of their own.
type etcdReqs map[string]float64

func (c *cluster) etcdReqs(ctx context.Context) (etcdReqs, error) {
	return c.etcdGRPC(ctx, "grpc_server_handled_total", "unary")
}

// etcdStreamMsgs counts the messages etcd received on streams, by method
// (grpc_server_msg_received_total{grpc_type="bidi_stream"}): watch
// creations and cancels on Watch, keepalives on LeaseKeepAlive.
func (c *cluster) etcdStreamMsgs(ctx context.Context) (etcdReqs, error) {
	return c.etcdGRPC(ctx, "grpc_server_msg_received_total", "bidi_stream")
}

func (c *cluster) etcdGRPC(ctx context.Context, metric, grpcType string) (etcdReqs, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := scrape(ctx, c.etcdMetricsURL())
	if err != nil {
		return nil, fmt.Errorf("etcd metrics: %w", err)
	}
	if !s.has(metric) {
		return nil, fmt.Errorf("etcd metrics: no %s at %s", metric, c.etcdMetricsURL())
	}
	return s.by(metric, "grpc_method", map[string]string{"grpc_type": grpcType}), nil
}

// minus is r - before, per method.
func (r etcdReqs) minus(before etcdReqs) etcdReqs {
	out := etcdReqs{}
	for m, v := range r {
		if d := v - before[m]; d != 0 {
			out[m] = d
		}
	}
	return out
}

func (r etcdReqs) total() float64 {
	var t float64
	for _, v := range r {
		t += v
	}
	return t
}

// methods are the methods with a count, the largest first.
func (r etcdReqs) methods() []string {
	var ms []string
	for m, v := range r {
		if v != 0 {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b string) int {
		if r[a] != r[b] {
			if r[a] > r[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return ms
}

// per formats every method's count divided by n: "Txn 7.00, Range 3.00".
func (r etcdReqs) per(n float64) string {
	var parts []string
	for _, m := range r.methods() {
		parts = append(parts, fmt.Sprintf("%s %.2f", m, r[m]/n))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// etcdWatch is etcd's count of watchers and watch streams (the gauges
// etcd_debugging_mvcc_watcher_total and etcd_debugging_mvcc_watch_stream_total).
type etcdWatch struct {
	watchers, streams float64
}

func (c *cluster) etcdWatch(ctx context.Context) (etcdWatch, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := scrape(ctx, c.etcdMetricsURL())
	if err != nil {
		return etcdWatch{}, fmt.Errorf("etcd metrics: %w", err)
	}
	if !s.has("etcd_debugging_mvcc_watcher_total") {
		return etcdWatch{}, fmt.Errorf("etcd metrics: no etcd_debugging_mvcc_watcher_total at %s", c.etcdMetricsURL())
	}
	return etcdWatch{
		watchers: s.sum("etcd_debugging_mvcc_watcher_total", nil),
		streams:  s.sum("etcd_debugging_mvcc_watch_stream_total", nil),
	}, nil
}

// etcdDisk is etcd's WAL fsync and backend commit counters
// (etcd_disk_wal_fsync_duration_seconds, etcd_disk_backend_commit_duration_seconds).
type etcdDisk struct {
	fsyncs, fsyncSecs, commits, commitSecs float64
}

func (c *cluster) etcdDisk(ctx context.Context) (etcdDisk, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := scrape(ctx, c.etcdMetricsURL())
	if err != nil {
		return etcdDisk{}, fmt.Errorf("etcd metrics: %w", err)
	}
	return etcdDisk{
		fsyncs:     s.sum("etcd_disk_wal_fsync_duration_seconds_count", nil),
		fsyncSecs:  s.sum("etcd_disk_wal_fsync_duration_seconds_sum", nil),
		commits:    s.sum("etcd_disk_backend_commit_duration_seconds_count", nil),
		commitSecs: s.sum("etcd_disk_backend_commit_duration_seconds_sum", nil),
	}, nil
}

// note describes the disk work between before and d over secs seconds.
func (d etcdDisk) note(before etcdDisk, secs float64) string {
	n, t := d.fsyncs-before.fsyncs, d.fsyncSecs-before.fsyncSecs
	cn, ct := d.commits-before.commits, d.commitSecs-before.commitSecs
	mean := func(sum, count float64) float64 {
		if count == 0 {
			return 0
		}
		return sum / count * 1000
	}
	return fmt.Sprintf("etcd WAL fsyncs %.0f/s, %.2f ms each on average; backend commits %.0f/s, %.2f ms each",
		n/secs, mean(t, n), cn/secs, mean(ct, cn))
}
