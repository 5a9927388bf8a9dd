package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/soloist-dev/soloist/orchestrator"
	"github.com/soloist-dev/soloist/scheduler"
)

// pageSize is the rows of one page of the instances table; maxScan is how
// many matching instances a filter reads to sort and page them.
const (
	pageSize = 50
	maxScan  = 5000
)

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return time.Since(t).Round(time.Second).String()
	},
	"ms": func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixMilli()
	},
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dur": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"json": func(m json.RawMessage) string {
		if len(m) == 0 || string(m) == "null" {
			return ""
		}
		var v any
		if json.Unmarshal(m, &v) != nil {
			return string(m)
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		return string(b)
	},
	"path":   url.PathEscape,
	"lower":  func(s orchestrator.RuntimeStatus) string { return strings.ToLower(string(s)) },
	"active": func(s orchestrator.RuntimeStatus) bool { return s.Active() },
	"add":    func(a, b int) int { return a + b },
	"names": func(ns []string) string {
		if len(ns) == 1 && ns[0] == orchestrator.AnyFunction {
			return "any (no filter)"
		}
		return strings.Join(ns, ", ")
	},
	"statuses": func() []orchestrator.RuntimeStatus { return orchestrator.AllStatuses },
}

type page struct {
	ReadOnly bool
	Health   *health
	Live     bool
	Error    string
	Data     any
}

type health struct{ Title, Text string }

func (d *Dashboard) health() *health {
	err := d.cfg.Node.Ready()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, orchestrator.ErrNoSpace):
		return &health{"etcd is full (NOSPACE)", "etcd raised its NOSPACE alarm and refuses every write: no instance can start or progress. " + orchestrator.NoSpaceHelp + ". Nodes recover by themselves within about 5 s once the alarm is disarmed."}
	case errors.Is(err, scheduler.ErrNoSession):
		return &health{"etcd unreachable", "This node has no live etcd session: etcd does not answer. Check the etcd endpoints and the network; reads fail fast with 503 and writes within 10 s until etcd answers again."}
	case errors.Is(err, scheduler.ErrDraining):
		return &health{"node draining", "This node is shutting down and takes no new work; use another node's dashboard."}
	}
	return &health{"node not ready", err.Error()}
}

func (d *Dashboard) render(w http.ResponseWriter, name string, data any, errMsg string) {
	p := page{ReadOnly: d.cfg.ReadOnly, Health: d.health(), Live: d.cfg.Node.Watches(), Data: data, Error: errMsg}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := d.tmpl.ExecuteTemplate(w, name, p); err != nil {
		d.log.Error("dashboard: render", "template", name, "error", err)
	}
}

func (d *Dashboard) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 5*time.Second)
}

// row is one instance of the table.
type row struct {
	*orchestrator.Status
	TTLAt int64 // when the holder's lease ends unless renewed, unix ms; 0 unknown
}

type instancesData struct {
	Rows        []row
	Total       int
	Capped      bool
	Page, Pages int
	Query       url.Values
	Statuses    map[string]bool
	Sort        string
	Prev, Next  template.URL // query strings encoded here
	QueryString template.URL
}

// filter is the instances page's query: status (repeated), function,
// prefix, tag (key:value, repeated), from, to (RFC 3339 or a date), sort,
// page.
type filter struct {
	list     orchestrator.ListOptions
	function string
	sort     string
	page     int
}

func parseFilter(q url.Values) (filter, error) {
	var f filter
	for k, vs := range q {
		switch k {
		case "status", "tag":
		case "function", "prefix", "from", "to", "sort", "page", "part":
			if len(vs) > 1 {
				return f, fmt.Errorf("parameter %s is given %d times; give it once", k, len(vs))
			}
		default:
			return f, fmt.Errorf("unknown parameter %q; use status, function, prefix, tag, from, to, sort, page", k)
		}
	}
	for _, s := range q["status"] {
		if s == "" {
			continue
		}
		st, err := orchestrator.ParseRuntimeStatus(s)
		if err != nil {
			return f, err
		}
		f.list.Statuses = append(f.list.Statuses, st)
	}
	for _, t := range q["tag"] {
		if t == "" {
			continue
		}
		k, v, ok := strings.Cut(t, ":")
		if !ok || k == "" {
			return f, fmt.Errorf("tag %q: use key:value", t)
		}
		if f.list.Tags == nil {
			f.list.Tags = map[string]string{}
		}
		f.list.Tags[k] = v
	}
	f.list.InstanceIDPrefix = q.Get("prefix")
	f.function = q.Get("function")
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.list.CreatedFrom}, {"to", &f.list.CreatedTo}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := parseTime(v)
		if err != nil {
			return f, fmt.Errorf("%s %q: use RFC 3339 (2026-12-05T14:00:00Z), a local date-time (2026-12-05T14:00) or a date (2026-12-05)", p.name, v)
		}
		*p.dst = t
	}
	switch f.sort = q.Get("sort"); f.sort {
	case "", "-created", "created", "-updated", "updated", "id":
	default:
		return f, fmt.Errorf("sort %q: use id, created, -created, updated or -updated", f.sort)
	}
	if f.sort == "" {
		f.sort = "-created"
	}
	f.page = 1
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return f, fmt.Errorf("page %q: use a whole number from 1", v)
		}
		f.page = n
	}
	return f, nil
}

func parseTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("bad time")
}

// matching reads up to maxScan instances that match f.
func (d *Dashboard) matching(ctx context.Context, f filter) ([]*orchestrator.Status, bool, error) {
	opts := f.list
	opts.Top = 1000
	var out []*orchestrator.Status
	for {
		sts, next, err := d.cfg.Client.List(ctx, opts)
		if err != nil {
			return nil, false, err
		}
		for _, st := range sts {
			if f.function == "" || st.Name == f.function {
				out = append(out, st)
			}
		}
		if len(out) >= maxScan {
			return out[:maxScan], true, nil
		}
		if next == "" {
			return out, false, nil
		}
		opts.ContinuationToken = next
	}
}

func (d *Dashboard) fragInstances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseFilter(q)
	name := "instances"
	if q.Get("part") == "table" {
		name = "table"
	}
	data := &instancesData{Query: q, Statuses: map[string]bool{}, Sort: f.sort}
	for _, s := range q["status"] {
		data.Statuses[s] = true
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		d.render(w, name, data, err.Error())
		return
	}
	ctx, cancel := d.ctx(r)
	defer cancel()
	sts, capped, err := d.matching(ctx, f)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		d.render(w, name, data, "cannot read the instances: "+err.Error())
		return
	}
	sort.SliceStable(sts, func(i, j int) bool {
		a, b := sts[i], sts[j]
		switch f.sort {
		case "created":
			return a.CreatedTime.Before(b.CreatedTime)
		case "-created":
			return a.CreatedTime.After(b.CreatedTime)
		case "updated":
			return a.LastUpdatedTime.Before(b.LastUpdatedTime)
		case "-updated":
			return a.LastUpdatedTime.After(b.LastUpdatedTime)
		}
		return a.InstanceID < b.InstanceID
	})
	data.Total, data.Capped = len(sts), capped
	data.Pages = max(1, (len(sts)+pageSize-1)/pageSize)
	data.Page = min(f.page, data.Pages)
	lo := (data.Page - 1) * pageSize
	sts = sts[lo:min(lo+pageSize, len(sts))]
	leases := d.nodeLeases(ctx)
	for _, st := range sts {
		rw := row{Status: st}
		if st.Node != "" {
			if left, err := d.ttl.get(ctx, d.cfg.Node, leases[st.Node]); err == nil {
				rw.TTLAt = time.Now().Add(left).UnixMilli()
			}
		}
		data.Rows = append(data.Rows, rw)
	}
	base := url.Values{}
	for k, v := range q {
		if k != "page" && k != "part" {
			base[k] = v
		}
	}
	data.QueryString = template.URL(base.Encode())
	if data.Page > 1 {
		base.Set("page", strconv.Itoa(data.Page-1))
		data.Prev = template.URL(base.Encode())
	}
	if data.Page < data.Pages {
		base.Set("page", strconv.Itoa(data.Page+1))
		data.Next = template.URL(base.Encode())
	}
	d.render(w, name, data, "")
}

// nodeLeases maps each live node to its session lease ID.
func (d *Dashboard) nodeLeases(ctx context.Context) map[string]string {
	out := map[string]string{}
	nodes, err := d.cfg.Node.Nodes(ctx)
	if err != nil {
		return out
	}
	for _, n := range nodes {
		out[n.Node] = n.LeaseID
	}
	return out
}

type instanceData struct {
	St        *orchestrator.Status
	TTLAt     int64
	Failures  []*orchestrator.FailureDetails
	Timeline  []step
	Ownership []OwnershipEvent
	// Generations are the executions this node saw held, oldest first:
	// etcd keeps the history of the current one only.
	Generations []Generation
	HistErr     string
}

// step is one line of the timeline: an event, with the duration and
// attempt number of the activity or timer it ends.
type step struct {
	orchestrator.HistoryEvent
	Took    time.Duration
	Attempt int
	Kind    string // css class: task, timer, event, sub, can, end, fail
}

func (d *Dashboard) fragInstance(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	ctx, cancel := d.ctx(r)
	defer cancel()
	st, err := d.cfg.Client.Status(ctx, id)
	if err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, orchestrator.ErrInstanceNotFound) {
			code = http.StatusNotFound
		} else if errors.Is(err, orchestrator.ErrInvalidInstanceID) {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
		d.render(w, "instance", &instanceData{}, err.Error())
		return
	}
	data := &instanceData{St: st, Ownership: d.own.of(id)}
	data.Generations = generations(data.Ownership)
	if st.Node != "" {
		if left, err := d.ttl.get(ctx, d.cfg.Node, d.nodeLeases(ctx)[st.Node]); err == nil {
			data.TTLAt = time.Now().Add(left).UnixMilli()
		}
	}
	for f := st.FailureDetails; f != nil && len(data.Failures) < 10; f = f.InnerFailure {
		data.Failures = append(data.Failures, f)
	}
	hist, err := d.cfg.Client.History(ctx, id, st.ExecutionID)
	if err != nil {
		data.HistErr = err.Error()
	}
	data.Timeline = timeline(hist)
	d.render(w, "instance", data, "")
}

func timeline(h []orchestrator.HistoryEvent) []step {
	started := map[int]time.Time{}
	attempts := map[string]int{}
	out := make([]step, 0, len(h))
	for _, ev := range h {
		s := step{HistoryEvent: ev}
		switch ev.EventType {
		case orchestrator.EventTaskScheduled:
			started[ev.TaskID] = ev.Timestamp
			attempts[ev.Name]++
			s.Attempt, s.Kind = attempts[ev.Name], "task"
		case orchestrator.EventTaskCompleted, orchestrator.EventTaskFailed, orchestrator.EventTimerFired,
			orchestrator.EventSubOrchestrationInstanceCompleted, orchestrator.EventSubOrchestrationInstanceFailed:
			if t, ok := started[ev.TaskID]; ok {
				s.Took = ev.Timestamp.Sub(t)
			}
			s.Kind = "task"
			if ev.EventType == orchestrator.EventTaskFailed || ev.EventType == orchestrator.EventSubOrchestrationInstanceFailed {
				s.Kind = "fail"
			}
		case orchestrator.EventTimerCreated:
			started[ev.TaskID] = ev.Timestamp
			s.Kind = "timer"
		case orchestrator.EventSubOrchestrationInstanceCreated:
			started[ev.TaskID] = ev.Timestamp
			s.Kind = "sub"
		case orchestrator.EventEventRaised, orchestrator.EventExecutionSuspended, orchestrator.EventExecutionResumed:
			s.Kind = "event"
		case orchestrator.EventContinuedAsNew:
			s.Kind = "can"
		default:
			s.Kind = "end"
		}
		out = append(out, s)
	}
	return out
}

type nodeRow struct {
	orchestrator.NodeInfo
	TTLAt int64
	Held  int
}

type clusterData struct {
	Nodes     []nodeRow
	Holdings  []holding
	Takeovers []OwnershipEvent
	Gone      map[string]time.Time
	// Node is this node's ID; GRPC says it has a gRPC listener, and
	// Workers are the workers connected to it.
	Node    string
	GRPC    bool
	Workers []Worker
}

type holding struct {
	ID string
	scheduler.Holder
}

func (d *Dashboard) fragCluster(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := d.ctx(r)
	defer cancel()
	nodes, err := d.cfg.Node.Nodes(ctx)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		d.render(w, "cluster", &clusterData{}, err.Error())
		return
	}
	owners := d.cfg.Node.Owners()
	held := map[string]int{}
	data := &clusterData{}
	for id, h := range owners {
		held[h.Node]++
		data.Holdings = append(data.Holdings, holding{ID: id, Holder: h})
	}
	sort.Slice(data.Holdings, func(i, j int) bool { return data.Holdings[i].ID < data.Holdings[j].ID })
	if len(data.Holdings) > 500 {
		data.Holdings = data.Holdings[:500]
	}
	for _, n := range nodes {
		nr := nodeRow{NodeInfo: n, Held: held[n.Node]}
		if left, err := d.ttl.get(ctx, d.cfg.Node, n.LeaseID); err == nil {
			nr.TTLAt = time.Now().Add(left).UnixMilli()
		}
		data.Nodes = append(data.Nodes, nr)
	}
	data.Node = d.cfg.Node.ID()
	if d.cfg.Workers != nil {
		data.GRPC, data.Workers = true, d.cfg.Workers.ConnectedWorkers()
	}
	data.Takeovers, data.Gone = d.own.takeovers()
	for _, n := range nodes {
		delete(data.Gone, n.Node)
	}
	d.render(w, "cluster", data, "")
}

func (d *Dashboard) fragSchedules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := d.ctx(r)
	defer cancel()
	ss, err := d.cfg.Node.Schedules(ctx)
	msg := ""
	if err != nil {
		msg = "some schedule states cannot be read: " + err.Error()
	}
	d.render(w, "schedules", ss, msg)
}
