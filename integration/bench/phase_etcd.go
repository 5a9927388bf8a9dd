package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// recordPayload is a value of about the size of an instance record.
func recordPayload() string {
	v := `{"name":"HelloCities","instanceId":"bench-12-345","runtimeStatus":"Pending",` +
		`"input":null,"customStatus":null,"output":null,"createdTime":"2026-01-01T00:00:00.000000000Z",` +
		`"lastUpdatedTime":"2026-01-01T00:00:00.000000000Z","executionId":"0123456789abcdef0123456789abcdef","fencingToken":0,"pad":""}`
	if n := 300 - len(v); n > 0 {
		v = strings.Replace(v, `"pad":""`, `"pad":"`+strings.Repeat("x", n)+`"`, 1)
	}
	return v
}

// phaseEtcd measures etcd's own ceiling: create-if-absent transactions
// on fresh keys from this process.
func phaseEtcd(ctx context.Context, b *bench, r *results) error {
	cfg := b.cfg
	c, err := b.newCluster("etcd", 0, nodeOpts{})
	if err != nil {
		return err
	}
	defer c.close()
	clients := make([]*clientv3.Client, cfg.etcdConns)
	for i := range clients {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcdEndpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		clients[i] = cli
	}
	val := recordPayload()
	b.logf("etcd: %d create-if-absent txns in flight over %d connections, %s warm-up + %s", cfg.c, cfg.etcdConns, cfg.warmup, cfg.etcdDuration)
	cpu := c.cpuWindow(cfg.warmup, cfg.etcdDuration)
	disk0, err := c.etcdDisk(ctx)
	if err != nil {
		return err
	}
	begin := time.Now()
	win := window{from: begin.Add(cfg.warmup), to: begin.Add(cfg.warmup + cfg.etcdDuration)}
	type part struct {
		ok, failed int
		lat        []time.Duration
		err        error
	}
	parts := make([]part, cfg.c)
	var wg sync.WaitGroup
	for w := range cfg.c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, cli := &parts[w], clients[w%len(clients)]
			for i := 0; time.Now().Before(win.to) && ctx.Err() == nil; i++ {
				k := fmt.Sprintf("/bench/txn/%d/%d", w, i)
				t0 := time.Now()
				tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := cli.Txn(tctx).
					If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
					Then(clientv3.OpPut(k, val)).
					Commit()
				cancel()
				t1 := time.Now()
				if !win.contains(t1) {
					continue
				}
				switch {
				case err != nil:
					p.failed++
					p.err = err
				case !resp.Succeeded:
					p.failed++
					p.err = fmt.Errorf("txn on fresh key %s did not succeed", k)
				default:
					p.ok++
					p.lat = append(p.lat, t1.Sub(t0))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	disk1, err := c.etcdDisk(ctx)
	if err != nil {
		return err
	}
	var ok, failed int
	var lat []time.Duration
	var lastErr error
	for _, p := range parts {
		ok += p.ok
		failed += p.failed
		lat = append(lat, p.lat...)
		if p.err != nil {
			lastErr = p.err
		}
	}
	note := fmt.Sprintf("Txn If(CreateRevision(k)==0) Then(Put(k, %d B)), fresh keys, C=%d over %d conns, %s window; 1 member, fsync on",
		len(val), cfg.c, cfg.etcdConns, cfg.etcdDuration)
	r.addNum("etcd", "etcd_txn_per_s", float64(ok)/win.seconds(), f0, note)
	r.addNum("etcd", "etcd_txn_p50_ms", ms1(percentile(lat, 50)), f1, "latency of one txn")
	r.addNum("etcd", "etcd_txn_p99_ms", ms1(percentile(lat, 99)), f1, "")
	cpu(r, "etcd")
	r.note("etcd", "disk", disk1.note(disk0, time.Since(begin).Seconds())+", over warm-up and window")
	if failed > 0 {
		r.addNum("etcd", "etcd_txn_errors", float64(failed), f0, oneLine(fmt.Sprint(lastErr)))
	}
	return nil
}

// ms1 is d in milliseconds as a float.
func ms1(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
