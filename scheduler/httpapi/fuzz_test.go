package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/lease/leasetest"
	"github.com/soloist-dev/soloist/orchestrator"
)

// FuzzStart sends starts with random function names, instance IDs, query
// strings and bodies to the handler on a real etcd: the answer is never a
// 500, always JSON with the code's shape, and a 202 means the instance is
// in etcd with the body as its input.
func FuzzStart(f *testing.F) {
	etcd := leasetest.Start(f)
	client := orchestrator.NewClient(etcd.Client(), orchestrator.ClientConfig{Prefix: "/fuzz/", MaxPayload: 1 << 10})
	reg := prometheus.NewRegistry()
	// A stopping node: a start with timeout answers at once.
	stopped := make(chan struct{})
	close(stopped)
	h, err := New(Config{
		Client:     client,
		Function:   testFunction,
		Stopping:   stopped,
		Gatherer:   reg,
		Registerer: reg,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("hello", "id-1", "", []byte(`{"a":1}`))
	f.Add("hello", "id-1", "conflictPolicy=useExisting", []byte(`"x"`))
	f.Add("hello", "id-1", "conflictPolicy=terminateExisting&reusePolicy=reject", []byte(``))
	f.Add("other", "", "reusePolicy=allow", []byte(`[1,2,3]`))
	f.Add("hello", "a/b", "", []byte(`{`))
	f.Add("hello", "@x", "conflictPolicy=%zz", []byte(`null`))
	f.Add("nope", "id-2", "code=x&conflictPolicy=fail", []byte(strings.Repeat("1", 2000)))
	f.Add("hello", "..", "", []byte("\xff"))
	f.Add("hello", "caf\u00e9 \u2603", "reusePolicy=", []byte(" \n\t"))
	f.Add("other", "v", "version=v1&tag=a:b&timeout=300&scheduledStartTime=2030-01-01T00:00:00Z", []byte(`1`))
	f.Add("hello", "w", "timeout=1&returnInternalServerErrorOnFailure=true&TAG=x:y&tag=x:z", []byte(`2`))
	f.Fuzz(func(t *testing.T, fn, id, query string, body []byte) {
		path := "/api/orchestrators/" + url.PathEscape(fn)
		if id != "" {
			path += "/" + url.PathEscape(id)
		}
		u, err := url.Parse(path)
		if err != nil {
			t.Fatalf("escaped path %q: %v", path, err)
		}
		u.RawQuery = query
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		req.URL, req.RequestURI = u, u.RequestURI()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		code := rec.Code
		allowed := []int{200, 202, 301, 307, 308, 400, 404, 405, 409, 413, 503}
		if !slices.Contains(allowed, code) {
			t.Fatalf("POST %s?%s: status %d; body %s", path, query, code, rec.Body)
		}
		if code/100 == 3 {
			return // the mux redirects to the clean path, as for any request
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("POST %s?%s: %d with Content-Type %q", path, query, code, ct)
		}
		switch code {
		case 200, 202:
			var cs CheckStatus
			if err := json.Unmarshal(rec.Body.Bytes(), &cs); err != nil || cs.ID == "" || cs.StatusQueryGetURI == "" {
				t.Fatalf("POST %s?%s: %d body %s (%v)", path, query, code, rec.Body, err)
			}
			if id != "" && cs.ID != id {
				t.Fatalf("started %q, asked for %q", cs.ID, id)
			}
			if code == 200 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := client.Status(ctx, cs.ID)
			if err != nil {
				t.Fatalf("202 for %q, but its status: %v", cs.ID, err)
			}
			want := bytes.TrimSpace(body)
			if len(want) == 0 {
				want = []byte("null")
			}
			if !jsonSame(st.Input, want) || st.Name != fn {
				t.Fatalf("202 for %q: stored %s input %s, sent %s %q", cs.ID, st.Name, st.Input, fn, body)
			}
		case 409:
			var c ConflictResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil || c.Error == "" || c.ID != id || c.RuntimeStatus == "" {
				t.Fatalf("409 body %s (%v)", rec.Body, err)
			}
		default:
			var e ErrorResponse
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil || strings.TrimSpace(e.Error) == "" {
				t.Fatalf("%d body is not {\"error\": ...}: %s (%v)", code, rec.Body, err)
			}
			if code == 503 {
				t.Logf("503: %s", e.Error) // etcd was slow: allowed, never 500
			}
		}
	})
}

// jsonSame reports whether a and b are the same JSON value.
func jsonSame(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

var _ http.Handler = (*handler)(nil)
