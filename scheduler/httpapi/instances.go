package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
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
}

func statusBody(st *orchestrator.Status, showInput bool) InstanceStatus {
	b := InstanceStatus{
		Name:            st.Name,
		InstanceID:      st.InstanceID,
		RuntimeStatus:   string(st.RuntimeStatus),
		CustomStatus:    orNull(st.CustomStatus),
		Output:          orNull(st.Output),
		CreatedTime:     st.CreatedTime.UTC(),
		LastUpdatedTime: st.LastUpdatedTime.UTC(),
		ExecutionID:     st.ExecutionID,
		Node:            st.Node,
		FencingToken:    st.FencingToken,
		FailureDetails:  st.FailureDetails,
		Input:           json.RawMessage("null"),
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

// boolParam parses an optional boolean query parameter.
func boolParam(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &orchestrator.ValidationError{Field: name, Value: v, Reason: "must be true or false"}
	}
	return b, nil
}

// timeParam parses an optional RFC 3339 time query parameter; zero if absent.
func timeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, &orchestrator.ValidationError{Field: name, Value: v,
			Reason: "must be an RFC 3339 time such as 2026-12-01T09:30:00Z"}
	}
	return t, nil
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

// status serves GET {base}/instances/{id}: 202 while active, 200 when
// terminal; with showHistory=true the body has the execution's history.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	var showInput, showHistory, showHistoryOutput bool
	for _, p := range []struct {
		name string
		def  bool
		v    *bool
	}{
		{"showInput", true, &showInput},
		{"showHistory", false, &showHistory},
		{"showHistoryOutput", false, &showHistoryOutput},
	} {
		v, err := boolParam(r, p.name, p.def)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		*p.v = v
	}
	rctx, cancel := h.readContext(r)
	defer cancel()
	st, err := h.client.Status(rctx, id)
	if err != nil {
		h.instanceFail(w, r, id, err)
		return
	}
	body := statusBody(st, showInput)
	if showHistory {
		// The history of the execution this body describes: if the instance
		// was restarted or purged since, that history is gone and reads empty.
		// etcd answered the status read: a long history gets the longer
		// OperationTimeout.
		ctx, cancel := h.opContext(r)
		defer cancel()
		events, err := h.client.History(ctx, id, st.ExecutionID)
		if err != nil && !errors.Is(err, orchestrator.ErrInstanceNotFound) {
			h.fail(w, r, err)
			return
		}
		body.HistoryEvents = historyBody(events, showInput, showHistoryOutput)
	}
	code := http.StatusOK
	if st.RuntimeStatus.Active() {
		code = http.StatusAccepted
		w.Header().Set("Location", h.checkStatus(r, id).StatusQueryGetURI)
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	writeJSON(w, code, body)
}

// list serves GET {base}/instances: one page, and the next page's token in
// the x-ms-continuation-token header.
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := orchestrator.ListOptions{
		InstanceIDPrefix:  q.Get("instanceIdPrefix"),
		ContinuationToken: strings.TrimSpace(r.Header.Get(ContinuationHeader)),
	}
	for _, v := range q["runtimeStatus"] {
		for _, s := range strings.Split(v, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			rs, err := orchestrator.ParseRuntimeStatus(s)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			opts.Statuses = append(opts.Statuses, rs)
		}
	}
	if v := q.Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			h.fail(w, r, &orchestrator.ValidationError{Field: "top", Value: v, Reason: "must be a whole number from 1 to 1000"})
			return
		}
		opts.Top = n
	}
	showInput, err := boolParam(r, "showInput", true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	opts.ShowInput = showInput
	if opts.CreatedFrom, err = timeParam(r, "createdTimeFrom"); err != nil {
		h.fail(w, r, err)
		return
	}
	if opts.CreatedTo, err = timeParam(r, "createdTimeTo"); err != nil {
		h.fail(w, r, err)
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
		out = append(out, statusBody(st, showInput))
	}
	if next != "" {
		w.Header().Set(ContinuationHeader, next)
	}
	writeJSON(w, http.StatusOK, out)
}

// control serves terminate, suspend and resume: 202, 404, 410.
func (h *handler) control(w http.ResponseWriter, r *http.Request, verb string,
	op func(ctx context.Context, id, reason string) (*orchestrator.Status, error)) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	reason := r.URL.Query().Get("reason")
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

// terminate serves POST {base}/instances/{id}/terminate; with
// recursive=true the instance's active sub-orchestrations are terminated
// too.
func (h *handler) terminate(w http.ResponseWriter, r *http.Request) {
	recursive, err := boolParam(r, "recursive", false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if recursive {
		h.control(w, r, "terminated with its sub-orchestrations", h.client.TerminateRecursive)
		return
	}
	h.control(w, r, "terminated", h.client.Terminate)
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

// restart serves POST {base}/instances/{id}/restart: a new execution with the
// original input, terminating the current one if it is active.
func (h *handler) restart(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
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
	if !h.hasFunction(cur.Name) {
		writeError(w, http.StatusNotFound, fmt.Sprintf(
			"instance '%s' runs the orchestration '%s', which is not registered on this node; add it to the config file before restarting",
			id, truncate(cur.Name, 100)))
		return
	}
	newID, err := boolParam(r, "restartWithNewInstanceId", true)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	cp, err := orchestrator.ParseConflictPolicy(r.URL.Query().Get("conflictPolicy"))
	if err != nil || cp == orchestrator.ConflictUseExisting {
		h.fail(w, r, &orchestrator.ValidationError{Field: "conflictPolicy", Value: r.URL.Query().Get("conflictPolicy"),
			Reason: "a restart takes fail (the default: 409 if the instance is active) or terminateExisting"})
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
				ID: id, RuntimeStatus: string(exists.Status.RuntimeStatus), StatusQueryGetURI: h.checkStatus(r, id).StatusQueryGetURI,
			})
			return
		}
		h.instanceFail(w, r, id, err)
		return
	}
	h.log.Info("orchestration restarted", "function", res.Status.Name, "instance_id", res.Status.InstanceID,
		"restarted_from", id, "execution_id", res.Status.ExecutionID, "replaced_execution_id", res.Replaced)
	h.writeAccepted(w, r, res.Status.InstanceID)
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

// purge serves DELETE {base}/instances/{id}: 200, 404, 409 if active.
// purgeMany serves DELETE {base}/instances: it purges every terminal
// instance created in [createdTimeFrom, createdTimeTo] (createdTimeFrom is
// required, as in Durable Functions) with one of the runtimeStatus values
// (terminal ones only; default: all three). 200 {"instancesDeleted": N},
// or 404 if none matched.
func (h *handler) purgeMany(w http.ResponseWriter, r *http.Request) {
	var f orchestrator.PurgeFilter
	var err error
	if f.CreatedFrom, err = timeParam(r, "createdTimeFrom"); err != nil {
		h.fail(w, r, err)
		return
	}
	if f.CreatedFrom.IsZero() {
		h.fail(w, r, &orchestrator.ValidationError{Field: "createdTimeFrom",
			Reason: "it is required to purge many instances; give an RFC 3339 time such as 2026-01-01T00:00:00Z (and optionally createdTimeTo and runtimeStatus)"})
		return
	}
	if f.CreatedTo, err = timeParam(r, "createdTimeTo"); err != nil {
		h.fail(w, r, err)
		return
	}
	for _, v := range r.URL.Query()["runtimeStatus"] {
		for _, s := range strings.Split(v, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			rs, err := orchestrator.ParseRuntimeStatus(s)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			f.Statuses = append(f.Statuses, rs)
		}
	}
	f.InstanceIDPrefix = r.URL.Query().Get("instanceIdPrefix")
	ctx, cancel := context.WithTimeout(r.Context(), max(h.timeout, time.Minute))
	defer cancel()
	n, err := h.client.PurgeMany(ctx, f)
	if err != nil && n == 0 {
		h.fail(w, r, err)
		return
	}
	if err != nil {
		h.log.Warn("purge of many instances stopped early", "purged", n, "error", err)
	}
	if n == 0 {
		writeError(w, http.StatusNotFound, "no terminal instance matches the filter; nothing was purged")
		return
	}
	h.log.Info("instances purged", "purged", n)
	writeJSON(w, http.StatusOK, map[string]int{"instancesDeleted": n})
}

func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	id, ok := h.instanceID(w, r)
	if !ok {
		return
	}
	recursive, err := boolParam(r, "recursive", false)
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
