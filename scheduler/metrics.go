package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/soloist-dev/soloist/orchestrator"
)

// metrics are one node's collectors (docs/contract.md section 7). They live in the
// registry the node is given, never in process globals, so several nodes can
// share a test binary.
type metrics struct {
	instancesHeld     *prometheus.GaugeVec
	campaigns         *prometheus.CounterVec
	failovers         prometheus.Counter
	handoffs          prometheus.Counter
	leasesLost        *prometheus.CounterVec
	renewFailures     prometheus.Counter
	fencingRejections prometheus.Counter
	completed         *prometheus.CounterVec
	startToRunning    prometheus.Histogram
	takeover          prometheus.Histogram
	sessionUp         prometheus.Gauge
	scheduleTicks     *prometheus.CounterVec
	runRetries        prometheus.Counter
	orphans           prometheus.Counter
	alarm             *prometheus.GaugeVec
	retentionPurged   prometheus.Counter
	unrunnable        *prometheus.GaugeVec
	unheld            *prometheus.HistogramVec
	parked            prometheus.Gauge
	unloaded          prometheus.Gauge
	wakes             *prometheus.CounterVec
	startsLanded      prometheus.Counter
}

// terminalStatuses are the statuses soloist_orchestrations_completed_total
// counts, each present at 0 for every registered function.
var terminalStatuses = []orchestrator.RuntimeStatus{
	orchestrator.StatusCompleted, orchestrator.StatusFailed, orchestrator.StatusTerminated,
}

// newMetrics registers a node's collectors; schedules and functions are
// the names whose series start at zero.
func newMetrics(reg prometheus.Registerer, schedules, functions []string) (*metrics, error) {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2, 3, 5, 8, 13, 21, 34, 60}
	m := &metrics{
		instancesHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "soloist_instances_held", Help: "Instances this node holds and runs.",
		}, []string{"function"}),
		campaigns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_campaigns_total", Help: "Attempts to take an instance's owners key, by result.",
		}, []string{"result"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_failovers_total", Help: "Instances taken over after the previous holder's lease ended without a release.",
		}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_handoffs_total", Help: "Instances taken over after a draining node released them.",
		}),
		leasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_leases_lost_total", Help: "Holdings lost while running, by reason.",
		}, []string{"reason"}),
		renewFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_lease_renew_failures_total", Help: "Session keepalives that failed.",
		}),
		fencingRejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_fencing_rejections_total", Help: "Writes refused because the writer no longer held the instance.",
		}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_orchestrations_completed_total", Help: "Executions this node brought to a terminal status.",
		}, []string{"function", "status"}),
		startToRunning: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "soloist_start_to_running_seconds", Help: "From the start commit to the holder running the instance.",
			Buckets: buckets,
		}),
		takeover: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "soloist_takeover_seconds",
			Help:    "From the moment this node saw the previous holding end (its owners key deleted: lease expiry, or a drain's release) to this node running the instance.",
			Buckets: buckets,
		}),
		unheld: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "soloist_unheld_seconds",
			Help:    "How long a taken-over instance ran nowhere, at most: for a handoff, from the release to running here; for a failover, that plus the lease TTL (the old holder stopped at the latest one TTL before its lease expired).",
			Buckets: buckets,
		}, []string{"how"}),
		sessionUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "soloist_etcd_session_up", Help: "1 while the node's etcd session lease is alive.",
		}),
		scheduleTicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_schedule_ticks_total",
			Help: "Schedule ticks this node claimed, by result: started, skipped (the previous run was still active), error (a claim attempt failed).",
		}, []string{"schedule", "result"}),
		runRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_run_retries_total",
			Help: "Runs that failed for a reason of their own and were tried again after a backoff, the instance kept.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_orphan_owner_keys_total",
			Help: "Owners keys found on this node's lease that no holding tracked (an acquire applied after it gave up), deleted.",
		}),
		alarm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "soloist_etcd_alarm", Help: "1 while etcd has the alarm raised (NOSPACE: it refuses every write).",
		}, []string{"alarm"}),
		retentionPurged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_retention_purged_total", Help: "Finished instances this node purged because they were older than the retention.",
		}),
		unrunnable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "soloist_unrunnable_instances",
			Help: "Active instances no node holds and no live node can run (none registers their function and version), as this node sees the cluster: every node reports the same count, use max.",
		}, []string{"function"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "soloist_instances_parked",
			Help: "Held instances whose runs are parked: idle for --park-after, kept as their holding only (no goroutine, no history in memory).",
		}),
		unloaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "soloist_instances_unloaded",
			Help: "Held instances whose runs are unloaded: waiting for 1s or more, not yet parked, their goroutine ended and their history kept in memory to replay without a read.",
		}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "soloist_run_wakes_total",
			Help: "Parked runs driven again from etcd (one read and a replay), or unloaded ones from memory (a replay), by what woke them: event (an inbox entry) or timer (a durable timer due).",
		}, []string{"reason"}),
		startsLanded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "soloist_starts_landed_total",
			Help: "Starts this node received and took in the start's own transaction (start where you land): run at once, without a campaign.",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.instancesHeld, m.campaigns, m.failovers, m.handoffs, m.leasesLost, m.renewFailures,
		m.fencingRejections, m.completed, m.startToRunning, m.takeover, m.sessionUp, m.scheduleTicks,
		m.runRetries, m.orphans, m.alarm, m.retentionPurged, m.unrunnable, m.unheld, m.parked, m.unloaded, m.wakes, m.startsLanded,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"won", "lost", "error"} {
		m.campaigns.WithLabelValues(r)
	}
	m.alarm.WithLabelValues("NOSPACE")
	for _, f := range functions {
		m.instancesHeld.WithLabelValues(f)
		m.unrunnable.WithLabelValues(f)
		// Every terminal status at 0 from the start, so that increase()
		// and the alerts see a function's first failure.
		for _, st := range terminalStatuses {
			m.completed.WithLabelValues(f, string(st))
		}
	}
	for _, r := range []string{"event", "timer"} {
		m.wakes.WithLabelValues(r)
	}
	for _, how := range []string{"failover", "handoff"} {
		m.unheld.WithLabelValues(how)
	}
	for _, s := range schedules {
		for _, r := range []string{"started", "skipped", "error"} {
			m.scheduleTicks.WithLabelValues(s, r)
		}
	}
	return m, nil
}
