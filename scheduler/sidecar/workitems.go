package sidecar

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler/sidecar/internal/protos"
)

// The work-item side of the protocol: workers connected to this node by
// GetWorkItems, the items dispatched to them (an orchestration step or an
// activity), their completion tokens, and what happens to an item whose
// worker goes away or gives it back.
//
// A dispatch is one item the node waits on: it is queued until a worker
// that serves it has room, sent, and answered by Complete* (or given back
// by Abandon*, or lost with its worker's stream, and then queued again with
// a new sequence). Each send has a completion token naming the sequence,
// the instance, its execution and the fencing token of the node's holding:
// an answer with a token that is not the dispatch's current one is refused
// as stale and changes nothing. An item is never out with two workers at
// once.

// Kinds of work item.
const (
	kindOrchestration = "orchestration"
	kindActivity      = "activity"
)

// anyFunction is what a worker that sent no work-item filters serves: every
// orchestration and activity the node does not run natively.
const anyFunction = orchestrator.AnyFunction

var (
	// errStale refuses an answer for a dispatch that is no longer out
	// with that token (an older send, a finished item, another node's).
	errStale = errors.New("stale completion token: the work item was dispatched again, finished, or this node no longer holds the instance")
	// errHubClosed ends the waits of a node that drains.
	errHubClosed = errors.New("the node is draining; its work items go to another node")
)

// dispatch is one work item this node waits on.
type dispatch struct {
	kind        string
	name        string // orchestration or activity name
	instanceID  string
	executionID string
	taskID      int32 // an activity's
	fence       int64 // the holding's fencing token
	orch        *protos.OrchestratorRequest
	act         *protos.ActivityRequest

	// Guarded by the hub's mu:
	seq    uint64  // the current send's; 0 while queued
	worker *worker // nil while queued
	sends  int
	losses int
	ended  bool
	answer chan answer   // one answer per send, taken by the waiter
	done   chan struct{} // closed when the wait ends
}

// answer is a worker's reply to one send; the waiter reports its verdict
// (nil, or why the reply was refused) on verdict.
type answer struct {
	orch    *protos.OrchestratorResponse
	act     *protos.ActivityResponse
	verdict chan error
}

// worker is one GetWorkItems stream.
type worker struct {
	id       uint64
	peer     string          // the worker's address, as the server sees it
	since    time.Time       // when its stream connected
	orchs    map[string]bool // nil: any (anyFunction)
	acts     map[string]bool
	maxOrch  int // 0: no limit
	maxAct   int
	inflight map[uint64]*dispatch // by seq
	outbox   []*protos.WorkItem
	wake     chan struct{} // cap 1: the outbox has items
	gone     bool
}

func (w *worker) serves(kind, name string) bool {
	set := w.orchs
	if kind == kindActivity {
		set = w.acts
	}
	return set == nil || set[name]
}

func (w *worker) load(kind string) (n, max int) {
	for _, d := range w.inflight {
		if d.kind == kind {
			n++
		}
	}
	if kind == kindActivity {
		return n, w.maxAct
	}
	return n, w.maxOrch
}

// hub keeps the node's workers and its dispatches.
type hub struct {
	log  *slog.Logger
	m    *wiMetrics
	ping time.Duration
	// native reports whether the node runs an orchestration itself (a
	// worker without filters is not offered those).
	native func(name, version string) bool
	// changed is called (without locks) when what the workers serve changes.
	changed func()
	// tq is the node's side of the task queue (workitems_queue.go); nil
	// without a node: an activity then waits for a worker here.
	tq *taskQueue

	mu         sync.Mutex
	closed     bool
	nextWorker uint64
	nextSeq    uint64
	workers    map[uint64]*worker
	queue      []*dispatch
	bySeq      map[uint64]*dispatch
	orchs      map[string]*dispatch // by instance ID: one orchestration item per instance
	acts       map[actKey]*dispatch
	closedCh   chan struct{}
	// workersCh is closed, and replaced, when a worker connects or goes.
	workersCh chan struct{}
}

type actKey struct {
	instanceID string
	taskID     int32
}

func newHub(log *slog.Logger, m *wiMetrics, ping time.Duration, native func(string, string) bool) *hub {
	if ping <= 0 {
		ping = 30 * time.Second
	}
	if native == nil {
		native = func(string, string) bool { return false }
	}
	return &hub{
		log: log, m: m, ping: ping, native: native, changed: func() {},
		workers: map[uint64]*worker{}, bySeq: map[uint64]*dispatch{},
		orchs: map[string]*dispatch{}, acts: map[actKey]*dispatch{},
		closedCh: make(chan struct{}), workersCh: make(chan struct{}),
	}
}

// Serves reports whether a worker connected to this node runs the
// orchestration (and the node does not run it natively).
func (h *hub) Serves(name, version string) bool {
	if h.native(name, version) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	for _, w := range h.workers {
		if w.serves(kindOrchestration, name) {
			return true
		}
	}
	return false
}

// servesActivity reports whether a worker connected to this node serves
// the activity now.
func (h *hub) servesActivity(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	for _, w := range h.workers {
		if !w.gone && w.serves(kindActivity, name) {
			return true
		}
	}
	return false
}

// Functions lists the orchestrations the node's workers serve, sorted,
// "*" for a worker that serves any.
func (h *hub) Functions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	set := map[string]bool{}
	for _, w := range h.workers {
		if w.orchs == nil {
			set[anyFunction] = true
		}
		for n := range w.orchs {
			set[n] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Workers is how many workers are connected.
func (h *hub) Workers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.workers)
}

// close ends every stream (workers reconnect to another node) and every
// wait; nothing is dispatched after it.
func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.closedCh)
	h.workersChangedLocked()
	h.mu.Unlock()
	h.changed()
}

// run dispatches d and waits for its answer. accept judges an answer: its
// verdict (nil, or why the answer is refused, as a gRPC status) goes back
// to the worker that sent it; end stops the wait (with the verdict as run's
// result), otherwise the item is sent again. The wait ends with ctx or when
// the node drains.
func (h *hub) run(ctx context.Context, d *dispatch, accept func(answer) (verdict error, end bool)) error {
	d.answer, d.done = make(chan answer, 1), make(chan struct{})
	if err := h.enqueue(d); err != nil {
		return err
	}
	defer h.finish(d)
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-h.closedCh:
			return errHubClosed
		case a := <-d.answer:
			verdict, end := accept(a)
			a.verdict <- verdict
			if end {
				if verdict == nil {
					h.m.items.WithLabelValues(d.kind, "completed").Inc()
				}
				return verdict
			}
			h.requeue(d, "refused")
		}
	}
}

func (h *hub) enqueue(d *dispatch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errHubClosed
	}
	switch d.kind {
	case kindOrchestration:
		if o := h.orchs[d.instanceID]; o != nil && !o.ended {
			return fmt.Errorf("sidecar: instance %s already has an orchestration work item in flight", d.instanceID)
		}
		h.orchs[d.instanceID] = d
	case kindActivity:
		h.acts[actKey{d.instanceID, d.taskID}] = d
	}
	h.queue = append(h.queue, d)
	h.assignLocked()
	return nil
}

// finish forgets d: an answer that comes later is stale.
func (h *hub) finish(d *dispatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d.ended = true
	close(d.done)
	h.unsendLocked(d)
	for i, q := range h.queue {
		if q == d {
			h.queue = append(h.queue[:i:i], h.queue[i+1:]...)
			break
		}
	}
	switch d.kind {
	case kindOrchestration:
		if h.orchs[d.instanceID] == d {
			delete(h.orchs, d.instanceID)
		}
	case kindActivity:
		k := actKey{d.instanceID, d.taskID}
		if h.acts[k] == d {
			delete(h.acts, k)
		}
	}
	h.assignLocked()
}

// unsendLocked takes d back from its worker, if out: its token is stale
// from now on.
func (h *hub) unsendLocked(d *dispatch) {
	if d.seq != 0 {
		delete(h.bySeq, d.seq)
		if d.worker != nil {
			delete(d.worker.inflight, d.seq)
		}
	}
	d.seq, d.worker = 0, nil
}

// requeue sends d again (to any worker that serves it) after it was lost,
// abandoned or refused.
func (h *hub) requeue(d *dispatch, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requeueLocked(d, why)
}

func (h *hub) requeueLocked(d *dispatch, why string) {
	if d.ended {
		return
	}
	h.unsendLocked(d)
	d.losses++
	h.m.items.WithLabelValues(d.kind, why).Inc()
	h.log.Info("work item dispatched again", "kind", d.kind, "instance_id", d.instanceID, "name", d.name, "task_id", d.taskID, "why", why, "sends", d.sends)
	// An item given back again and again is not sent in a hot loop.
	if d.losses > 1 {
		wait := min(time.Duration(1<<min(d.losses-2, 6))*100*time.Millisecond, 5*time.Second)
		time.AfterFunc(wait, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if !d.ended && !h.closed && d.worker == nil && !h.queuedLocked(d) {
				h.queue = append(h.queue, d)
				h.assignLocked()
			}
		})
		return
	}
	h.queue = append(h.queue, d)
	h.assignLocked()
}

func (h *hub) queuedLocked(d *dispatch) bool {
	for _, q := range h.queue {
		if q == d {
			return true
		}
	}
	return false
}

// assignLocked sends the queued items that a worker with room serves, each
// to the least loaded such worker.
func (h *hub) assignLocked() {
	if h.closed {
		return
	}
	kept := h.queue[:0]
	for _, d := range h.queue {
		var best *worker
		bestN := 0
		for _, w := range h.workers {
			if w.gone || !w.serves(d.kind, d.name) {
				continue
			}
			n, max := w.load(d.kind)
			if max > 0 && n >= max {
				continue
			}
			if best == nil || n < bestN || n == bestN && w.id < best.id {
				best, bestN = w, n
			}
		}
		if best == nil {
			kept = append(kept, d)
			continue
		}
		h.sendLocked(d, best)
	}
	for i := len(kept); i < len(h.queue); i++ {
		h.queue[i] = nil
	}
	h.queue = kept
}

func (h *hub) sendLocked(d *dispatch, w *worker) {
	h.nextSeq++
	d.seq, d.worker = h.nextSeq, w
	d.sends++
	h.bySeq[d.seq] = d
	w.inflight[d.seq] = d
	item := &protos.WorkItem{CompletionToken: d.token()}
	switch d.kind {
	case kindOrchestration:
		item.Request = &protos.WorkItem_OrchestratorRequest{OrchestratorRequest: d.orch}
	case kindActivity:
		item.Request = &protos.WorkItem_ActivityRequest{ActivityRequest: d.act}
	}
	w.outbox = append(w.outbox, item)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	h.m.items.WithLabelValues(d.kind, "dispatched").Inc()
}

// Completion tokens: "v1.{seq}.{fence}.{executionID}.{instanceID}",
// base64url. The sequence finds the dispatch; the rest must match it.

func (d *dispatch) token() string {
	s := fmt.Sprintf("v1.%d.%d.%s.%s", d.seq, d.fence, d.executionID, d.instanceID)
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

type tokenFields struct {
	seq         uint64
	fence       int64
	executionID string
	instanceID  string
}

func parseToken(tok string) (tokenFields, error) {
	var f tokenFields
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return f, fmt.Errorf("completionToken %q is not one this server issued", clip(tok))
	}
	parts := strings.SplitN(string(b), ".", 5)
	if len(parts) != 5 || parts[0] != "v1" {
		return f, fmt.Errorf("completionToken %q is not one this server issued", clip(tok))
	}
	if f.seq, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return f, fmt.Errorf("completionToken %q is not one this server issued", clip(tok))
	}
	if f.fence, err = strconv.ParseInt(parts[2], 10, 64); err != nil {
		return f, fmt.Errorf("completionToken %q is not one this server issued", clip(tok))
	}
	f.executionID, f.instanceID = parts[3], parts[4]
	return f, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// lookup finds the dispatch an answer is for: by its token, or, for a
// worker that sends none (the Go SDK), the item in flight for the instance
// (and task). A token of a send that is not the current one is stale.
func (h *hub) lookupLocked(kind, tok, instanceID string, taskID int32) (*dispatch, error) {
	if tok != "" {
		f, err := parseToken(tok)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		d := h.bySeq[f.seq]
		if d == nil || d.kind != kind || d.instanceID != f.instanceID || d.executionID != f.executionID || d.fence != f.fence {
			return nil, errStale
		}
		if instanceID != "" && instanceID != d.instanceID {
			return nil, status.Errorf(codes.InvalidArgument, "instanceId %q does not match the completion token's instance %q", instanceID, d.instanceID)
		}
		if kind == kindActivity && instanceID != "" && taskID != d.taskID {
			return nil, status.Errorf(codes.InvalidArgument, "taskId %d does not match the completion token's task %d", taskID, d.taskID)
		}
		return d, nil
	}
	if instanceID == "" {
		return nil, status.Error(codes.InvalidArgument, "neither completionToken nor instanceId is set")
	}
	var d *dispatch
	if kind == kindOrchestration {
		d = h.orchs[instanceID]
	} else {
		d = h.acts[actKey{instanceID, taskID}]
	}
	if d == nil || d.ended || d.seq == 0 {
		return nil, errStale
	}
	return d, nil
}

// complete hands a worker's answer to the dispatch's waiter and returns its
// verdict as a gRPC error.
func (h *hub) complete(ctx context.Context, kind, tok, instanceID string, taskID int32, a answer) error {
	h.mu.Lock()
	d, err := h.lookupLocked(kind, tok, instanceID, taskID)
	if err != nil {
		h.mu.Unlock()
		return h.refuseErr(kind, err)
	}
	w := d.worker
	h.unsendLocked(d) // answered: not the worker's any more, and its token is spent
	if w != nil {
		h.assignLocked()
	}
	h.mu.Unlock()
	a.verdict = make(chan error, 1)
	select {
	case d.answer <- a:
	default: // cannot happen: one answer per send, and the send's token is spent
		return h.refuseErr(kind, errStale)
	}
	select {
	case err := <-a.verdict:
		if err != nil {
			return h.refuseErr(kind, err)
		}
		return nil
	case <-d.done:
		select {
		case err := <-a.verdict:
			if err != nil {
				return h.refuseErr(kind, err)
			}
			return nil
		default:
			return h.refuseErr(kind, errStale)
		}
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// refuseErr is the gRPC error for a refused answer: a stale one is
// FAILED_PRECONDITION (and counted), a status error is passed on, anything
// else is ABORTED with its message.
func (h *hub) refuseErr(kind string, err error) error {
	switch {
	case errors.Is(err, errStale):
		h.m.items.WithLabelValues(kind, "stale").Inc()
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errHubClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	if s, ok := status.FromError(err); ok {
		if s.Code() == codes.FailedPrecondition {
			h.m.items.WithLabelValues(kind, "stale").Inc() // refused by the fence
		}
		return s.Err()
	}
	return status.Error(codes.Aborted, err.Error())
}

// abandon gives an item back: it is sent again.
func (h *hub) abandon(kind, tok string) error {
	if tok == "" {
		return status.Error(codes.InvalidArgument, "completionToken is required to abandon a work item")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.lookupLocked(kind, tok, "", 0)
	if err != nil {
		if errors.Is(err, errStale) {
			h.m.items.WithLabelValues(kind, "stale").Inc()
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		return err
	}
	h.requeueLocked(d, "abandoned")
	return nil
}

// connect adds a worker for a GetWorkItems stream.
func (h *hub) connect(req *protos.GetWorkItemsRequest, peerAddr string) (*worker, error) {
	w := &worker{
		peer: peerAddr, since: time.Now(),
		maxOrch:  int(max(req.GetMaxConcurrentOrchestrationWorkItems(), 0)),
		maxAct:   int(max(req.GetMaxConcurrentActivityWorkItems(), 0)),
		inflight: map[uint64]*dispatch{}, wake: make(chan struct{}, 1),
	}
	if f := req.GetWorkItemFilters(); f != nil && (len(f.GetOrchestrations()) > 0 || len(f.GetActivities()) > 0) {
		w.orchs, w.acts = map[string]bool{}, map[string]bool{}
		for _, o := range f.GetOrchestrations() {
			if o.GetName() == "" {
				return nil, status.Error(codes.InvalidArgument, "workItemFilters: an orchestration filter has an empty name")
			}
			w.orchs[o.GetName()] = true
		}
		for _, a := range f.GetActivities() {
			if a.GetName() == "" {
				return nil, status.Error(codes.InvalidArgument, "workItemFilters: an activity filter has an empty name")
			}
			w.acts[a.GetName()] = true
		}
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, status.Error(codes.Unavailable, errHubClosed.Error())
	}
	h.nextWorker++
	w.id = h.nextWorker
	h.workers[w.id] = w
	h.m.workers.Inc()
	for _, fn := range w.functions() {
		h.m.serving.WithLabelValues(fn[0], fn[1]).Inc()
	}
	h.assignLocked()
	h.workersChangedLocked()
	h.mu.Unlock()
	h.changed()
	return w, nil
}

// functions lists (kind, name) pairs the worker serves, for the gauge.
func (w *worker) functions() [][2]string {
	if w.orchs == nil {
		return [][2]string{{kindOrchestration, anyFunction}, {kindActivity, anyFunction}}
	}
	var out [][2]string
	for n := range w.orchs {
		out = append(out, [2]string{kindOrchestration, n})
	}
	for n := range w.acts {
		out = append(out, [2]string{kindActivity, n})
	}
	return out
}

// disconnect removes a worker: what it had in flight is sent again.
func (h *hub) disconnect(w *worker) {
	h.mu.Lock()
	w.gone = true
	delete(h.workers, w.id)
	h.m.workers.Dec()
	for _, fn := range w.functions() {
		h.m.serving.WithLabelValues(fn[0], fn[1]).Dec()
	}
	lost := make([]*dispatch, 0, len(w.inflight))
	for _, d := range w.inflight {
		lost = append(lost, d)
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i].seq < lost[j].seq })
	for _, d := range lost {
		h.requeueLocked(d, "lost")
	}
	h.workersChangedLocked()
	h.mu.Unlock()
	h.changed()
}

// take returns what the worker's stream is to send.
func (h *hub) take(w *worker) []*protos.WorkItem {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := w.outbox
	w.outbox = nil
	return out
}

// stream serves one GetWorkItems call: it sends the worker its items and a
// health ping every h.ping, until the worker goes or the node drains.
func (h *hub) stream(req *protos.GetWorkItemsRequest, srv protos.TaskHubSidecarService_GetWorkItemsServer) error {
	var addr string
	if p, ok := peer.FromContext(srv.Context()); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	w, err := h.connect(req, addr)
	if err != nil {
		return err
	}
	defer h.disconnect(w)
	h.log.Info("worker connected", "worker", w.id, "orchestrations", w.names(kindOrchestration), "activities", w.names(kindActivity))
	defer h.log.Info("worker disconnected", "worker", w.id)
	ping := time.NewTicker(h.ping)
	defer ping.Stop()
	ctx := srv.Context()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-h.closedCh:
			return status.Error(codes.Unavailable, errHubClosed.Error())
		case <-ping.C:
			if err := srv.Send(&protos.WorkItem{Request: &protos.WorkItem_HealthPing{HealthPing: &protos.HealthPing{}}}); err != nil {
				return err
			}
		case <-w.wake:
			for _, it := range h.take(w) {
				if err := srv.Send(it); err != nil {
					return err
				}
			}
		}
	}
}

func (w *worker) names(kind string) []string {
	set := w.orchs
	if kind == kindActivity {
		set = w.acts
	}
	if set == nil {
		return []string{anyFunction}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// The RPCs of the work-item side. The server's methods call these.

// GetWorkItems streams the worker its work items and health pings.
func (h *hub) GetWorkItems(req *protos.GetWorkItemsRequest, srv protos.TaskHubSidecarService_GetWorkItemsServer) error {
	return h.stream(req, srv)
}

// CompleteOrchestratorTask answers an orchestration work item with the
// worker's actions; it returns once they are committed or refused.
func (h *hub) CompleteOrchestratorTask(ctx context.Context, res *protos.OrchestratorResponse) (*protos.CompleteTaskResponse, error) {
	if err := h.complete(ctx, kindOrchestration, res.GetCompletionToken(), res.GetInstanceId(), 0, answer{orch: res}); err != nil {
		return nil, err
	}
	return &protos.CompleteTaskResponse{}, nil
}

// CompleteActivityTask answers an activity work item with its result or
// failure.
func (h *hub) CompleteActivityTask(ctx context.Context, res *protos.ActivityResponse) (*protos.CompleteTaskResponse, error) {
	if err := h.complete(ctx, kindActivity, res.GetCompletionToken(), res.GetInstanceId(), res.GetTaskId(), answer{act: res}); err != nil {
		return nil, err
	}
	return &protos.CompleteTaskResponse{}, nil
}

// AbandonTaskOrchestratorWorkItem gives an orchestration work item back: it
// is dispatched again.
func (h *hub) AbandonTaskOrchestratorWorkItem(_ context.Context, req *protos.AbandonOrchestrationTaskRequest) (*protos.AbandonOrchestrationTaskResponse, error) {
	if err := h.abandon(kindOrchestration, req.GetCompletionToken()); err != nil {
		return nil, err
	}
	return &protos.AbandonOrchestrationTaskResponse{}, nil
}

// AbandonTaskActivityWorkItem gives an activity work item back: it is
// dispatched again.
func (h *hub) AbandonTaskActivityWorkItem(_ context.Context, req *protos.AbandonActivityTaskRequest) (*protos.AbandonActivityTaskResponse, error) {
	if err := h.abandon(kindActivity, req.GetCompletionToken()); err != nil {
		return nil, err
	}
	return &protos.AbandonActivityTaskResponse{}, nil
}
