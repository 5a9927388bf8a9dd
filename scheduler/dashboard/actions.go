package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
)

// readOnlyMessage is the 403 of every action route of a read-only dashboard.
const readOnlyMessage = "this dashboard is read-only (--ui-read-only): it offers no action; use the HTTP API or the soloist CLI"

// actions maps a dashboard action to the API call that does it.
var actions = map[string]struct {
	method, suffix string
	query          url.Values
}{
	"terminate": {http.MethodPost, "/terminate", nil},
	"suspend":   {http.MethodPost, "/suspend", nil},
	"resume":    {http.MethodPost, "/resume", nil},
	"rewind":    {http.MethodPost, "/rewind", nil},
	// The dashboard restarts a singleton under its own ID.
	"restart":    {http.MethodPost, "/restart", url.Values{"restartWithNewInstanceId": {"false"}}},
	"purge":      {http.MethodDelete, "", nil},
	"raiseEvent": {http.MethodPost, "/raiseEvent/", nil},
}

// callAPI sends one call to the API handler with r's credentials and
// returns its status and body.
func (d *Dashboard) callAPI(r *http.Request, method, path, rawPath string, q url.Values, body []byte) (int, []byte) {
	req, err := http.NewRequestWithContext(r.Context(), method, "http://dashboard/", bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = path, rawPath, q.Encode()
	req.RequestURI = req.URL.RequestURI()
	req.Host = r.Host
	for _, h := range []string{"Authorization", "X-Functions-Key", "Traceparent"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	d.cfg.API.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// action serves POST /ui/api/instances/{id}/{action}[?reason=|name=]: one
// action on one instance, through the API.
func (d *Dashboard) action(w http.ResponseWriter, r *http.Request) {
	if d.cfg.ReadOnly {
		writeError(w, http.StatusForbidden, readOnlyMessage)
		return
	}
	id, name := r.PathValue("id"), r.PathValue("action")
	a, ok := actions[name]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown action "+name+"; use terminate, suspend, resume, rewind, restart, purge or raiseEvent")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read the body: "+err.Error())
		return
	}
	code, out := d.one(r, id, name, a.method, a.suffix, a.query, r.URL.Query(), body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

func (d *Dashboard) one(r *http.Request, id, name, method, suffix string, fixed, q url.Values, body []byte) (int, []byte) {
	query := url.Values{}
	for k, v := range fixed {
		query[k] = v
	}
	if reason := q.Get("reason"); reason != "" && name != "purge" && name != "raiseEvent" && name != "restart" {
		query.Set("reason", reason)
	}
	path := d.cfg.APIBase + "/instances/" + id + suffix
	raw := d.cfg.APIBase + "/instances/" + url.PathEscape(id) + suffix
	if name == "raiseEvent" {
		ev := q.Get("name")
		if ev == "" {
			return http.StatusBadRequest, []byte(`{"error":"raiseEvent needs the event's name: ?name=<event>"}`)
		}
		path += ev
		raw += url.PathEscape(ev)
		if len(bytes.TrimSpace(body)) == 0 {
			body = []byte("null")
		}
	} else {
		body = nil
	}
	return d.callAPI(r, method, path, raw, query, body)
}

// bulkRequest is the body of POST /ui/api/bulk: an action on the instances
// listed, or on every instance that matches the instances page's filter
// (its query string).
type bulkRequest struct {
	Action string   `json:"action"`
	IDs    []string `json:"ids"`
	Filter *string  `json:"filter"`
	Reason string   `json:"reason"`
}

type bulkFailure struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

type bulkResult struct {
	Matched   int           `json:"matched"`
	Succeeded int           `json:"succeeded"`
	Failed    []bulkFailure `json:"failed"`
}

// maxBulk bounds one bulk action.
const maxBulk = maxScan

// bulk serves POST /ui/api/bulk: terminate, purge or restart many.
func (d *Dashboard) bulk(w http.ResponseWriter, r *http.Request) {
	if d.cfg.ReadOnly {
		writeError(w, http.StatusForbidden, readOnlyMessage)
		return
	}
	var req bulkRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error()+`; send {"action":"terminate|purge|restart","ids":[...]} or {"action":..,"filter":"<query string>"}`)
		return
	}
	switch req.Action {
	case "terminate", "purge", "restart":
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bulk action %q: use terminate, purge or restart", req.Action))
		return
	}
	ids := req.IDs
	if req.Filter != nil {
		if len(ids) > 0 {
			writeError(w, http.StatusBadRequest, "give ids or filter, not both")
			return
		}
		q, err := url.ParseQuery(*req.Filter)
		if err == nil {
			q.Del("page")
			q.Del("sort")
			var f filter
			if f, err = parseFilter(q); err == nil {
				ctx, cancel := d.ctx(r)
				sts, _, lerr := d.matching(ctx, f)
				cancel()
				if lerr != nil {
					writeError(w, http.StatusServiceUnavailable, "cannot read the instances: "+lerr.Error())
					return
				}
				for _, st := range sts {
					ids = append(ids, st.InstanceID)
				}
			}
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "filter: "+err.Error())
			return
		}
	}
	if len(ids) == 0 {
		writeError(w, http.StatusBadRequest, "no instance selected")
		return
	}
	if len(ids) > maxBulk {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d instances: one bulk action takes at most %d; narrow the filter", len(ids), maxBulk))
		return
	}
	a := actions[req.Action]
	q := url.Values{}
	if req.Reason != "" {
		q.Set("reason", req.Reason)
	}
	res := bulkResult{Matched: len(ids), Failed: []bulkFailure{}}
	for _, id := range ids {
		if r.Context().Err() != nil {
			break
		}
		code, out := d.one(r, id, req.Action, a.method, a.suffix, a.query, q, nil)
		if code >= 200 && code < 300 {
			res.Succeeded++
			continue
		}
		var e struct{ Error string }
		_ = json.Unmarshal(out, &e)
		res.Failed = append(res.Failed, bulkFailure{ID: id, Error: fmt.Sprintf("%d: %s", code, e.Error)})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(res)
}
