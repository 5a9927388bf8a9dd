package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/soloist-dev/soloist/orchestrator"
)

// ErrUnauthorized means a request carried no valid API key (HTTP 401).
var ErrUnauthorized = errors.New("httpapi: missing or invalid API key")

// statusTable is the one table that maps errors to HTTP status codes. The
// first entry that errors.Is matches wins, so more specific errors come
// first. Anything that matches no entry is a 500.
var statusTable = []struct {
	err  error
	code int
}{
	{orchestrator.ErrInvalidInstanceID, http.StatusBadRequest},
	{orchestrator.ErrInvalidInput, http.StatusBadRequest},
	{ErrUnauthorized, http.StatusUnauthorized},
	{orchestrator.ErrUnknownFunction, http.StatusNotFound},
	{orchestrator.ErrInstanceNotFound, http.StatusNotFound},
	{orchestrator.ErrInstanceExists, http.StatusConflict},
	{orchestrator.ErrInstanceActive, http.StatusConflict},
	{orchestrator.ErrInstanceTerminal, http.StatusGone},
	{orchestrator.ErrNotRewindable, http.StatusConflict},
	{orchestrator.ErrPayloadTooLarge, http.StatusRequestEntityTooLarge},
	{orchestrator.ErrStoreLimit, http.StatusRequestEntityTooLarge},
	{orchestrator.ErrNoSpace, http.StatusInsufficientStorage},
	{orchestrator.ErrStoreDenied, http.StatusServiceUnavailable},
	{orchestrator.ErrUnavailable, http.StatusServiceUnavailable},
	{context.DeadlineExceeded, http.StatusServiceUnavailable},
}

// StatusCode returns the HTTP status code of err: 400 for
// orchestrator.ErrInvalidInput and ErrInvalidInstanceID, 401 for
// ErrUnauthorized, 404 for ErrUnknownFunction and ErrInstanceNotFound, 409
// for ErrInstanceExists and ErrInstanceActive, 410 for ErrInstanceTerminal,
// 413 for ErrPayloadTooLarge and ErrStoreLimit, 507 for ErrNoSpace (etcd's
// NOSPACE alarm: nothing was written, and nothing can be until an operator
// frees space), 503 for ErrUnavailable, context.DeadlineExceeded and
// ErrStoreDenied (etcd refused the node's own user: an operator must grant
// it the prefix), 200 for nil and 500 for anything else. Errors
// are matched with errors.Is, so wrapped and typed errors (ExistsError,
// ValidationError, TerminalError) map like their sentinels.
func StatusCode(err error) int {
	if err == nil {
		return http.StatusOK
	}
	for _, e := range statusTable {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return http.StatusInternalServerError
}

// ErrorResponse is the body of every error response: what is wrong and how
// to fix it.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ConflictResponse is the body of a 409 from a start refused by the
// conflict or reuse policy.
type ConflictResponse struct {
	Error             string `json:"error"`
	ID                string `json:"id"`
	RuntimeStatus     string `json:"runtimeStatus"`
	StatusQueryGetURI string `json:"statusQueryGetUri"`
}

// noSpaceMessage is msg, about etcd's NOSPACE alarm, with what an operator
// does about it unless msg says so already.
func noSpaceMessage(msg string) string {
	if strings.Contains(msg, "alarm disarm") {
		return msg
	}
	return msg + "; " + orchestrator.NoSpaceHelp
}

// deniedHelp is what an operator does about orchestrator.ErrStoreDenied.
const deniedHelp = "etcd refused the node's etcd user; nothing was written. An operator must give that user's role read and write on the node's --etcd-prefix " +
	"(etcdctl role grant-permission --prefix=true ROLE readwrite PREFIX) or fix its credentials (--etcd-username, --etcd-password-file)"

// publicMessage is err's message for a client: the orchestrator's package
// prefix is dropped, the rest is kept (it says what to do).
func publicMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "orchestrator: ")
}

// writeJSON writes v as the JSON body of a response with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only a RawMessage that is not JSON can fail, and every payload
		// is validated before it is stored; answer 500 rather than half a body.
		code = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(ErrorResponse{Error: "internal error: the response could not be encoded; the details are in the server log"})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// writeError writes the JSON error body {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Error: msg})
}

// truncate shortens s (user input echoed in a message) to n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
