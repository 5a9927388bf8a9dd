package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
)

// commonParams are taken by every route of the API, as in Durable
// Functions: code is the API key (see authorized); taskHub and connection
// select a task hub and a storage connection there, which Soloist does not
// have (a node serves the one store its etcd prefix names), so they are
// accepted and have no effect.
var commonParams = []string{"code", "taskHub", "connection"}

// multiParams may be given more than once; every other parameter only once.
var multiParams = map[string]bool{"runtimeStatus": true, "tag": true}

// paramHints explain parameters that a route does not take but another one
// does, or that the Durable Functions reference names differently.
var paramHints = map[string]string{
	"systemKey": "systemKey is the name of the key's value in the Durable Functions reference, not a parameter: " +
		"send the API key as code=<key>, the x-functions-key header or Authorization: Bearer <key>",
	"createdTimeFrom":  "it filters lists of instances: use GET " + BasePath + "/instances?createdTimeFrom=...",
	"createdTimeTo":    "it filters lists of instances: use GET " + BasePath + "/instances?createdTimeTo=...",
	"runtimeStatus":    "it filters lists of instances: use GET " + BasePath + "/instances?runtimeStatus=...",
	"instanceIdPrefix": "it filters lists of instances: use GET " + BasePath + "/instances?instanceIdPrefix=...",
	"top":              "it sizes pages of lists of instances: use GET " + BasePath + "/instances?top=...",
	"showHistory": "list items carry no history: read one instance's history with GET " + BasePath +
		"/instances/{instanceId}?showHistory=true",
	"showHistoryOutput": "list items carry no history: read one instance's history with GET " + BasePath +
		"/instances/{instanceId}?showHistory=true&showHistoryOutput=true",
}

// hintFor is the hint of paramHints for a name in any letter case, "" if none.
func hintFor(name string) string {
	for n, hint := range paramHints {
		if strings.EqualFold(n, name) {
			return hint
		}
	}
	return ""
}

// query is the query string of a request, with every name spelled as the
// route spells it.
type query url.Values

// query parses the request's query string and checks its names against
// the route's (and commonParams). Names are matched in any letter case, as
// Durable Functions does. An unknown parameter, a repeated one (except
// runtimeStatus and tag) and a query that is not valid URL encoding are
// refused with 400: a parameter that Soloist would ignore is never taken
// silently. On failure it has written the 400.
func (h *handler) query(w http.ResponseWriter, r *http.Request, names ...string) (query, bool) {
	raw, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(
			"the query string is not valid URL encoding (%v); percent-encode the values, e.g. + as %%2B and %% as %%25", err))
		return nil, false
	}
	all := append(append([]string(nil), names...), commonParams...)
	q := query{}
	for k, vs := range raw {
		name := ""
		for _, n := range all {
			if strings.EqualFold(k, n) {
				name = n
				break
			}
		}
		if name == "" {
			msg := fmt.Sprintf("unknown query parameter '%s' for %s %s", truncate(k, 100), r.Method, routePattern(r))
			if hint := hintFor(k); hint != "" {
				msg += ": " + hint
			} else {
				sorted := append([]string(nil), names...)
				sort.Strings(sorted)
				if len(sorted) == 0 {
					msg += ", which takes no query parameters besides code"
				} else {
					msg += "; it takes " + strings.Join(sorted, ", ")
				}
			}
			writeError(w, http.StatusBadRequest, msg+"; see docs/http-api.md")
			return nil, false
		}
		q[name] = append(q[name], vs...)
	}
	for name, vs := range q {
		if len(vs) > 1 && !multiParams[name] && name != "code" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("the query parameter '%s' is given %d times; give it once", name, len(vs)))
			return nil, false
		}
	}
	return q, true
}

// routePattern names the route r matched, for messages: the path with its
// instance ID and other values replaced by their names.
func routePattern(r *http.Request) string {
	if r.Pattern != "" {
		if _, p, ok := strings.Cut(r.Pattern, " "); ok {
			return p
		}
		return r.Pattern
	}
	return truncate(r.URL.Path, 200)
}

// get returns the first value of name, "" if absent.
func (q query) get(name string) string {
	if vs := q[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// has reports whether name was given, even with an empty value.
func (q query) has(name string) bool { return len(q[name]) > 0 }

// bool parses an optional boolean (true or false, in any letter case; 1
// and 0 too).
func (q query) bool(name string, def bool) (bool, error) {
	v := q.get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &orchestrator.ValidationError{Field: name, Value: v, Reason: "must be true or false"}
	}
	return b, nil
}

// timeLayouts are the time formats time parameters take: RFC 3339, and
// without a zone (then UTC), to the second or the minute, or a date alone
// (midnight UTC), as Durable Functions' parameters take ISO 8601 times.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02"}

// time parses an optional time; zero if absent.
func (q query) time(name string) (time.Time, error) {
	v := strings.TrimSpace(q.get(name))
	if v == "" {
		return time.Time{}, nil
	}
	try := []string{v}
	if strings.Contains(v, " ") {
		// A + of a zone offset that was not percent-encoded arrives as a space.
		try = append(try, strings.Replace(v, " ", "+", 1))
	}
	for _, s := range try {
		for _, layout := range timeLayouts {
			if t, err := time.Parse(layout, s); err == nil {
				return t.UTC(), nil
			}
		}
	}
	reason := "must be an RFC 3339 time such as 2026-12-01T09:30:00Z (a time without a zone is UTC; a date alone is its midnight UTC)"
	if strings.Contains(v, " ") {
		reason += "; percent-encode a + in the zone offset as %2B"
	}
	return time.Time{}, &orchestrator.ValidationError{Field: name, Value: v, Reason: reason}
}

// maxWait bounds the waits of timeout (start, restart) and
// waitForCompletion (status): a request holds its connection that long.
const maxWait = 5 * time.Minute

// duration parses an optional wait: a number of seconds, as Durable
// Functions' timeout and pollingInterval are (decimals allowed), or a Go
// duration such as 1m30s; from 0 to maxWait. set is false if absent.
func (q query) duration(name string) (d time.Duration, set bool, err error) {
	v := strings.TrimSpace(q.get(name))
	if v == "" {
		return 0, false, nil
	}
	bad := func(reason string) (time.Duration, bool, error) {
		return 0, false, &orchestrator.ValidationError{Field: name, Value: v, Reason: reason}
	}
	tooLong := fmt.Sprintf("must be at most %d seconds, the longest a request waits; wait less, and poll the statusQueryGetUri after that", int(maxWait.Seconds()))
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return bad("must be a number of seconds from 0 to 300, e.g. 30 or 2.5, or a duration such as 1m30s")
		}
		if f > maxWait.Seconds() {
			return bad(tooLong)
		}
		return time.Duration(f * float64(time.Second)), true, nil
	}
	d, err = time.ParseDuration(v)
	switch {
	case err != nil || d < 0:
		return bad("must be a number of seconds from 0 to 300, e.g. 30 or 2.5, or a duration such as 1m30s")
	case d > maxWait:
		return bad(tooLong)
	}
	return d, true, nil
}

// statuses parses the runtimeStatus values (comma lists, and the
// parameter repeated). none is set when only Canceled was given: a status
// of Durable Functions that no Soloist instance ever has, so the filter
// matches nothing (an empty list would match everything).
func (q query) statuses() (out []orchestrator.RuntimeStatus, none bool, err error) {
	canceled := false
	for _, v := range q["runtimeStatus"] {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			switch {
			case s == "":
				continue
			case strings.EqualFold(s, "Canceled"):
				canceled = true
				continue
			}
			rs, err := orchestrator.ParseRuntimeStatus(s)
			if err != nil {
				return nil, false, err
			}
			out = append(out, rs)
		}
	}
	return out, canceled && len(out) == 0, nil
}

// statusList parses the runtime statuses of parameter name: comma lists,
// and the parameter repeated.
func (q query) statusList(name string) ([]orchestrator.RuntimeStatus, error) {
	var out []orchestrator.RuntimeStatus
	for _, v := range q[name] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			rs, err := orchestrator.ParseRuntimeStatus(s)
			if err != nil {
				var ve *orchestrator.ValidationError
				if errors.As(err, &ve) {
					ve.Field = name
				}
				return nil, err
			}
			out = append(out, rs)
		}
	}
	return out, nil
}

// tags parses the tag=key:value parameters (Soloist's extension: Durable
// Functions' HTTP API has no tags). The first colon separates the key from
// the value, so a key cannot contain one; the value may.
func (q query) tags() (map[string]string, error) {
	vs := q["tag"]
	if len(vs) == 0 {
		return nil, nil
	}
	tags := map[string]string{}
	for _, v := range vs {
		k, val, ok := strings.Cut(v, ":")
		if !ok {
			return nil, &orchestrator.ValidationError{Field: "tag", Value: v,
				Reason: "must be key:value, e.g. tag=team:search (repeat tag for more tags)"}
		}
		if prev, dup := tags[k]; dup && prev != val {
			return nil, &orchestrator.ValidationError{Field: "tag", Value: v,
				Reason: fmt.Sprintf("the key '%s' is given twice, with values '%s' and '%s'; give each key once", truncate(k, 64), truncate(prev, 64), truncate(val, 64))}
		}
		tags[k] = val
	}
	if err := orchestrator.ValidateTags(tags); err != nil {
		return nil, err
	}
	return tags, nil
}
