package harness

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Figures is one row of the suite's table.
type Figures struct {
	Scenario     string
	Ops          int
	Acked        int
	Duplicates   int
	Lost         int
	Rejections   float64 // soloist_fencing_rejections_total
	Failovers    float64 // soloist_failovers_total
	HandoffsM    float64 // soloist_handoffs_total
	StaleEffects int
	StaleCross   int
	Reruns       int
	Takeover     []time.Duration
	Handoff      []time.Duration
	TTL          time.Duration
	Porcupine    string
	Violations   int
	Wall         time.Duration
	Note         string
}

// FiguresOf turns a result into a row.
func FiguresOf(name string, ttl time.Duration, r *Result, wall time.Duration) Figures {
	return Figures{
		Scenario: name, Ops: r.Ops, Acked: r.Acked, Duplicates: r.Duplicates, Lost: r.Lost,
		Rejections: r.Metrics["soloist_fencing_rejections_total"], Failovers: r.Metrics["soloist_failovers_total"],
		HandoffsM: r.Metrics["soloist_handoffs_total"], StaleEffects: r.StaleEffects, StaleCross: r.StaleCross, Reruns: r.Reruns,
		Takeover: r.Takeovers, Handoff: r.Handoffs, TTL: ttl, Porcupine: string(r.Porcupine),
		Violations: len(r.Violations), Wall: wall,
	}
}

// Percentile returns the p-th percentile (0-100) of ds, nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func dist(ds []time.Duration, withMax bool) string {
	if len(ds) == 0 {
		return "-"
	}
	s := secs(Percentile(ds, 50)) + "/" + secs(Percentile(ds, 99))
	if withMax {
		s += "/" + secs(Percentile(ds, 100))
	}
	return fmt.Sprintf("%s (n=%d)", s, len(ds))
}

// Header is the table's header.
const Header = "| scenario | ops | acked starts | duplicates | lost | fencing rejections | failovers | handoffs | stale effects: same exec / after terminate | re-runs | takeover p50/p99/max s (TTL) | handoff p50/p99 s | porcupine | violations | wall |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// Row formats the figures as a Markdown table row.
func (f Figures) Row() string {
	take := dist(f.Takeover, true)
	if len(f.Takeover) > 0 {
		take += fmt.Sprintf(" (TTL %s, max %.1fxTTL)", f.TTL, Percentile(f.Takeover, 100).Seconds()/f.TTL.Seconds())
	}
	name := f.Scenario
	if f.Note != "" {
		name += " (" + f.Note + ")"
	}
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %.0f | %.0f | %.0f | %d / %d | %d | %s | %s | %s | %d | %s |",
		name, f.Ops, f.Acked, f.Duplicates, f.Lost, f.Rejections, f.Failovers, f.HandoffsM, f.StaleEffects, f.StaleCross, f.Reruns,
		take, dist(f.Handoff, false), f.Porcupine, f.Violations, f.Wall.Round(100*time.Millisecond))
}

var (
	tableMu sync.Mutex
	table   []string
)

// AddRow keeps a row for the summary the suite prints at the end.
func AddRow(row string) {
	tableMu.Lock()
	table = append(table, row)
	tableMu.Unlock()
}

// Table is the summary of every row added so far.
func Table() string {
	tableMu.Lock()
	defer tableMu.Unlock()
	if len(table) == 0 {
		return ""
	}
	return Header + "\n" + strings.Join(table, "\n") + "\n"
}
