package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// waitForCompletion waits up to d for instance id to be terminal, driven by
// the client's etcd watch on its record (never by polling), and returns its
// status. It returns nil and no error when d runs out first or the node
// begins to stop (Config.Stopping), so that the caller answers with what it
// answers without waiting; an error if the instance is gone or the store
// failed. It extends the connection's write deadline past the wait, so a
// server's WriteTimeout shorter than the wait does not cut the answer.
func (h *handler) waitForCompletion(w http.ResponseWriter, r *http.Request, id string, d time.Duration) (*orchestrator.Status, error) {
	if d <= 0 {
		return nil, nil
	}
	// Not supported by every ResponseWriter (a recorder): then the server's own deadline.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + h.timeout + h.readTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	if h.stopping != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-h.stopping:
				cancel()
			case <-stop:
			}
		}()
	}
	st, err := h.client.WaitForOrchestrationCompletion(ctx, id)
	switch {
	case err == nil:
		return st, nil
	case errors.Is(err, orchestrator.ErrInstanceNotFound):
		return nil, err
	case ctx.Err() != nil && r.Context().Err() == nil:
		return nil, nil // the wait is over: answer as now
	}
	return nil, err
}

// answerWaited answers a start or restart of id that asked to wait (the
// timeout parameter), as Durable Functions'
// WaitForCompletionOrCreateCheckStatusResponseAsync does: if the instance
// completes within d, 200 with its output as the body; if it fails or is
// terminated within d, its status body (200, or 500 for Failed with
// failAs500); otherwise 202 with the check-status body. The start already
// happened, so a wait that fails (etcd stops answering) answers 202 too: the
// client reads the status at statusQueryGetUri.
func (h *handler) answerWaited(w http.ResponseWriter, r *http.Request, id string, d time.Duration, failAs500 bool) {
	st, err := h.waitForCompletion(w, r, id, d)
	if err != nil && r.Context().Err() == nil {
		h.log.Warn("waiting for a started instance failed; answering 202", "instance_id", id, "error", err)
	}
	switch {
	case st == nil:
		h.writeAccepted(w, r, id, failAs500)
	case st.RuntimeStatus == orchestrator.StatusCompleted:
		writeJSON(w, http.StatusOK, orNull(st.Output))
	default:
		h.writeStatus(w, r, st, statusOptions{showInput: true, failAs500: failAs500})
	}
}
