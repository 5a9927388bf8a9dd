package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Effect is one side effect an exec function reported to the sink: the
// soloist-effect helper posts one when it begins, after every step, and
// when it ends (or fails on purpose).
type Effect struct {
	At        time.Duration `json:"at"` // arrival, on the scenario clock
	Instance  string        `json:"instance"`
	Execution string        `json:"execution"`
	Function  string        `json:"function"`
	Token     int64         `json:"token"`
	Req       string        `json:"req"`  // the start request that created the execution
	Kind      string        `json:"kind"` // begin, step, end, fail
	Step      int           `json:"step"`
	PID       int           `json:"pid"`
	// Accepted is the sink's own fencing decision, as a downstream system
	// that checks the token would make it: refused when a larger token was
	// already seen for the instance.
	Accepted bool  `json:"accepted"`
	MaxSeen  int64 `json:"maxSeen"`
}

// Sink is the HTTP server every side effect goes to. It records each
// effect with its arrival time and answers 409 to a token lower than one
// it has seen for the instance (a fencing-aware downstream); the helper
// then exits non-zero.
type Sink struct {
	clock *Clock
	ln    net.Listener
	srv   *http.Server

	mu      sync.Mutex
	effects []Effect
	maxTok  map[string]int64
	pids    map[int]bool
}

// NewSink starts a sink on a free loopback port.
func NewSink(clock *Clock) (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{clock: clock, ln: ln, maxTok: map[string]int64{}, pids: map[int]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /effect", s.post)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is where the helper posts effects.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() + "/effect" }

func (s *Sink) post(w http.ResponseWriter, r *http.Request) {
	at := s.clock.Now()
	var e Effect
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.At = at
	s.mu.Lock()
	e.MaxSeen = s.maxTok[e.Instance]
	e.Accepted = e.Token >= e.MaxSeen
	if e.Accepted {
		s.maxTok[e.Instance] = e.Token
	}
	s.effects = append(s.effects, e)
	s.pids[e.PID] = true
	s.mu.Unlock()
	if !e.Accepted {
		http.Error(w, fmt.Sprintf("stale fencing token %d: %d was seen for %s", e.Token, e.MaxSeen, e.Instance), http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Effects returns every effect recorded so far, in arrival order.
func (s *Sink) Effects() []Effect {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Effect(nil), s.effects...)
}

// Close stops the sink and kills every helper process it heard from that
// is still alive (orphans of killed nodes).
func (s *Sink) Close() {
	s.KillHelpers()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// KillHelpers kills every helper process the sink heard from that still
// runs, and returns how many it killed.
func (s *Sink) KillHelpers() int {
	s.mu.Lock()
	var pids []int
	for pid := range s.pids {
		pids = append(pids, pid)
	}
	s.mu.Unlock()
	n := 0
	for _, pid := range pids {
		if HelperAlive(pid) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// HelperAlive reports whether pid is a running (not zombie) soloist-effect.
func HelperAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "soloist-effect") {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	st := string(stat)
	if i := strings.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) {
		return st[i+2] != 'Z' && st[i+2] != 'X'
	}
	return true
}
