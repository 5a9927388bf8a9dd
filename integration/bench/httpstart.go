package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// starter sends singleton starts to the nodes' HTTP API, keeping
// connections alive (up to conns per node).
type starter struct {
	tr     *http.Transport
	client *http.Client
}

func newStarter(conns int) *starter {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &starter{tr: tr, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (s *starter) close() { s.tr.CloseIdleConnections() }

// start sends POST {base}/api/orchestrators/{function}/{id} with body (nil:
// an empty body) and returns the status code and, unless it is 202, the
// start of the answer.
func (s *starter) start(ctx context.Context, base, function, id string, body []byte) (int, string, error) {
	u := base + "/api/orchestrators/" + url.PathEscape(function) + "/" + url.PathEscape(id)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var snippet string
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		snippet = string(bytes.TrimSpace(b))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, snippet, nil
}

// startLoad is the outcome of a closed-loop start load.
type startLoad struct {
	win      window
	ok       int             // 202s that returned inside the window
	failed   map[string]int  // other outcomes inside the window, by status or error
	lat      []time.Duration // latencies of those 202s
	example  string          // one failed answer, for the notes
	perNode  map[string]int  // 202s inside the window by node URL
	inflight int             // workers
}

// runStartLoad runs c workers, each sending one start at a time to the
// nodes in turn (worker w's i-th request goes to node (w+i) mod n) under
// fresh IDs, for warmup + d. Only requests that return inside the window
// [begin+warmup, begin+warmup+d) count.
func runStartLoad(ctx context.Context, s *starter, urls []string, c int, warmup, d time.Duration, idPrefix string) startLoad {
	begin := time.Now()
	win := window{from: begin.Add(warmup), to: begin.Add(warmup + d)}
	type part struct {
		ok      int
		failed  map[string]int
		lat     []time.Duration
		example string
		perNode map[string]int
	}
	parts := make([]part, c)
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &parts[w]
			p.failed, p.perNode = map[string]int{}, map[string]int{}
			for i := 0; time.Now().Before(win.to) && ctx.Err() == nil; i++ {
				base := urls[(w+i)%len(urls)]
				id := fmt.Sprintf("%s-%d-%d", idPrefix, w, i)
				t0 := time.Now()
				code, snippet, err := s.start(ctx, base, "HelloCities", id, nil)
				t1 := time.Now()
				if !win.contains(t1) {
					continue
				}
				switch {
				case err != nil:
					p.failed["error"]++
					p.example = err.Error()
					time.Sleep(10 * time.Millisecond) // a node that is down answers at once
				case code == http.StatusAccepted:
					p.ok++
					p.lat = append(p.lat, t1.Sub(t0))
					p.perNode[base]++
				default:
					p.failed[fmt.Sprint(code)]++
					p.example = fmt.Sprintf("%d %s", code, snippet)
				}
			}
		}()
	}
	wg.Wait()
	out := startLoad{win: win, failed: map[string]int{}, perNode: map[string]int{}, inflight: c}
	for _, p := range parts {
		out.ok += p.ok
		out.lat = append(out.lat, p.lat...)
		for k, v := range p.failed {
			out.failed[k] += v
		}
		for k, v := range p.perNode {
			out.perNode[k] += v
		}
		if p.example != "" {
			out.example = p.example
		}
	}
	return out
}

// failures sums the failed outcomes.
func (l startLoad) failures() int {
	n := 0
	for _, v := range l.failed {
		n += v
	}
	return n
}

// startMany starts function under every ID through base, c at a time. A
// start that fails with a 5xx or a transport error is sent again (up to 3
// times); a 409 after such a retry means the first attempt had committed.
func startMany(ctx context.Context, s *starter, base string, c int, function string, body []byte, ids []string) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(c, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if err := startOne(ctx, s, base, function, body, ids[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func startOne(ctx context.Context, s *starter, base, function string, body []byte, id string) error {
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		code, snippet, err := s.start(ctx, base, function, id, body)
		switch {
		case err != nil:
			last = err.Error()
		case code == http.StatusAccepted:
			return nil
		case code == http.StatusConflict && attempt > 0:
			return nil
		case code >= 500:
			last = fmt.Sprintf("%d %s", code, snippet)
		default:
			return fmt.Errorf("start %s %s: %d %s", function, id, code, snippet)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("start %s %s: %s (3 attempts)", function, id, last)
}
