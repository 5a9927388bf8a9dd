package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// heartbeat is how often an idle stream sends a comment, so that proxies
// and the browser keep it, and the server's write deadline moves on.
const heartbeat = 15 * time.Second

// stream serves the node's watch as Server-Sent Events: one "change" event
// per change (kind, id, status, holder, revision; kind "workers" when the
// gRPC workers connected to this node changed), "reset" when the node
// listed again or this stream fell behind (then the stream ends and the
// browser reads again and reconnects). The page reads it with fetch() so
// that the key travels in a header, never in the URL.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	ch, unsub := d.cfg.Node.Subscribe(1024)
	defer unsub()
	var workers <-chan struct{} // nil, never ready, without a gRPC listener
	if d.cfg.Workers != nil {
		workers = d.cfg.Workers.WorkersChanged()
	}
	extend := func() { _ = rc.SetWriteDeadline(time.Now().Add(2 * heartbeat)) }
	extend()
	live := "true"
	if !d.cfg.Node.Watches() {
		live = "false"
	}
	fmt.Fprintf(w, "retry: 1000\nevent: hello\ndata: {\"live\":%s}\n\n", live)
	if rc.Flush() != nil {
		return
	}
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-workers:
			extend()
			workers = d.cfg.Workers.WorkersChanged()
			if _, err := fmt.Fprint(w, "event: change\ndata: {\"kind\":\"workers\"}\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-d.cfg.Stopping:
			return
		case <-d.cfg.Node.Drained():
			return
		case <-t.C:
			extend()
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case c, ok := <-ch:
			extend()
			if !ok {
				fmt.Fprint(w, "event: reset\ndata: {}\n\n")
				_ = rc.Flush()
				return
			}
			b, _ := json.Marshal(c)
			if _, err := fmt.Fprintf(w, "event: change\ndata: %s\n\n", b); err != nil {
				return
			}
			// Send what else is ready in the same flush.
			for more := true; more; {
				select {
				case c, ok := <-ch:
					if !ok {
						more = false
						break
					}
					b, _ := json.Marshal(c)
					fmt.Fprintf(w, "event: change\ndata: %s\n\n", b)
				default:
					more = false
				}
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}
