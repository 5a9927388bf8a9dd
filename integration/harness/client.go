package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Outcomes of a recorded operation.
const (
	Started  = "started"  // start: 202
	Conflict = "conflict" // start: 409
	Existing = "existing" // start with useExisting: 200
	OK       = "ok"       // terminate, raise: 202; read: 200 or 202
	Gone     = "gone"     // terminate, raise: 410
	NotFound = "notfound" // 404
	Unknown  = "unknown"  // the request may or may not have taken effect
	NoOp     = "noop"     // the request certainly took no effect
)

// EffectInput is the input of the effect function (soloist-effect).
type EffectInput struct {
	Req           string `json:"req"`
	Steps         int    `json:"steps"`
	StepMs        int    `json:"stepMs"`
	Fail          bool   `json:"fail,omitempty"`
	IgnoreRefusal bool   `json:"ignoreRefusal,omitempty"`
	// Grandchild, if set, has the program start a child of its own that
	// posts "tick" effects until it is killed: "group" leaves it in the
	// program's process group, "setsid" gives it a session of its own.
	Grandchild string `json:"grandchild,omitempty"`
}

// Op is one recorded client operation against a node's HTTP API.
type Op struct {
	Client int
	Node   string
	Kind   string // start, terminate, raise, read
	// Function is a start's function ("effect" unless a scenario starts
	// another).
	Function string
	ID       string
	CP, RP   string // start's policies
	Req      string // start's tag, also in its input
	Call     time.Duration
	Return   time.Duration
	Code     int // HTTP status; 0 if none came back
	Outcome  string
	Err      string
	// Read results.
	Status      string // runtimeStatus
	ExecReq     string // the req tag in the execution's input
	ExecutionID string
	Holder      string
	Token       int64
}

// History is every operation of a scenario's clients.
type History struct {
	mu  sync.Mutex
	ops []Op
}

func (h *History) add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the operations recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// APIClient is one client of the HTTP API whose every call is recorded.
type APIClient struct {
	ID    int
	hist  *History
	clock *Clock
	http  *http.Client
}

// NewClient returns client number id recording into hist. Every request
// gets its own connection, so one to a dead node fails at dial (certainly
// not sent) rather than on a reused connection (unknown).
func NewClient(id int, hist *History, clock *Clock, timeout time.Duration) *APIClient {
	return &APIClient{ID: id, hist: hist, clock: clock, http: &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

const basePath = "/runtime/webhooks/durabletask"

// Start posts a start of the effect function.
func (c *APIClient) Start(ctx context.Context, n *Node, id, cp, rp string, in EffectInput) Op {
	if in.Req == "" {
		in.Req = c.NextReq()
	}
	body, _ := json.Marshal(in)
	return c.start(ctx, n, "effect", id, cp, rp, in.Req, body)
}

// NextReq is a fresh start tag of this client.
func (c *APIClient) NextReq() string { return fmt.Sprintf("c%d-%d", c.ID, nextSeq()) }

// StartFunction posts a start of function fn (a demo orchestration, say)
// whose input is the JSON object in plus the start's tag "req", which the
// function ignores and the checker maps to the execution.
func (c *APIClient) StartFunction(ctx context.Context, n *Node, fn, id, cp, rp string, in map[string]any) Op {
	req := c.NextReq()
	body := withReq(in, req)
	return c.start(ctx, n, fn, id, cp, rp, req, body)
}

func withReq(in map[string]any, req string) []byte {
	m := map[string]any{"req": req}
	for k, v := range in {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *APIClient) start(ctx context.Context, n *Node, fn, id, cp, rp, req string, body []byte) Op {
	q := url.Values{}
	if cp != "" {
		q.Set("conflictPolicy", cp)
	}
	if rp != "" {
		q.Set("reusePolicy", rp)
	}
	u := n.URL() + "/api/orchestrators/" + url.PathEscape(fn) + "/" + url.PathEscape(id)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	op := Op{Client: c.ID, Node: n.ID, Kind: "start", Function: fn, ID: id, CP: cp, RP: rp, Req: req}
	code, resp, err := c.do(ctx, &op, http.MethodPost, u, body)
	op.Outcome = startOutcome(code, resp, err)
	c.hist.add(op)
	return op
}

// startOutcome classifies a start's answer.
func startOutcome(code int, resp []byte, err error) string {
	switch {
	case err != nil:
		return transportOutcome(err)
	case code == http.StatusAccepted:
		return Started
	case code == http.StatusConflict:
		return Conflict
	case code == http.StatusOK:
		return Existing
	case code == http.StatusServiceUnavailable && definitelyNotStarted(resp):
		return NoOp
	case code == http.StatusInsufficientStorage:
		// etcd's NOSPACE alarm: etcd refused the write before applying it.
		return NoOp
	case code == http.StatusBadRequest || code == http.StatusNotFound:
		return NoOp
	}
	return Unknown
}

// definitelyNotStarted recognises the 503s that Soloist gives only before
// or after a start that did not commit.
func definitelyNotStarted(body []byte) bool {
	s := string(body)
	return strings.Contains(s, "not taking starts") || strings.Contains(s, "was not committed") ||
		strings.Contains(s, "races in a row")
}

// Terminate posts a terminate.
func (c *APIClient) Terminate(ctx context.Context, n *Node, id string) Op {
	op := Op{Client: c.ID, Node: n.ID, Kind: "terminate", ID: id}
	code, _, err := c.do(ctx, &op, http.MethodPost, n.URL()+basePath+"/instances/"+url.PathEscape(id)+"/terminate?reason=fault-suite", nil)
	op.Outcome = controlOutcome(code, err)
	c.hist.add(op)
	return op
}

// Raise posts an event.
func (c *APIClient) Raise(ctx context.Context, n *Node, id, event string) Op {
	return c.RaiseData(ctx, n, id, event, map[string]any{"from": "fault-suite"})
}

// RaiseData posts an event with data (as JSON).
func (c *APIClient) RaiseData(ctx context.Context, n *Node, id, event string, data any) Op {
	op := Op{Client: c.ID, Node: n.ID, Kind: "raise", ID: id}
	body, _ := json.Marshal(data)
	code, _, err := c.do(ctx, &op, http.MethodPost, n.URL()+basePath+"/instances/"+url.PathEscape(id)+"/raiseEvent/"+url.PathEscape(event), body)
	op.Outcome = controlOutcome(code, err)
	c.hist.add(op)
	return op
}

// Record adds an operation made by other means (a DirectClient) to the
// history.
func (h *History) Record(op Op) { h.add(op) }

func controlOutcome(code int, err error) string {
	switch {
	case err != nil:
		return transportOutcome(err)
	case code == http.StatusAccepted:
		return OK
	case code == http.StatusGone:
		return Gone
	case code == http.StatusNotFound:
		return NotFound
	case code == http.StatusBadRequest:
		return NoOp
	}
	return Unknown
}

// Read gets an instance's status with its input.
func (c *APIClient) Read(ctx context.Context, n *Node, id string) Op {
	op := Op{Client: c.ID, Node: n.ID, Kind: "read", ID: id}
	code, body, err := c.do(ctx, &op, http.MethodGet, n.URL()+basePath+"/instances/"+url.PathEscape(id)+"?showInput=true", nil)
	switch {
	case err != nil:
		op.Outcome = NoOp // a failed read tells nothing
	case code == http.StatusNotFound:
		op.Outcome = NotFound
	case code == http.StatusOK || code == http.StatusAccepted:
		var st struct {
			RuntimeStatus string          `json:"runtimeStatus"`
			Input         json.RawMessage `json:"input"`
			ExecutionID   string          `json:"executionId"`
			Node          string          `json:"node"`
			FencingToken  int64           `json:"fencingToken"`
		}
		if json.Unmarshal(body, &st) != nil {
			op.Outcome = NoOp
			break
		}
		var in EffectInput
		_ = json.Unmarshal(st.Input, &in)
		op.Outcome, op.Status, op.ExecReq, op.ExecutionID, op.Holder, op.Token = OK, st.RuntimeStatus, in.Req, st.ExecutionID, st.Node, st.FencingToken
	default:
		op.Outcome = NoOp
	}
	c.hist.add(op)
	return op
}

func (c *APIClient) do(ctx context.Context, op *Op, method, u string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	op.Call = c.clock.Now()
	resp, err := c.http.Do(req)
	var b []byte
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		op.Code = resp.StatusCode
	}
	op.Return = c.clock.Now()
	if err != nil {
		op.Err = err.Error()
		return op.Code, b, err
	}
	if op.Code >= 300 {
		op.Err = strings.TrimSpace(string(b))
	}
	return op.Code, b, nil
}

// transportOutcome: a refused connection never reached the node; anything
// else (a timeout, a reset) may have.
func transportOutcome(err error) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return NoOp
	}
	return Unknown
}

// WorkloadOptions shape the racing clients.
type WorkloadOptions struct {
	// Clients is the number of concurrent clients. Defaults to 6.
	Clients int
	// IDs are the instance IDs they race on. Defaults to k0, k1, k2.
	IDs []string
	// Pause is the range of the pause between one client's operations.
	// Defaults to 40-120ms.
	Pause [2]time.Duration
	// Steps and StepMs are the ranges of an execution's steps and step
	// length. Default 1-6 steps of 100-300ms.
	Steps  [2]int
	StepMs [2]int
	// FailRate is the share of executions that fail on purpose. Defaults
	// to 0.15.
	FailRate float64
	// Timeout bounds each request. Defaults to 3s.
	Timeout time.Duration
}

// Workload is a set of clients racing starts (with every policy),
// terminates, raised events and reads over a few IDs on every node.
type Workload struct {
	env    *Env
	opts   WorkloadOptions
	Hist   *History
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartWorkload starts the clients; Stop ends them.
func (e *Env) StartWorkload(hist *History, opts WorkloadOptions) *Workload {
	if opts.Clients == 0 {
		opts.Clients = 6
	}
	if len(opts.IDs) == 0 {
		opts.IDs = []string{"k0", "k1", "k2"}
	}
	if opts.Pause[1] == 0 {
		opts.Pause = [2]time.Duration{40 * time.Millisecond, 120 * time.Millisecond}
	}
	if opts.Steps[1] == 0 {
		opts.Steps = [2]int{1, 6}
	}
	if opts.StepMs[1] == 0 {
		opts.StepMs = [2]int{100, 300}
	}
	if opts.FailRate == 0 {
		opts.FailRate = 0.15
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Workload{env: e, opts: opts, Hist: hist, cancel: cancel}
	for i := 0; i < opts.Clients; i++ {
		c := NewClient(i, hist, e.Clock, opts.Timeout)
		w.wg.Add(1)
		go w.run(ctx, c, rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))))
	}
	return w
}

// Stop ends the clients and waits for their last requests.
func (w *Workload) Stop() {
	w.cancel()
	w.wg.Wait()
}

func between[T int | time.Duration](r *rand.Rand, lo, hi T) T {
	if hi <= lo {
		return lo
	}
	return lo + T(r.Int64N(int64(hi-lo)+1))
}

var (
	conflictPolicies = []string{"", "fail", "useExisting", "terminateExisting"}
	conflictWeights  = []int{6, 4, 5, 1}
	reusePolicies    = []string{"", "allow", "allowFailedOnly", "reject"}
	reuseWeights     = []int{4, 2, 2, 1}
)

func pick(r *rand.Rand, items []string, weights []int) string {
	total := 0
	for _, w := range weights {
		total += w
	}
	x := r.IntN(total)
	for i, w := range weights {
		if x < w {
			return items[i]
		}
		x -= w
	}
	return items[len(items)-1]
}

func (w *Workload) run(ctx context.Context, c *APIClient, r *rand.Rand) {
	defer w.wg.Done()
	for ctx.Err() == nil {
		nodes := w.env.upNodes()
		if len(nodes) > 0 {
			n := nodes[r.IntN(len(nodes))]
			id := w.opts.IDs[r.IntN(len(w.opts.IDs))]
			rctx := context.WithoutCancel(ctx) // the last request finishes
			switch x := r.IntN(100); {
			case x < 60:
				in := EffectInput{
					Steps:  between(r, w.opts.Steps[0], w.opts.Steps[1]),
					StepMs: between(r, w.opts.StepMs[0], w.opts.StepMs[1]),
					Fail:   r.Float64() < w.opts.FailRate,
				}
				c.Start(rctx, n, id, pick(r, conflictPolicies, conflictWeights), pick(r, reusePolicies, reuseWeights), in)
			case x < 62:
				c.Terminate(rctx, n, id)
			case x < 70:
				c.Raise(rctx, n, id, "poke")
			default:
				c.Read(rctx, n, id)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(between(r, w.opts.Pause[0], w.opts.Pause[1])):
		}
	}
}

// upNodes are the nodes a client may address: not known to be stopped.
// Paused and cut nodes are included: clients cannot tell.
func (e *Env) upNodes() []*Node {
	var out []*Node
	for _, n := range e.Nodes {
		if !n.Down() {
			out = append(out, n)
		}
	}
	return out
}
