package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Fence is what a holder proves on every write: the compare that holds only
// while it holds the instance (CreateRevision(ownersKey) == Token).
type Fence struct {
	Cmp   clientv3.Cmp
	Token int64
	// Release deletes the owners key; the final write of an execution (its
	// terminal status, or ContinueAsNew) carries it, so an instance is never
	// terminal and held at once. The lease package makes it
	// (Holding.ReleaseOp); if it is the zero Op, a delete of Cmp's key is
	// used.
	Release clientv3.Op
	// OnReject, if set, is called whenever a write is refused because the
	// fence failed (for a metric, and to stop the holder).
	OnReject func(err error)
}

func (f Fence) releaseOp() clientv3.Op {
	if len(f.Release.KeyBytes()) > 0 {
		return f.Release
	}
	return clientv3.OpDelete(string(f.Cmp.KeyBytes()))
}

// Execution is a holder's handle on one execution of an instance: what it
// read when it took the instance (record, input, custom status, history,
// inbox), and the fenced writes. Every write through it is one etcd
// transaction guarded by the fence and by the record's ModRevision; a
// failed fence returns ErrFenced, a record that now belongs to another
// execution or is no longer runnable returns ErrExecutionChanged. It is
// safe for concurrent use.
type Execution struct {
	c     *Client
	fence Fence
	id    string

	mu     sync.Mutex
	rec    *Record
	rev    int64 // the record's ModRevision
	input  json.RawMessage
	custom json.RawMessage

	// Read at open, for the executor.
	history []HistoryEvent
	inbox   []InboxEntry
	readRev int64 // the revision of the open read

	// inflight is the record an attempt put whose outcome is unknown.
	inflight string
}

// keptEvents and keptBytes bound the history a parked run hands back in
// Outcome.Kept: its events, and their payloads' bytes in all.
const (
	keptEvents = 64
	keptBytes  = 16 << 10
)

// Kept is an execution whose run parked, as the run left it, with its
// committed history in memory (Outcome.Kept): what Reopen needs and no
// more, a fraction of an open Execution.
type Kept struct {
	c             *Client
	id            string
	rec           *Record
	rev           int64
	input, custom json.RawMessage
	// history is the committed history, encoded as in etcd: a fraction of
	// the size of the decoded events, for as long as the run waits.
	history []byte
}

// keep is what x needs to be driven again after its run parked with the
// committed history hist, or nil, keeping nothing, for a history over
// keptEvents or keptBytes or a write of unknown outcome.
func (x *Execution) keep(hist []HistoryEvent) *Kept {
	if len(hist) == 0 || len(hist) > keptEvents {
		return nil
	}
	size := 0
	for i := range hist {
		size += len(hist[i].Input) + len(hist[i].Result)
	}
	if size > keptBytes {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.inflight != "" {
		return nil
	}
	enc, err := json.Marshal(hist)
	if err != nil {
		return nil
	}
	return &Kept{c: x.c, id: x.id, rec: x.rec, rev: x.rev, input: x.input, custom: x.custom, history: enc}
}

// Reopen is the kept execution again, with the holder's fence (as Open
// takes it), to Drive: its run replays the kept history instead of reading
// etcd, and takes the inbox from its caller (every entry the last run
// consumed is in the history; the others reach the new run through
// Driver.Deliver). Reopen it once. An error (a kept history that does not
// decode) means the run must Open the execution from etcd instead.
func (k *Kept) Reopen(fence Fence) (*Execution, error) {
	var hist []HistoryEvent
	if err := json.Unmarshal(k.history, &hist); err != nil {
		return nil, fmt.Errorf("orchestrator: the kept history of '%s' does not decode: %w", k.id, err)
	}
	return &Execution{c: k.c, fence: fence, id: k.id, rec: k.rec, rev: k.rev, input: k.input, custom: k.custom, history: hist}, nil
}

// inboxPage bounds the inbox entries an open reads in its first read.
const inboxPage = 1000

// OpenOps are the reads a holder needs to run executionID of id, in the
// order OpenFrom expects their responses. A node puts them in the same
// transaction that takes the owners key, so taking over costs one round
// trip.
func (c *Client) OpenOps(id, executionID string) []clientv3.Op {
	hp := c.keys.History(id, executionID)
	return []clientv3.Op{
		clientv3.OpGet(c.keys.Instance(id)),
		clientv3.OpGet(c.keys.Input(id)),
		clientv3.OpGet(c.keys.CustomStatus(id)),
		clientv3.OpGet(hp, clientv3.WithRange(clientv3.GetPrefixRangeEnd(hp)), clientv3.WithLimit(historyPage),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)),
		c.inboxFirstRead(id),
	}
}

// LandedOps are the reads a node that takes an instance in its start
// transaction (a landing) needs besides what the start wrote: the inbox
// only. The record and input are the start's own, a new execution has no
// history yet, and a start leaves no custom status (a replacing start
// deletes it). OpenLanded expects their responses.
func (c *Client) LandedOps(id string) []clientv3.Op {
	return []clientv3.Op{c.inboxFirstRead(id)}
}

// inboxFirstRead reads the first inboxPage entries of id's inbox, in
// arrival order (addInbox reads on if there are more).
func (c *Client) inboxFirstRead(id string) clientv3.Op {
	ip := c.keys.InboxPrefix(id)
	return clientv3.OpGet(ip, clientv3.WithRange(clientv3.GetPrefixRangeEnd(ip)), clientv3.WithLimit(inboxPage),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
}

// OpenLanded builds the Execution of a start that rec and input describe,
// from the responses of LandedOps read in the start's own transaction, at
// its revision rev (which is then the record's ModRevision). Responses
// read in any later transaction do not do: the record may have changed
// since; Open reads it anew.
func (c *Client) OpenLanded(ctx context.Context, rec *Record, input json.RawMessage, fence Fence, resps []*pb.ResponseOp, rev int64) (*Execution, error) {
	if len(resps) != 1 {
		return nil, fmt.Errorf("orchestrator: OpenLanded got %d responses, want the 1 of LandedOps", len(resps))
	}
	if !rec.RuntimeStatus.Runnable() {
		return nil, fmt.Errorf("%w: '%s' started %s", ErrExecutionChanged, rec.InstanceID, rec.RuntimeStatus)
	}
	r := *rec
	// The input is copied: the caller's may alias a buffer it reuses (or a
	// request body's, many times the input's size, kept while the run is).
	x := &Execution{c: c, fence: fence, id: r.InstanceID, rec: &r, rev: rev, readRev: rev, input: bytes.Clone(input), custom: jsonNull}
	if len(x.input) == 0 {
		x.input = jsonNull
	}
	return x, x.addInbox(ctx, resps[0].GetResponseRange(), rev)
}

// addInbox takes the inbox entries of a first read, reading all of the
// inbox at rev if they did not fit it.
func (x *Execution) addInbox(ctx context.Context, ir *pb.RangeResponse, rev int64) error {
	for _, kv := range ir.Kvs {
		x.inbox = append(x.inbox, ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value))
	}
	if ir.More {
		var err error
		if x.inbox, err = x.c.readInbox(ctx, x.id, rev); err != nil {
			return err
		}
	}
	return nil
}

// Open reads executionID of id for a holder, in one transaction. It returns
// ErrExecutionChanged if the record belongs to another execution or is not
// runnable (terminal or suspended).
func (c *Client) Open(ctx context.Context, id, executionID string, fence Fence) (*Execution, error) {
	if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	resp, err := c.etcd.Txn(ctx).Then(c.OpenOps(id, executionID)...).Commit()
	if err != nil {
		return nil, storeErr(err)
	}
	return c.OpenFrom(ctx, id, executionID, fence, resp.Responses, resp.Header.Revision)
}

// OpenFrom builds the Execution from the responses of OpenOps, read at
// revision rev. It reads on only if the history or the inbox did not fit
// the first read.
func (c *Client) OpenFrom(ctx context.Context, id, executionID string, fence Fence, resps []*pb.ResponseOp, rev int64) (*Execution, error) {
	if len(resps) != 5 {
		return nil, fmt.Errorf("orchestrator: OpenFrom got %d responses, want the 5 of OpenOps", len(resps))
	}
	recs := resps[0].GetResponseRange().Kvs
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: '%s' was purged (%w)", ErrExecutionChanged, id, ErrInstanceNotFound)
	}
	rec, err := ParseRecord(recs[0].Value)
	if err != nil {
		return nil, err
	}
	if rec.ExecutionID != executionID || !rec.RuntimeStatus.Runnable() {
		return nil, fmt.Errorf("%w: '%s' is now execution %s, %s", ErrExecutionChanged, id, rec.ExecutionID, rec.RuntimeStatus)
	}
	x := &Execution{c: c, fence: fence, id: id, rec: rec, rev: recs[0].ModRevision, readRev: rev,
		input:  valueOr(resps[1].GetResponseRange().Kvs),
		custom: valueOr(resps[2].GetResponseRange().Kvs),
	}
	hr := (*clientv3.GetResponse)(resps[3].GetResponseRange())
	if x.history, err = c.readHistory(ctx, id, executionID, hr, rev); err != nil {
		return nil, err
	}
	if err := x.addInbox(ctx, resps[4].GetResponseRange(), rev); err != nil {
		return nil, err
	}
	return x, nil
}

// readInbox reads all of id's inbox at revision rev, in arrival order.
func (c *Client) readInbox(ctx context.Context, id string, rev int64) ([]InboxEntry, error) {
	ip := c.keys.InboxPrefix(id)
	var out []InboxEntry
	from := ip
	for {
		resp, err := c.etcd.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(ip)), clientv3.WithRev(rev),
			clientv3.WithLimit(inboxPage), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return nil, storeErr(err)
		}
		for _, kv := range resp.Kvs {
			out = append(out, ParseInboxEntry(string(kv.Key), kv.CreateRevision, kv.Value))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreateRevision < out[j].CreateRevision })
	return out, nil
}

// Status returns a copy of the instance as last read or written.
func (e *Execution) Status() *Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.rec.status()
	st.Input = e.input
	st.CustomStatus = e.custom
	return st.Clone()
}

// Token is the holder's fencing token.
func (e *Execution) Token() int64 { return e.fence.Token }

// Trace is the W3C trace context of the instance's start (zero if none).
func (e *Execution) Trace() TraceContext {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rec.trace()
}

// part is one fenced transaction of a commit.
type part struct {
	change func(*Record) // applied to the record, which every part but a blob part puts
	ops    []clientv3.Op
	// finalOps, if set, adds ops built from the record as this part writes
	// it (the retention index entry is named by its time).
	finalOps func(*Record) []clientv3.Op
	blobs    bool // a part of blob writes only: the record is compared, not put
}

// write commits one part: If(fence, record unchanged) Then(put record, ops).
// A record changed by someone else is read and, if it still belongs to this
// runnable execution, the part is tried again on it. An attempt whose
// outcome was unknown (the caller tries the part again) is recognised by
// the record it put when it landed after all.
func (e *Execution) write(ctx context.Context, p part) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := e.c.keys.Instance(e.rec.InstanceID)
	ownerKey := string(e.fence.Cmp.KeyBytes())
	for attempt := 0; attempt < maxAttempts; attempt++ {
		ops := p.ops
		var next *Record
		var encoded string
		if !p.blobs {
			n := *e.rec
			if p.change != nil {
				p.change(&n)
			}
			n.FencingToken = e.fence.Token
			n.LastUpdatedTime = now()
			next, encoded = &n, n.encode()
			ops = append([]clientv3.Op{clientv3.OpPut(key, encoded)}, ops...)
			if p.finalOps != nil {
				ops = append(ops, p.finalOps(next)...)
			}
		}
		resp, err := e.c.etcd.Txn(ctx).
			If(e.fence.Cmp, clientv3.Compare(clientv3.ModRevision(key), "=", e.rev)).
			Then(ops...).
			Else(clientv3.OpGet(ownerKey), clientv3.OpGet(key)).
			Commit()
		if err != nil {
			err = storeErr(err)
			// Of unknown outcome, unless refused for good; NOSPACE may
			// come for a write etcd applied (see IsPermanent).
			if (!IsPermanent(err) || errors.Is(err, ErrNoSpace)) && encoded != "" {
				e.inflight = encoded
			}
			return err
		}
		if resp.Succeeded {
			e.inflight = ""
			if next != nil {
				e.rec, e.rev = next, resp.Header.Revision
			}
			return nil
		}
		owners := resp.Responses[0].GetResponseRange().Kvs
		recs := resp.Responses[1].GetResponseRange().Kvs
		if len(recs) > 0 && e.inflight != "" && string(recs[0].Value) == e.inflight {
			// The earlier attempt whose outcome was unknown landed (and, if
			// it was a final write, deleted the owners key).
			landed, err := ParseRecord(recs[0].Value)
			if err != nil {
				return err
			}
			e.rec, e.rev, e.inflight = landed, recs[0].ModRevision, ""
			return nil
		}
		if len(owners) == 0 || owners[0].CreateRevision != e.fence.Token {
			err := fmt.Errorf("%w: owners key of '%s' no longer has token %d", ErrFenced, e.rec.InstanceID, e.fence.Token)
			if e.fence.OnReject != nil {
				e.fence.OnReject(err)
			}
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("%w: '%s' was purged", ErrExecutionChanged, e.rec.InstanceID)
		}
		cur, err := ParseRecord(recs[0].Value)
		if err != nil {
			return err
		}
		if cur.ExecutionID != e.rec.ExecutionID || !cur.RuntimeStatus.Runnable() {
			return fmt.Errorf("%w: '%s' is now execution %s, %s", ErrExecutionChanged, cur.InstanceID, cur.ExecutionID, cur.RuntimeStatus)
		}
		e.rec, e.rev = cur, recs[0].ModRevision
	}
	return fmt.Errorf("%w: '%s' kept changing under its holder", ErrUnavailable, e.rec.InstanceID)
}

// landed reports whether the attempt whose outcome was unknown landed: the
// record is the one it put. One read, bounded by a short timeout.
func (e *Execution) landed(ctx context.Context) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := e.c.etcd.Get(ctx, e.c.keys.Instance(e.id))
	if err != nil || len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != e.inflight {
		return false
	}
	if rec, err := ParseRecord(resp.Kvs[0].Value); err == nil {
		e.rec, e.rev, e.inflight = rec, resp.Kvs[0].ModRevision, ""
		return true
	}
	return false
}

// MarkRunning moves a Pending or ContinuedAsNew record to Running.
func (e *Execution) MarkRunning(ctx context.Context) error {
	return e.write(ctx, part{change: func(r *Record) { r.RuntimeStatus = StatusRunning }})
}

// SetCustomStatus stores b (JSON, checked against the payload limit) as the
// execution's custom status in one fenced write.
func (e *Execution) SetCustomStatus(ctx context.Context, b json.RawMessage) error {
	b, err := e.c.checkJSON("custom status", b)
	if err != nil {
		return err
	}
	if err := e.write(ctx, part{ops: []clientv3.Op{clientv3.OpPut(e.c.keys.CustomStatus(e.id), string(b))}}); err != nil {
		return err
	}
	e.mu.Lock()
	e.custom = b
	e.mu.Unlock()
	return nil
}

// Finish writes the terminal status (Completed with output, or Failed with
// the error message as output) and deletes the owners key in the same
// fenced transaction, so the instance is never terminal and held at once.
func (e *Execution) Finish(ctx context.Context, output json.RawMessage, runErr error) error {
	st, fd := StatusCompleted, (*FailureDetails)(nil)
	if runErr != nil {
		st, fd = StatusFailed, DetailsOf(runErr)
	}
	parts, err := e.plan(e.finishStep(nil, st, output, fd))
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := e.write(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// finishStep is the step that ends the execution with status st (Completed
// with output, Failed with fd, Terminated with output as the reason) after
// the events already pending.
func (e *Execution) finishStep(events []HistoryEvent, st RuntimeStatus, output json.RawMessage, fd *FailureDetails) step {
	if st == StatusFailed {
		if fd == nil {
			fd = &FailureDetails{ErrorType: "Error", ErrorMessage: "the orchestration failed"}
		}
		output = reasonJSON(fd.ErrorMessage)
	}
	output = orNull(output)
	return step{
		events: events,
		change: func(r *Record) { r.RuntimeStatus = st },
		final: func(r *Record) []clientv3.Op {
			ops := append(e.c.terminalOps(r, output, fd), e.fence.releaseOp())
			return append(ops, e.c.parentOps(r, st, output, fd)...)
		},
		finalBytes: finalBytes(len(output)),
	}
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n] + "..."
}

// step is what the executor commits at once: history events appended in
// order, inbox keys consumed by them, and a record change. A final step
// (final not nil) also carries the ops final returns for the record as
// written (for example the output, the retention index entry and the
// owners key's release).
type step struct {
	events     []HistoryEvent // Seq already set
	deletes    []string
	change     func(*Record)
	final      func(*Record) []clientv3.Op
	finalBytes int
	// ops are written with the record change (after every event): the
	// puts of SendEvent and SetCustomStatus actions.
	ops []clientv3.Op
	// history is the prefix the events go under; defaults to the
	// execution's own.
	history, blobs string
}

// errInternalLimit marks a commit that could not be cut to etcd's limits.
var errInternalLimit = errors.New("orchestrator: a commit could not be cut to fit etcd's limits")

// plan cuts a step into as many fenced transactions as etcd's limits need,
// to be written in order; the order is one that replay understands if the
// holder stops between two of them:
//
//  1. payloads too large to carry inline, each written once as a blob
//     (blobs first: nothing refers to them until step 2 commits);
//  2. the events, in order, as one or more history keys of at most the
//     request budget (a crash between two leaves a prefix of the step,
//     which replay takes as a step that had not finished);
//  3. deletes of the inbox keys the events consumed, after the events that
//     consumed them (replay skips inbox keys it finds in history);
//  4. the record change and the final ops with the last of the above.
//
// A step that fits, the usual case, is one transaction.
func (e *Execution) plan(s step) ([]part, error) {
	e.mu.Lock()
	id, exec := e.rec.InstanceID, e.rec.ExecutionID
	e.mu.Unlock()
	if s.history == "" {
		s.history, s.blobs = e.c.keys.History(id, exec), e.c.keys.Blobs(id, exec)
	}
	budget := e.c.limits.budget()
	maxOps := e.c.limits.TxnOps - 2 // the record put and its margin

	// 1. Blobs.
	events := make([]HistoryEvent, len(s.events))
	var blobs []clientv3.Op
	blobBytes := 0
	for i, ev := range s.events {
		if len(ev.Input) > inlineMax {
			if ev.EventType == EventExecutionStarted {
				ev.InputRef = refInput
			} else {
				ev.InputRef = fmt.Sprintf("%010d.input", ev.Seq)
				blobs = append(blobs, clientv3.OpPut(s.blobs+ev.InputRef, string(ev.Input)))
				blobBytes += len(ev.Input)
			}
			ev.Input = nil
		}
		if len(ev.Result) > inlineMax {
			if ev.EventType == EventExecutionCompleted {
				ev.ResultRef = refOutput
			} else {
				ev.ResultRef = fmt.Sprintf("%010d.result", ev.Seq)
				blobs = append(blobs, clientv3.OpPut(s.blobs+ev.ResultRef, string(ev.Result)))
				blobBytes += len(ev.Result)
			}
			ev.Result = nil
		}
		events[i] = ev
	}
	var parts []part
	for len(blobs) > 0 {
		n, size := 0, 0
		for n < len(blobs) && n < maxOps && (n == 0 || size+opSize(blobs[n]) <= budget) {
			size += opSize(blobs[n])
			n++
		}
		parts = append(parts, part{ops: blobs[:n:n], blobs: true})
		blobs = blobs[n:]
	}

	// 2. History chunks.
	type chunk struct {
		first int
		data  []byte
	}
	var chunks []chunk
	var cur []json.RawMessage
	curSize, first := 0, 0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		// The JSON array of the encoded events, joined as they are:
		// json.Marshal of cur would scan and copy every one again to the
		// same bytes (they are json.Marshal's own output, compact and
		// escaped).
		b := make([]byte, 0, curSize+1)
		for i, ev := range cur {
			b = append(b, ',')
			if i == 0 {
				b[0] = '['
			}
			b = append(b, ev...)
		}
		b = append(b, ']')
		chunks = append(chunks, chunk{first, b})
		cur, curSize = nil, 0
	}
	for _, ev := range events {
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("orchestrator: encode history: %w", err)
		}
		if len(b) > budget {
			return nil, fmt.Errorf("%w: history event %d is %d bytes", errInternalLimit, ev.Seq, len(b))
		}
		if len(cur) > 0 && curSize+len(b)+1 > budget {
			flush()
		}
		if len(cur) == 0 {
			first = ev.Seq
		}
		cur = append(cur, b)
		curSize += len(b) + 1
	}
	flush()
	for _, c := range chunks {
		parts = append(parts, part{ops: []clientv3.Op{clientv3.OpPut(historyKey(s.history, c.first), string(c.data))}})
	}

	// 3. Inbox deletes join the last history part while they fit, then go
	// in parts of their own.
	dels := s.deletes
	if n := len(parts); n > 0 && !parts[n-1].blobs {
		k := min(len(dels), maxOps-len(parts[n-1].ops))
		for _, d := range dels[:k] {
			parts[n-1].ops = append(parts[n-1].ops, clientv3.OpDelete(d))
		}
		dels = dels[k:]
	}
	for len(dels) > 0 {
		k := min(len(dels), maxOps)
		p := part{}
		for _, d := range dels[:k] {
			p.ops = append(p.ops, clientv3.OpDelete(d))
		}
		parts = append(parts, p)
		dels = dels[k:]
	}

	// 4. The record change, and the final ops, with the last part that can
	// take them.
	extraBytes := 0
	for _, op := range s.ops {
		extraBytes += opSize(op)
	}
	if len(s.ops) > maxOps/2 || extraBytes > budget/2 {
		return nil, fmt.Errorf("%w: %d operations of %d bytes besides the history", errInternalLimit, len(s.ops), extraBytes)
	}
	if s.final != nil || len(s.ops) > 0 {
		last := len(parts) - 1
		if last < 0 || parts[last].blobs || partSize(parts[last])+s.finalBytes+extraBytes > budget || len(parts[last].ops)+len(s.ops)+8 > maxOps {
			parts = append(parts, part{})
			last++
		}
		parts[last].ops = append(parts[last].ops, s.ops...)
		if s.final != nil {
			parts[last].change, parts[last].finalOps = s.change, s.final
		}
	}
	if s.final == nil && s.change != nil {
		// A change such as the move to Running goes with the first part
		// that puts the record.
		i := 0
		for i < len(parts) && parts[i].blobs {
			i++
		}
		if i == len(parts) {
			parts = append(parts, part{})
		}
		parts[i].change = s.change
	}
	if len(parts) == 0 {
		parts = append(parts, part{})
	}
	return parts, nil
}

func opSize(op clientv3.Op) int { return len(op.KeyBytes()) + len(op.ValueBytes()) + 16 }

func partSize(p part) int {
	n := 0
	for _, op := range p.ops {
		n += opSize(op)
	}
	return n
}
