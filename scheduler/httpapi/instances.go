package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/soloist-dev/soloist/orchestrator"
)

// InstanceStatus is the status body of an instance (GET {base}/instances/{id}
// and the items of GET {base}/instances).
type InstanceStatus struct {
	Name            string          `json:"name"`
	InstanceID      string          `json:"instanceId"`
	RuntimeStatus   string          `json:"runtimeStatus"`
	Input           json.RawMessage `json:"input"`
	CustomStatus    json.RawMessage `json:"customStatus"`
	Output          json.RawMessage `json:"output"`
	CreatedTime     time.Time       `json:"createdTime"`
	LastUpdatedTime time.Time       `json:"lastUpdatedTime"`
	// HistoryEvents is present only with showHistory=true (never in list
	// items): the history of the execution ExecutionID names, in the Durable
	// Functions shape of HistoryEvent. It is [] while nothing is recorded
	// yet (a Pending instance) and if the execution's history is gone (the
	// instance was restarted or purged just after its record was read). It
	// is read just after the record, so it can be a step ahead of
	// runtimeStatus.
	HistoryEvents []HistoryEvent `json:"historyEvents,omitzero"`
	ExecutionID   string         `json:"executionId"`
	// Node is the current holder: the node whose owners key holds this
	// execution, "" if none.
	Node string `json:"node"`
	// FencingToken is the current holder's fencing token (the create
	// revision of its owners key); when no node holds the execution, the
	// token of the holding that last wrote the record (0 if none did). In
	// list items Node and FencingToken come from one read of the page's
	// owners keys, at a later revision than the records.
	FencingToken int64 `json:"fencingToken"`
	// FailureDetails say why a Failed instance failed (absent otherwise);
	// output keeps the failure message, as Durable Functions has it.
	FailureDetails *orchestrator.FailureDetails `json:"failureDetails,omitempty"`
	// Version is the orchestration version the instance runs (absent for
	// an unversioned one).
	Version string `json:"version,omitempty"`
	// Tags are the tags the instance was started with (absent if none).
	Tags map[string]string `json:"tags,omitempty"`
	// ScheduledStartTime is when a start with scheduledStartTime may run
	// (absent for a start that runs at once); the instance is Pending until
	// then.
	ScheduledStartTime *time.Time `json:"scheduledStartTime,omitempty"`
	// ParentInstanceID is the orchestration that started this one as its
	// sub-orchestration (absent otherwise).
	ParentInstanceID string `json:"parentInstanceId,omitempty"`
	// Unrunnable, for an active instance that no node holds, says why no
	// live node can run it (absent otherwise, and in list items).
	Unrunnable string `json:"unrunnable,omitempty"`
}

func statusBody(st *orchestrator.Status, showInput bool) InstanceStatus {
	b := InstanceStatus{
		Name:               st.Name,
		InstanceID:         st.InstanceID,
		RuntimeStatus:      string(st.RuntimeStatus),
		CustomStatus:       orNull(st.CustomStatus),
		Output:             orNull(st.Output),
		CreatedTime:        st.CreatedTime.UTC(),
		LastUpdatedTime:    st.LastUpdatedTime.UTC(),
		ExecutionID:        st.ExecutionID,
		Node:               st.Node,
		FencingToken:       st.FencingToken,
		FailureDetails:     st.FailureDetails,
		Input:              json.RawMessage("null"),
		Version:            st.Version,
		Tags:               st.Tags,
		ScheduledStartTime: utc(st.ScheduledStartTime),
		ParentInstanceID:   st.ParentInstanceID,
		Unrunnable:         st.Unrunnable,
	}
	if showInput {
		b.Input = orNull(st.Input)
	}
	return b
}

func orNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return json.RawMessage("null")
	}
	return m
}

// instanceID returns the validated {id} path value; on failure it has
// written the 400.
func (h *handler) instanceID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := orchestrator.ValidateInstanceID(id); err != nil {
		h.fail(w, r, err)
		return "", false
	}
	return id, true
}

// instanceFail writes err of an operation on instance id; a missing
// instance gets a message that says how to find the right ID.
func (h *handler) instanceFail(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, orchestrator.ErrInstanceNotFound) && r.Context().Err() == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf(
			"no instance with ID '%s' exists; check the ID, or list the instances with GET %s/instances", id, BasePath))
		return
	}
	h.fail(w, r, err)
}

// statusParams are the query parameters of a status read.
var statusParams = []string{"showInput", "showHistory", "showHistoryOutput", "returnInternalServerErrorOnFailure", "waitForCompletion"}

// statusOptions say how writeStatus shapes a status answer.
type statusOptions struct {
	showInput, showHistory, showHistoryOutput bool
	// failAs500 is returnInternalServerErrorOnFailure: 500 for Failed.
	failAs500 bool
}

// status serves GET {base}/instances/{id}: 202 while active, 200 when
// terminal (500 for Failed with returnInternalServerErrorOnFailure=true);
// with showHistory=true the body has the execution's history. With
// waitForCompletion (Soloist's extension) an active instance is watched
// until it is terminal, for at most that long, before the answer.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	q, ok := h.query(w, r, statusParams...)
	if !ok {
		return
	}
	var o statusOptions
	for _, p := range []struct {
		name string
		def  bool
		v    *bool
	}{
		{"showInput", true, &o.showInput},
		{"showHistory", false, &o.showHistory},
		{"showHistoryOutput", false, &o.showHistoryOutput},
		{"returnInternalServerErrorOnFailure", false, &o.failAs500},
	} {
		v, err := q.bool(p.name, p.def)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		*p.v = v
	}
	wait, _, err := q.duration("waitForCompletion")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	read := func() (*orchestrator.Status, bool) {
		rctx, cancel := h.readContext(r)
		defer cancel()
		st, err := h.client.Status(rctx, id)
		if err != nil {
			h.instanceFail(w, r, id, err)
			return nil, false
		}
		return st, true
	}
	// The first read fails fast (ReadTimeout) while etcd does not answer.
	st, ok := read()
	if !ok {
		return
	}
	if st.RuntimeStatus.Active() && wait > 0 {
		done, err := h.waitForCompletion(w, r, id, wait)
		switch {
		case err != nil:
			h.instanceFail(w, r, id, err)
			return
		case done != nil:
			st = done
		default: // still active after the wait: answer with what it is now
			if st, ok = read(); !ok {
				return
			}
		}
	}
	h.writeStatus(w, r, st, o)
}

// writeStatus answers with the status body of st: 202 with Location (this
// request's URL, as Durable Functions has it, so that a poller keeps its
// parameters) and Retry-After while active, 200 when terminal, 500 for
// Failed with failAs500. With showHistory it reads the execution's
// history.
func (h *handler) writeStatus(w http.ResponseWriter, r *http.Request, st *orchestrator.Status, o statusOptions) {
	body := statusBody(st, o.showInput)
	if o.showHistory {
		// The history of the execution this body describes: if the instance
		// was restarted or purged since, that history is gone and reads empty.
		// etcd answered the status read: a long history gets the longer
		// OperationTimeout.
		ctx, cancel := h.opContext(r)
		defer cancel()
		events, err := h.client.History(ctx, st.InstanceID, st.ExecutionID)
		if err != nil && !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			h.fail(w, r, err)
			return
		}
		body.HistoryEvents = historyBody(events, o.showInput, o.showHistoryOutput)
	}
	code := http.StatusOK
	switch {
	case st.RuntimeStatus.Active():
		code = http.StatusAccepted
		w.Header().Set("Location", h.pollURL(r, st.InstanceID))
		w.Header().Set("Retry-After", retryAfterSeconds)
	case st.RuntimeStatus == orchestrator.StatusFailed && o.failAs500:
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, body)
}

// pollURL is the absolute status URL of id with the query of a status
// request r (its code key only if URLs may carry it), the Location of a
// 202 status answer.
func (h *handler) pollURL(r *http.Request, id string) string {
	u := h.instanceURL(r, id)
	q := r.URL.Query()
	if r.PathValue("id") != id {
		q = url.Values{} // not a status request: its parameters are not the status route's
	}
	for k := range q {
		if strings.EqualFold(k, "code") {
			q.Del(k) // the key goes back only as codeParam allows
		}
	}
	params := []string{}
	if enc := q.Encode(); enc != "" {
		params = append(params, enc)
	}
	if c := h.codeParam(r); c != "" {
		params = append(params, c)
	}
	if len(params) == 0 {
		return u
	}
	return u + "?" + strings.Join(params, "&")
}

// listParams are the query parameters of a list.
var listParams = []string{"createdTimeFrom", "createdTimeTo", "runtimeStatus", "instanceIdPrefix", "top", "showInput", "tag"}

// list serves GET {base}/instances: one page, and the next page's token in
// the x-ms-continuation-token header.
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q, ok := h.query(w, r, listParams...)
	if !ok {
		return
	}
	opts := orchestrator.ListOptions{
		InstanceIDPrefix:  q.get("instanceIdPrefix"),
		ContinuationToken: strings.TrimSpace(r.Header.Get(ContinuationHeader)),
	}
	statuses, none, err := q.statuses()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	opts.Statuses = statuses
	if v := q.get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			h.fail(w, r, &orchestrator.ValidationError{Field: "top", Value: v, Reason: "must be a whole number from 1 to 1000"})
			return
		}
		opts.Top = n
	}
	if opts.ShowInput, err = q.bool("showInput", true); err != nil {
		h.fail(w, r, err)
		return
	}
	if opts.CreatedFrom, err = q.time("createdTimeFrom"); err != nil {
		h.fail(w, r, err)
		return
	}
	if opts.CreatedTo, err = q.time("createdTimeTo"); err != nil {
		h.fail(w, r, err)
		return
	}
	if opts.Tags, err = q.tags(); err != nil {
		h.fail(w, r, err)
		return
	}
	if none {
		// Only Canceled, which no instance has: no page at all.
		writeJSON(w, http.StatusOK, []InstanceStatus{})
		return
	}
	ctx, cancel := h.readContext(r)
	defer cancel()
	page, next, err := h.client.List(ctx, opts)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]InstanceStatus, 0, len(page))
	for _, st := range page {
		out = append(out, statusBody(st, opts.ShowInput))
	}
	if next != "" {
		w.Header().Set(ContinuationHeader, next)
	}
	writeJSON(w, http.StatusOK, out)
}

// control serves suspend, resume and rewind: 202, 404, 410; its one
// parameter is reason.
func (h *handler) control(w http.ResponseWriter, r *http.Request, verb string,
	op func(ctx context.Context, id, reason string) (*orchestrator.Status, error)) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	q, ok := h.query(w, r, "reason")
	if !ok {
		return
	}
	h.apply(w, r, id, q.get("reason"), verb, op)
}

// apply runs a control operation on instance id and answers 202 (no body,
// as Durable Functions answers), or the error.
func (h *handler) apply(w http.ResponseWriter, r *http.Request, id, reason, verb string,
	op func(ctx context.Context, id, reason string) (*orchestrator.Status, error)) {
	if len(reason) > h.maxPayload {
		h.fail(w, r, fmt.Errorf("%w: the reason is %d bytes, the limit is %d bytes; send a shorter reason",
			orchestrator.ErrPayloadTooLarge, len(reason), h.maxPayload))
		return
	}
	ctx, cancel := h.opContext(r)
	defer cancel()
	st, err := op(ctx, id, reason)
	if err != nil {
		h.instanceFail(w, r, id, err)
		return
	}
	h.log.Info("instance "+verb, "instance_id", id, "function", st.Name, "execution_id", st.ExecutionID,
		"runtime_status", string(st.RuntimeStatus), "reason", truncate(reason, 200))
	w.WriteHeader(http.StatusAccepted)
}

// terminate serves POST {base}/instances/{id}/terminate?reason=; with
// recursive=true every active sub-orchestration below the instance is
// terminated too, below finished children as well (TerminateRecursive).
func (h *handler) terminate(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	q, ok := h.query(w, r, "reason", "recursive")
	if !ok {
		return
	}
	recursive, err := q.bool("recursive", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if recursive {
		h.apply(w, r, id, q.get("reason"), "terminated with its sub-orchestrations", h.client.TerminateRecursive)
		return
	}
	h.apply(w, r, id, q.get("reason"), "terminated", h.client.Terminate)
}

// rewind serves POST {base}/instances/{id}/rewind?reason=: a Failed
// instance runs again from its first failure; 202, 404, 409 if it is
// active, 410 if it completed or was terminated.
func (h *handler) rewind(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, "rewound", h.client.Rewind)
}

func (h *handler) suspend(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, "suspended", h.client.Suspend)
}

func (h *handler) resume(w http.ResponseWriter, r *http.Request) {
	h.control(w, r, "resumed", h.client.Resume)
}

// restartParams are the query parameters of a restart.
var restartParams = []string{"restartWithNewInstanceId", "conflictPolicy", "timeout", "pollingInterval", "returnInternalServerErrorOnFailure"}

// restart serves POST {base}/instances/{id}/restart: a new execution with the
// original input, version and tags, as a new instance
// (restartWithNewInstanceId=true, the default) or under the same ID
// (terminating the current one only with conflictPolicy=terminateExisting).
// timeout waits for the restarted instance as a start does.
func (h *handler) restart(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	q, ok := h.query(w, r, restartParams...)
	if !ok {
		return
	}
	newID, err := q.bool("restartWithNewInstanceId", true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	cp, err := orchestrator.ParseConflictPolicy(q.get("conflictPolicy"))
	if err != nil || cp == orchestrator.ConflictUseExisting {
		h.fail(w, r, &orchestrator.ValidationError{Field: "conflictPolicy", Value: q.get("conflictPolicy"),
			Reason: "a restart takes fail (the default: 409 if the instance is active) or terminateExisting"})
		return
	}
	wait, waits, err := q.duration("timeout")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, _, err := q.duration("pollingInterval"); err != nil { // no effect: Soloist waits on a watch
		h.fail(w, r, err)
		return
	}
	failAs500, err := q.bool("returnInternalServerErrorOnFailure", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.ready(); err != nil {
		h.notTaking(w, "restart", err)
		return
	}
	ctx, cancel := h.opContext(r)
	defer cancel()
	cur, err := h.client.Status(ctx, id)
	if err != nil {
		h.instanceFail(w, r, id, err)
		return
	}
	if _, ok := h.function(cur.Name, cur.Version); !ok {
		what := "the orchestration '" + truncate(cur.Name, 100) + "'"
		if cur.Version != "" {
			what += " version '" + truncate(cur.Version, 64) + "'"
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf(
			"instance '%s' runs %s, which is not registered on this node; add it to the config file before restarting", id, what))
		return
	}
	res, err := h.client.Restart(ctx, id, orchestrator.RestartOptions{
		NewInstanceID: newID, TerminateExisting: cp == orchestrator.ConflictTerminateExisting,
	})
	if err != nil {
		var exists *orchestrator.ExistsError
		if errors.As(err, &exists) {
			writeJSON(w, http.StatusConflict, ConflictResponse{
				Error: fmt.Sprintf("instance '%s' is %s; a restart under the same ID needs conflictPolicy=terminateExisting, or use restartWithNewInstanceId=true",
					id, exists.Status.RuntimeStatus),
				ID: id, RuntimeStatus: string(exists.Status.RuntimeStatus), StatusQueryGetURI: h.checkStatus(r, id, false).StatusQueryGetURI,
			})
			return
		}
		h.instanceFail(w, r, id, err)
		return
	}
	cancel()
	h.log.Info("orchestration restarted", "function", res.Status.Name, "instance_id", res.Status.InstanceID,
		"restarted_from", id, "execution_id", res.Status.ExecutionID, "replaced_execution_id", res.Replaced)
	if waits {
		h.answerWaited(w, r, res.Status.InstanceID, wait, failAs500)
		return
	}
	h.writeAccepted(w, r, res.Status.InstanceID, failAs500)
}

// raiseEvent serves POST {base}/instances/{id}/raiseEvent/{eventName}: 202
// once the event is committed to the instance's inbox (its holder delivers
// it to the orchestration), 404 for an unknown instance, 410 for a terminal
// one, 400 for a bad event name or a body that is not JSON, 413 for a body
// over the payload limit. An empty body raises the event with null data.
func (h *handler) raiseEvent(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	name := r.PathValue("eventName")
	if err := validateEventName(name); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, ok := h.query(w, r); !ok {
		return
	}
	data, _, ok := h.readJSONBody(w, r, "event data")
	if !ok {
		return
	}
	ctx, cancel := h.opContext(r)
	defer cancel()
	if err := h.client.RaiseEvent(ctx, id, name, data); err != nil {
		h.instanceFail(w, r, id, err)
		return
	}
	h.log.Info("event raised", "instance_id", id, "event", name)
	w.WriteHeader(http.StatusAccepted)
}

func validateEventName(name string) error {
	bad := func(reason string) error {
		return &orchestrator.ValidationError{Field: "event name", Value: name, Reason: reason}
	}
	switch {
	case name == "":
		return bad("it is empty")
	case !utf8.ValidString(name):
		return bad("it is not valid UTF-8")
	case utf8.RuneCountInString(name) > orchestrator.MaxInstanceIDLength:
		return bad("it is longer than 256 characters")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return bad("it contains a control character; use printable characters only")
	}
	return nil
}

// purgeMany serves DELETE {base}/instances: it purges every terminal
// instance created in [createdTimeFrom, createdTimeTo] (createdTimeFrom is
// required, as in Durable Functions) with one of the runtimeStatus values
// (terminal ones only; default: all three) and, Soloist's extension, an ID
// that starts with instanceIdPrefix. 200 {"instancesDeleted": N}, or 404 if
// none matched.
func (h *handler) purgeMany(w http.ResponseWriter, r *http.Request) {
	q, ok := h.query(w, r, "createdTimeFrom", "createdTimeTo", "runtimeStatus", "instanceIdPrefix")
	if !ok {
		return
	}
	var f orchestrator.PurgeFilter
	var err error
	if f.CreatedFrom, err = q.time("createdTimeFrom"); err != nil {
		h.fail(w, r, err)
		return
	}
	if f.CreatedFrom.IsZero() {
		h.fail(w, r, &orchestrator.ValidationError{Field: "createdTimeFrom",
			Reason: "it is required to purge many instances; give an RFC 3339 time such as 2026-01-01T00:00:00Z (and optionally createdTimeTo and runtimeStatus)"})
		return
	}
	if f.CreatedTo, err = q.time("createdTimeTo"); err != nil {
		h.fail(w, r, err)
		return
	}
	if !f.CreatedTo.IsZero() && f.CreatedTo.Before(f.CreatedFrom) {
		h.fail(w, r, &orchestrator.ValidationError{Field: "createdTimeTo", Value: q.get("createdTimeTo"),
			Reason: "it is before createdTimeFrom, so nothing could match; swap them"})
		return
	}
	statuses, none, err := q.statuses()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	f.Statuses = statuses
	f.InstanceIDPrefix = q.get("instanceIdPrefix")
	n := 0
	if !none { // only Canceled, which no instance has: nothing to purge
		ctx, cancel := context.WithTimeout(r.Context(), max(h.timeout, time.Minute))
		defer cancel()
		n, err = h.client.PurgeMany(ctx, f)
		if err != nil && n == 0 {
			h.fail(w, r, err)
			return
		}
		if err != nil {
			h.log.Warn("purge of many instances stopped early", "purged", n, "error", err)
		}
	}
	if n == 0 {
		writeError(w, http.StatusNotFound, "no terminal instance matches the filter; nothing was purged")
		return
	}
	h.log.Info("instances purged", "purged", n)
	writeJSON(w, http.StatusOK, map[string]int{"instancesDeleted": n})
}

// purge serves DELETE {base}/instances/{id}: 200 {"instancesDeleted": N},
// 404, 409 if active; with recursive=true every terminal sub-orchestration
// below it too, below finished or active children as well (PurgeRecursive).
func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	q, ok := h.query(w, r, "recursive")
	if !ok {
		return
	}
	recursive, err := q.bool("recursive", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx, cancel := h.opContext(r)
	defer cancel()
	n := 1
	if recursive {
		n, err = h.client.PurgeRecursive(ctx, id)
	} else {
		err = h.client.Purge(ctx, id)
	}
	if err != nil {
		h.instanceFail(w, r, id, err)
		return
	}
	h.log.Info("instance purged", "instance_id", id, "instances_deleted", n)
	writeJSON(w, http.StatusOK, map[string]int{"instancesDeleted": n})
}
