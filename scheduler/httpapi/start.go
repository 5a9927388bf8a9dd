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

	"github.com/soloist-dev/soloist/orchestrator"
)

// CheckStatus is the body of a 202 from a start or restart, and of a 200
// from a start with conflictPolicy=useExisting: the URLs that manage the
// instance, as Durable Functions returns them. sendEventPostUri keeps the
// placeholder {eventName}, and terminate, suspend and resume the
// placeholder {text} of their reason, for the caller to fill in.
type CheckStatus struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	RestartPostURI        string `json:"restartPostUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
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

// checkStatus builds the check-status body of id.
func (h *handler) checkStatus(r *http.Request, id string) CheckStatus {
	base := h.instanceURL(r, id)
	code := h.codeParam(r)
	plain := func(u string) string {
		if code == "" {
			return u
		}
		return u + "?" + code
	}
	reason := func(u string) string {
		u += "?reason={text}"
		if code != "" {
			u += "&" + code
		}
		return u
	}
	return CheckStatus{
		ID:                    id,
		StatusQueryGetURI:     plain(base),
		SendEventPostURI:      plain(base + "/raiseEvent/{eventName}"),
		TerminatePostURI:      reason(base + "/terminate"),
		PurgeHistoryDeleteURI: plain(base),
		RestartPostURI:        plain(base + "/restart"),
		SuspendPostURI:        reason(base + "/suspend"),
		ResumePostURI:         reason(base + "/resume"),
	}
}

// writeAccepted answers 202 with the check-status body of id, Location and
// Retry-After.
func (h *handler) writeAccepted(w http.ResponseWriter, r *http.Request, id string) {
	cs := h.checkStatus(r, id)
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

func (h *handler) startGenerated(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), orchestrator.NewID())
}

func (h *handler) startWithID(w http.ResponseWriter, r *http.Request) {
	h.start(w, r, r.PathValue("functionName"), r.PathValue("instanceId"))
}

// start serves both start routes. Every check that can refuse the request
// runs before the one etcd transaction of Client.Start, so a refused start
// writes nothing.
func (h *handler) start(w http.ResponseWriter, r *http.Request, fn, id string) {
	if !h.hasFunction(fn) {
		h.metrics.start("", http.StatusNotFound)
		writeError(w, http.StatusNotFound, unknownFunction(fn))
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
	q := r.URL.Query()
	cp, err := orchestrator.ParseConflictPolicy(q.Get("conflictPolicy"))
	if err != nil {
		invalid(err)
		return
	}
	rp, err := orchestrator.ParseReusePolicy(q.Get("reusePolicy"))
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
	defer span.End()
	res, err := h.client.Start(ctx, fn, orchestrator.StartOptions{
		InstanceID: id, Input: input, ConflictPolicy: cp, ReusePolicy: rp,
		Trace: orchestrator.TraceContextFrom(ctx),
	})
	traceStarted(span, res, err)
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
				StatusQueryGetURI: h.checkStatus(r, exists.Status.InstanceID).StatusQueryGetURI,
			})
			return
		}
		h.metrics.start(fn, StatusCode(err))
		h.fail(w, r, err)
		return
	}
	if !res.Started {
		h.metrics.start(fn, http.StatusOK)
		h.log.Debug("start returned the existing instance (useExisting)", "function", fn, "instance_id", id,
			"execution_id", res.Status.ExecutionID, "runtime_status", string(res.Status.RuntimeStatus))
		writeJSON(w, http.StatusOK, h.checkStatus(r, res.Status.InstanceID))
		return
	}
	h.metrics.start(fn, http.StatusAccepted)
	attrs := []any{"function", fn, "instance_id", id, "execution_id", res.Status.ExecutionID}
	if res.Replaced != "" {
		attrs = append(attrs, "replaced_execution_id", res.Replaced)
	}
	h.log.Info("orchestration started", attrs...)
	h.writeAccepted(w, r, id)
}
