package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/robfig/cron/v3"

	"github.com/soloist-dev/soloist/orchestrator"
)

// Schedule starts a function at the ticks of a cron spec (docs/contract.md section 6),
// with the singleton start: if the schedule's instance is still active at a
// tick, the tick is skipped and counted, never queued.
//
// Every node with the schedule in its Config computes the same ticks and
// claims each one with orchestrator.Client.ClaimTick, which moves the
// schedule's state key ({prefix}v1/schedules/{name}) forward to the tick in
// the same etcd transaction that starts the instance (or records the skip).
// So across any number of replicas, restarts and etcd leader changes:
//
//   - a tick starts at most one execution, and a tick at or before the last
//     one claimed starts nothing;
//   - an execution starts only when the previous one is terminal, so runs of
//     a schedule never overlap;
//   - each tick is counted once across the cluster, as started or skipped
//     (soloist_schedule_ticks_total on the node that claimed it).
//
// Not guaranteed: ticks that pass while no node runs (or while every node is
// draining or cut off from etcd) are not caught up, as with cron; after a
// pause a node claims only the latest due tick. A claim that fails (etcd
// unreachable) is retried until the next tick is due, so that tick may start
// late, never twice. Tick times come from each node's clock: keep clocks in
// sync (NTP). A node whose clock is behind claims nothing the others already
// claimed; one whose clock is ahead claims ticks early. Renaming a schedule
// starts a new state key; the old one can be deleted.
type Schedule struct {
	// Name names the schedule: its state key and its metrics label. 1 to 128
	// letters, digits, '.', '_' and '-'. Required.
	Name string
	// Spec is a 5-field cron spec ("0 2 * * *": minute, hour, day of month,
	// month, day of week) or a descriptor: @yearly, @monthly, @weekly,
	// @daily, @hourly, @every <duration>. Required. See ParseCron.
	Spec string
	// Function is the orchestration to start; the node's Registry must have
	// it. Required.
	Function string
	// Input is the input of every execution, as JSON. Defaults to null.
	Input json.RawMessage
	// InstanceID is the singleton's instance ID. Defaults to Name.
	InstanceID string
	// Location is the time zone of Spec's fields. Defaults to UTC.
	Location *time.Location
}

// Cron is a parsed cron spec.
type Cron struct {
	spec  cron.Schedule
	every time.Duration // for @every: ticks at whole multiples of it
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

const cronHelp = `use 5 fields (minute hour day-of-month month day-of-week), e.g. "0 2 * * *" or "*/15 * * * 1-5", ` +
	`or one of @yearly, @monthly, @weekly, @daily, @hourly, @every 30s`

// ParseCron parses a schedule's spec. Errors say what is wrong and how to
// write it.
//
// @every d ticks at the whole multiples of d since 0001-01-01 UTC (so
// "@every 30s" ticks at :00 and :30 of every minute), not d after the
// node started: every node must compute the same ticks. d is whole seconds,
// at least 1s.
func ParseCron(spec string) (*Cron, error) {
	spec = strings.TrimSpace(spec)
	bad := func(reason string) error { return fmt.Errorf("invalid cron %q: %s", spec, reason) }
	switch {
	case spec == "":
		return nil, bad("it is empty; " + cronHelp)
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, bad("set the time zone with timeZone: (e.g. timeZone: Europe/Berlin), not in the cron spec")
	}
	if rest, ok := strings.CutPrefix(spec, "@every"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second || d%time.Second != 0 {
			return nil, bad("@every needs a whole number of seconds, at least 1s, e.g. @every 30s, @every 5m or @every 1h30m")
		}
		return &Cron{every: d}, nil
	}
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, bad(err.Error() + "; " + cronHelp)
	}
	c := &Cron{spec: s}
	if c.Next(time.Now(), time.UTC).IsZero() {
		return nil, bad("it never fires (no date matches it, e.g. February 30)")
	}
	return c, nil
}

// Next is the first tick strictly after t, with the spec's fields read in
// loc (nil means UTC); zero if there is none within five years.
func (c *Cron) Next(t time.Time, loc *time.Location) time.Time {
	if c.every > 0 {
		return t.Truncate(c.every).Add(c.every).UTC()
	}
	if loc == nil {
		loc = time.UTC
	}
	n := c.spec.Next(t.In(loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

var scheduleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$`)

// scheduled is a schedule and its next tick, owned by the schedule loop.
type scheduled struct {
	Schedule
	cron    *Cron
	tick    time.Time // the next tick to claim; zero: never again
	at      time.Time // when to claim it: tick + rank delay, or a retry
	backoff *backoff.ExponentialBackOff
}

// compileSchedules validates the schedules of a Config and fills in their
// defaults.
func compileSchedules(ss []Schedule, reg *orchestrator.Registry, maxPayload int) ([]*scheduled, error) {
	var out []*scheduled
	seen := map[string]bool{}
	for _, s := range ss {
		if !scheduleNameRE.MatchString(s.Name) {
			return nil, fmt.Errorf("scheduler: schedule name %q: use 1 to 128 letters, digits, '.', '_' and '-', starting with a letter or digit", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("scheduler: schedule %q is defined twice; names must be unique", s.Name)
		}
		seen[s.Name] = true
		c, err := ParseCron(s.Spec)
		if err != nil {
			return nil, fmt.Errorf("scheduler: schedule %q: %w", s.Name, err)
		}
		if _, ok := reg.Orchestrator(s.Function); !ok {
			return nil, fmt.Errorf("scheduler: schedule %q: function %q is not registered; register it or fix the name", s.Name, s.Function)
		}
		if s.InstanceID == "" {
			s.InstanceID = s.Name
		}
		if err := orchestrator.ValidateInstanceID(s.InstanceID); err != nil {
			return nil, fmt.Errorf("scheduler: schedule %q: %w", s.Name, err)
		}
		if s.Location == nil {
			s.Location = time.UTC
		}
		s.Input = bytes.TrimSpace(s.Input)
		if len(s.Input) == 0 {
			s.Input = json.RawMessage("null")
		}
		if !json.Valid(s.Input) {
			return nil, fmt.Errorf("scheduler: schedule %q: input is not valid JSON", s.Name)
		}
		if len(s.Input) > maxPayload {
			return nil, fmt.Errorf("scheduler: schedule %q: input is %d bytes, the limit is %d bytes", s.Name, len(s.Input), maxPayload)
		}
		out = append(out, &scheduled{Schedule: s, cron: c})
	}
	return out, nil
}

// scheduleLoop sleeps until the earliest tick of the node's schedules is
// due for this node, claims the due ones, and repeats until the node stops.
func (n *Node) scheduleLoop() {
	defer n.wg.Done()
	now := time.Now()
	for _, s := range n.scheds {
		n.arm(s, s.cron.Next(now, s.Location))
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var first time.Time
		for _, s := range n.scheds {
			if !s.tick.IsZero() && (first.IsZero() || s.at.Before(first)) {
				first = s.at
			}
		}
		if first.IsZero() {
			n.log.Warn("no schedule has a tick left")
			<-n.ctx.Done()
			return
		}
		timer.Reset(time.Until(first))
		select {
		case <-n.ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		var wg sync.WaitGroup
		for _, s := range n.scheds {
			if !s.tick.IsZero() && !s.at.After(now) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n.handleTick(s, now)
				}()
			}
		}
		wg.Wait()
	}
}

// arm sets the schedule's next tick, and when this node claims it: the
// node ranked k-th for the schedule (rendezvous hashing over live nodes, as
// campaigns do) waits k x PreferenceDelay, at most half the period, so the
// preferred node usually claims alone. Correctness does not depend on it:
// racing claims are decided by etcd.
func (n *Node) arm(s *scheduled, tick time.Time) {
	s.tick, s.at, s.backoff = tick, tick, nil
	if tick.IsZero() {
		return
	}
	n.mu.Lock()
	d := n.rankLocked("schedule/"+s.Name) * n.cfg.PreferenceDelay
	n.mu.Unlock()
	if next := s.cron.Next(tick, s.Location); !next.IsZero() {
		d = min(d, next.Sub(tick)/2)
	}
	s.at = tick.Add(d)
}

// canClaim is false while the node drains or has no live session.
func (n *Node) canClaim() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.draining && n.session != nil && n.session.Err() == nil
}

// handleTick claims the latest due tick of s and arms the next one.
func (n *Node) handleTick(s *scheduled, now time.Time) {
	// Ticks this node slept through (a pause, a slow claim) are not caught
	// up: only the latest due one is claimed.
	tick := s.tick
	if e := s.cron.every; e > 0 && now.Truncate(e).After(tick) {
		tick = now.Truncate(e).UTC()
	}
	caughtUp := false
	for range 100000 { // a per-minute cron: 69 days
		next := s.cron.Next(tick, s.Location)
		if next.IsZero() || next.After(now) {
			caughtUp = true
			break
		}
		tick = next
	}
	if !caughtUp { // asleep for ages: start afresh from now
		n.arm(s, s.cron.Next(now, s.Location))
		return
	}
	next := s.cron.Next(tick, s.Location)
	if !n.canClaim() {
		n.arm(s, next)
		return
	}
	log := n.log.With("schedule", s.Name, "instance_id", s.InstanceID, "tick", tick.Format(time.RFC3339))
	// A claim begun is finished even if the node stops meanwhile (its
	// stop waits for this loop): cut off, it may have been committed
	// unseen, and the tick would be claimed in etcd but counted nowhere.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(n.ctx), 5*time.Second)
	c, err := n.client.ClaimTick(ctx, orchestrator.Tick{
		Schedule: s.Name, Function: s.Function, InstanceID: s.InstanceID, Input: s.Input, At: tick, Node: n.cfg.NodeID,
	})
	cancel()
	if err != nil {
		if n.ctx.Err() != nil {
			return // stopping
		}
		n.m.scheduleTicks.WithLabelValues(s.Name, "error").Inc()
		if s.backoff == nil {
			s.backoff = newBackoff(250*time.Millisecond, 5*time.Second)
		}
		backoff := s.backoff.NextBackOff()
		retry := time.Now().Add(backoff)
		if !next.IsZero() && !retry.Before(next) {
			log.Warn("cannot claim schedule tick; moving on to the next tick", "error", err, "next_tick", next.Format(time.RFC3339))
			n.arm(s, next)
			return
		}
		log.Warn("cannot claim schedule tick; retrying", "error", err, "retry_in", backoff.Round(time.Millisecond).String())
		s.tick, s.at = tick, retry
		return
	}
	switch c.Result {
	case orchestrator.TickStarted:
		n.m.scheduleTicks.WithLabelValues(s.Name, "started").Inc()
		log.Info("schedule started its function", "function", s.Function, "execution_id", c.Status.ExecutionID)
	case orchestrator.TickSkipped:
		n.m.scheduleTicks.WithLabelValues(s.Name, "skipped").Inc()
		log.Info("schedule tick skipped: the previous run is still active",
			"execution_id", c.Status.ExecutionID, "runtime_status", string(c.Status.RuntimeStatus))
	default:
		log.Debug("schedule tick already claimed", "by", c.State.Node, "last_tick", c.State.LastTick.Format(time.RFC3339))
	}
	n.arm(s, next)
}
