package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// resultKeys are the keys every RESULT line carries, in this order; a key
// not measured (phase not run, not supported, failed) is n/a.
var resultKeys = []string{
	"etcd_txn_per_s",
	"starts_per_s", "start_p50_ms", "start_p99_ms", "start_ratio",
	"lifecycle_per_s", "lifecycle_ratio", "unfinished",
	"etcd_reqs_per_lifecycle",
	"grpc_lifecycle_per_s", "grpc_vs_native", "grpc_etcd_reqs_per_lifecycle",
	"takeover_p50_s", "takeover_p99_s", "takeover_max_s",
	"mass_takeover_s",
	"handoff_1000_s",
	"bytes_per_held_instance", "goroutines_per_held_instance", "watchers_per_held_instance", "etcd_watchers", "idle_etcd_reqs_per_s",
	"starts_api_per_s", "start_api_p99_ms", "start_api_ratio",
}

// results collects the table and the RESULT line.
type results struct {
	rows   []row
	values map[string]string
	nums   map[string]float64
	extra  []string // keys beyond resultKeys, in the order they came
	failed []string // phases that failed
}

type row struct{ phase, key, value, note string }

func newResults() *results {
	return &results{values: map[string]string{}, nums: map[string]float64{}}
}

// add records a value (already formatted, no spaces) with a note for the
// table.
func (r *results) add(phase, key, value, note string) {
	value = strings.ReplaceAll(value, " ", "_")
	if _, ok := r.values[key]; !ok && !slices.Contains(resultKeys, key) {
		r.extra = append(r.extra, key)
	}
	r.values[key] = value
	r.rows = append(r.rows, row{phase, key, value, note})
}

// addNum records a number, formatted by format.
func (r *results) addNum(phase, key string, v float64, format func(float64) string, note string) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.add(phase, key, "n/a", note)
		return
	}
	r.nums[key] = v
	r.add(phase, key, format(v), note)
}

// note adds a table line that is no RESULT key.
func (r *results) note(phase, what, note string) {
	r.rows = append(r.rows, row{phase, what, "", note})
}

// fail records a phase's error; its keys stay n/a.
func (r *results) fail(phase string, err error) {
	r.failed = append(r.failed, phase)
	r.rows = append(r.rows, row{phase, "FAILED", "", oneLine(err.Error())})
}

// ratio sets key = num / etcd_txn_per_s when both are known, in the
// table right after num.
func (r *results) ratio(phase, key, num string) { r.ratioTo(phase, key, num, "etcd_txn_per_s") }

// ratioTo sets key = num / den when both are known, in the table right
// after num.
func (r *results) ratioTo(phase, key, num, den string) {
	ref, ok1 := r.nums[den]
	v, ok2 := r.nums[num]
	if !ok1 || !ok2 || ref == 0 {
		return
	}
	r.addNum(phase, key, v/ref, f3, fmt.Sprintf("%s / %s", num, den))
	at := slices.IndexFunc(r.rows, func(x row) bool { return x.key == num })
	last := r.rows[len(r.rows)-1]
	r.rows = slices.Insert(r.rows[:len(r.rows)-1], at+1, last)
}

func (r *results) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tfigure\tvalue\tnotes")
	fmt.Fprintln(tw, "-----\t------\t-----\t-----")
	for _, x := range r.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", x.phase, x.key, x.value, x.note)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	var b strings.Builder
	b.WriteString("RESULT")
	for _, k := range append(slices.Clone(resultKeys), r.extra...) {
		v, ok := r.values[k]
		if !ok {
			v = "n/a"
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	fmt.Fprintln(w, b.String())
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
func f3(v float64) string { return fmt.Sprintf("%.3f", v) }
