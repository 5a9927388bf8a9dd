package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// CheckStatus is the body of a 202 from a start or restart, and of a 200
// from a start that started nothing and names the existing instance
// (conflictPolicy=useExisting on an active ID, reusePolicy=ignore on a
// terminal one): the URLs that manage the instance, as Durable Functions
// returns them. sendEventPostUri keeps the
// placeholder {eventName}, and terminate, rewind, suspend and resume the
// placeholder {text} of their reason, for the caller to fill in.
type CheckStatus struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	RewindPostURI         string `json:"rewindPostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	RestartPostURI        string `json:"restartPostUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
	// ExecutionID is, in a 200 that started nothing, the existing
	// execution's ID (Soloist's extension; absent from a 202).
	ExecutionID string `json:"executionId,omitempty"`
}

// origin is the base of the absolute URLs in answers: Config.PublicURL if
// set, else scheme://host of the request as its client addressed it:
// X-Forwarded-Proto (http or https) if a proxy set it, else https for a TLS
// connection and http otherwise.
func (h *handler) origin(r *http.Request) string {
	if h.publicURL != "" {
		return h.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		first, _, _ := strings.Cut(p, ",")
		switch v := strings.ToLower(strings.TrimSpace(first)); v {
		case "http", "https":
			scheme = v
		}
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host
}

// escapeID escapes an instance ID as one path segment ("." and "..", which
// path cleaning would remove, are not valid IDs).
func escapeID(id string) string { return url.PathEscape(id) }

// instanceURL is the absolute URL of an instance's status.
func (h *handler) instanceURL(r *http.Request, id string) string {
	return h.origin(r) + BasePath + "/instances/" + escapeID(id)
}

// codeParam returns "code=<key>" when the request authenticated with the
// code query parameter, so that the URLs handed back work as they are for a
// client that only follows links (as the caller's own key, it reveals
// nothing new to the caller), unless Config.OmitCodeInURLs. It returns ""
// otherwise.
func (h *handler) codeParam(r *http.Request) string {
	if h.omitCode {
		return ""
	}
	if c := r.URL.Query().Get("code"); c != "" && h.validKey(c) {
		return "code=" + url.QueryEscape(c)
	}
	return ""
}

// checkStatus builds the check-status body of id. With failAs500 its
// statusQueryGetUri asks for a 500 if the instance fails
// (returnInternalServerErrorOnFailure=true), as Durable Functions'
// CreateCheckStatusResponse does when asked to.
func (h *handler) checkStatus(r *http.Request, id string, failAs500 bool) CheckStatus {
	base := h.instanceURL(r, id)
	code := h.codeParam(r)
	with := func(u string, params ...string) string {
		if code != "" {
			params = append(params, code)
		}
		if len(params) == 0 {
			return u
		}
		return u + "?" + strings.Join(params, "&")
	}
	status := with(base)
	if failAs500 {
		status = with(base, "returnInternalServerErrorOnFailure=true")
	}
	const reason = "reason={text}"
	return CheckStatus{
		ID:                    id,
		StatusQueryGetURI:     status,
		SendEventPostURI:      with(base + "/raiseEvent/{eventName}"),
		TerminatePostURI:      with(base+"/terminate", reason),
		RewindPostURI:         with(base+"/rewind", reason),
		PurgeHistoryDeleteURI: with(base),
		RestartPostURI:        with(base + "/restart"),
		SuspendPostURI:        with(base+"/suspend", reason),
		ResumePostURI:         with(base+"/resume", reason),
	}
}

// writeAccepted answers 202 with the check-status body of id, Location and
// Retry-After.
func (h *handler) writeAccepted(w http.ResponseWriter, r *http.Request, id string, failAs500 bool) {
	cs := h.checkStatus(r, id, failAs500)
	w.Header().Set("Location", cs.StatusQueryGetURI)
	w.Header().Set("Retry-After", retryAfterSeconds)
	writeJSON(w, http.StatusAccepted, cs)
}

// readJSONBody reads a request body of at most maxPayload bytes that must
// be JSON (empty means null, returned as nil). On failure it has written
// the 400 or 413 and returns false.
func (h *handler) readJSONBody(w http.ResponseWriter, r *http.Request, what string) (json.RawMessage, int, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.maxPayload)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
				"the request body (the %s) is larger than the limit of %d bytes (%s); send a smaller %s, or raise the limit with --max-payload",
				what, h.maxPayload, humanBytes(h.maxPayload), what))
			return nil, http.StatusRequestEntityTooLarge, false
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("could not read the request body: %v; send the %s again", err, what))
		return nil, http.StatusBadRequest, false
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, 0, true
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(
			"the request body (the %s) is not valid JSON; send JSON such as {\"key\":\"value\"}, a quoted \"string\", a number, or an empty body for null", what))
		return nil, http.StatusBadRequest, false
	}
	return body, 0, true
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// unknownFunction is the message of a start of a function nobody registered.
func unknownFunction(name string) string {
	return fmt.Sprintf("no orchestration named '%s' is registered on this node; check the function name (names are case-sensitive) or add it to the config file",
		truncate(name, 100))
}

// The start routes. The /api routes are those of the HTTP-triggered
// starter function of Durable Functions' samples, which answer 404 for an
// unknown function; the built-in {base}/orchestrators routes answer 400
// for it, as Durable Functions' reference says.
func (h *handler) startGenerated(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), orchestrator.NewID(), http.StatusNotFound)
}

func (h *handler) startWithID(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), r.PathValue("instanceId"), http.StatusNotFound)
}

func (h *handler) builtinStartGenerated(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), orchestrator.NewID(), http.StatusBadRequest)
}

func (h *handler) builtinStartWithID(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), r.PathValue("instanceId"), http.StatusBadRequest)
}

// startParams are the query parameters of a start.
var startParams = []string{"conflictPolicy", "reusePolicy", "ignoreStatuses", "timeout", "pollingInterval", "scheduledStartTime",
	"version", "tag", "returnInternalServerErrorOnFailure"}

// startRequest is what the query string of a start asks for.
type startRequest struct {
	opts orchestrator.StartOptions
	// wait is the timeout parameter: how long to wait for the instance to
	// finish before answering (waits is false without it).
	wait  time.Duration
	waits bool
	// failAs500 is returnInternalServerErrorOnFailure.
	failAs500 bool
}

// startRequest reads the query string of a start of fn: the policies,
// timeout and pollingInterval (seconds), scheduledStartTime, version (the
// registry's default version if absent) and tags.
func (h *handler) startRequest(q query, fn string) (*startRequest, error) {
	var s startRequest
	var err error
	if s.opts.ConflictPolicy, err = orchestrator.ParseConflictPolicy(q.get("conflictPolicy")); err != nil {
		return nil, err
	}
	if s.opts.ReusePolicy, err = orchestrator.ParseReusePolicy(q.get("reusePolicy")); err != nil {
		return nil, err
	}
	if s.opts.IgnoreStatuses, err = q.statusList("ignoreStatuses"); err != nil {
		return nil, err
	}
	if err = orchestrator.ValidateIgnoreStatuses(s.opts.ReusePolicy, s.opts.IgnoreStatuses); err != nil {
		return nil, err
	}
	if s.wait, s.waits, err = q.duration("timeout"); err != nil {
		return nil, err
	}
	// Soloist waits on an etcd watch and never polls: pollingInterval is
	// checked, as Durable Functions' poll-free providers take it, and has
	// no effect.
	if _, _, err = q.duration("pollingInterval"); err != nil {
		return nil, err
	}
	if s.failAs500, err = q.bool("returnInternalServerErrorOnFailure", false); err != nil {
		return nil, err
	}
	if s.opts.StartAt, err = q.time("scheduledStartTime"); err != nil {
		return nil, err
	}
	if s.opts.Tags, err = q.tags(); err != nil {
		return nil, err
	}
	s.opts.Version = q.get("version")
	def, _ := h.function(fn, "")
	if s.opts.Version == "" {
		s.opts.Version = def
	} else if _, ok := h.function(fn, s.opts.Version); !ok {
		reason := "this node has no such version of it registered; check the version, or leave version out to start the default version"
		if def != "" {
			reason += " '" + def + "'"
		}
		return nil, &orchestrator.ValidationError{Field: "version", Value: s.opts.Version, Reason: reason + " of '" + truncate(fn, 100) + "'"}
	}
	return &s, nil
}

// start serves the start routes; unknown is the code of an unknown
// function. Every check that can refuse the request runs before the one
// etcd transaction of Client.Start, so a refused start writes nothing.
func (h *handler) start(w http.ResponseWriter, r *http.Request, fn, id string, unknown int) {
	if _, ok := h.function(fn, ""); !ok {
		h.metrics.start("", unknown)
		writeError(w, unknown, unknownFunction(fn))
		return
	}
	invalid := func(err error) {
		h.metrics.start(fn, http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, publicMessage(err))
	}
	if err := orchestrator.ValidateInstanceID(id); err != nil {
		invalid(err)
		return
	}
	q, ok := h.query(w, r, startParams...)
	if !ok {
		h.metrics.start(fn, http.StatusBadRequest)
		return
	}
	req, err := h.startRequest(q, fn)
	if err != nil {
		invalid(err)
		return
	}
	input, code, ok := h.readJSONBody(w, r, "orchestration input")
	if !ok {
		h.metrics.start(fn, code)
		return
	}
	if err := h.ready(); err != nil {
		h.metrics.start(fn, h.notTaking(w, "start", err))
		return
	}

	ctx, cancel := h.opContext(r)
	defer cancel()
	ctx, span := h.traceStart(ctx, r, fn, id) // a child of the request's W3C traceparent, if any
	opts := req.opts
	opts.InstanceID, opts.Input = id, input
	opts.Trace = orchestrator.TraceContextFrom(ctx)
	startFn := h.client.Start
	if h.startFn != nil {
		startFn = h.startFn
	}
	res, err := startFn(ctx, fn, opts)
	traceStarted(span, res, err)
	span.End() // before any wait (?timeout=): the span is the start's
	if err != nil {
		var exists *orchestrator.ExistsError
		if errors.As(err, &exists) && exists.Status != nil {
			h.metrics.start(fn, http.StatusConflict)
			// Debug: replicas racing to start one singleton is the normal case.
			h.log.Debug("start refused: instance exists", "function", fn, "instance_id", id,
				"runtime_status", string(exists.Status.RuntimeStatus), "execution_id", exists.Status.ExecutionID,
				"reason", exists.Reason)
			writeJSON(w, http.StatusConflict, ConflictResponse{
				Error:             exists.Error(),
				ID:                exists.Status.InstanceID,
				RuntimeStatus:     string(exists.Status.RuntimeStatus),
				StatusQueryGetURI: h.checkStatus(r, exists.Status.InstanceID, false).StatusQueryGetURI,
			})
			return
		}
		h.metrics.start(fn, StatusCode(err))
		h.fail(w, r, err)
		return
	}
	cancel() // the etcd work is done; a wait has its own bound
	if !res.Started {
		h.metrics.start(fn, http.StatusOK)
		h.log.Debug("start returned the existing instance (useExisting or ignore)", "function", fn, "instance_id", id,
			"execution_id", res.Status.ExecutionID, "runtime_status", string(res.Status.RuntimeStatus))
		if req.waits {
			h.answerWaited(w, r, res.Status.InstanceID, req.wait, req.failAs500)
			return
		}
		cs := h.checkStatus(r, res.Status.InstanceID, req.failAs500)
		cs.ExecutionID = res.Status.ExecutionID
		writeJSON(w, http.StatusOK, cs)
		return
	}
	h.metrics.start(fn, http.StatusAccepted)
	attrs := []any{"function", fn, "instance_id", id, "execution_id", res.Status.ExecutionID}
	if res.Replaced != "" {
		attrs = append(attrs, "replaced_execution_id", res.Replaced)
	}
	if res.Status.Version != "" {
		attrs = append(attrs, "version", res.Status.Version)
	}
	h.log.Info("orchestration started", attrs...)
	if req.waits {
		h.answerWaited(w, r, id, req.wait, req.failAs500)
		return
	}
	h.writeAccepted(w, r, id, req.failAs500)
}
