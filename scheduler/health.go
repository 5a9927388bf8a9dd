package scheduler

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/soloist-dev/soloist/orchestrator"
)

// ErrNoSpace means etcd raised its NOSPACE alarm: it refuses every write
// until an operator frees space and disarms the alarm. It matches
// orchestrator.ErrNoSpace with errors.Is, so the HTTP API answers 507.
var ErrNoSpace error = noSpaceError{}

type noSpaceError struct{}

func (noSpaceError) Error() string {
	return "scheduler: etcd raised its NOSPACE alarm and refuses every write; " + orchestrator.NoSpaceHelp
}

func (noSpaceError) Is(target error) bool { return target == orchestrator.ErrNoSpace }

// health is what the node knows of etcd's alarms: from AlarmList every
// AlarmInterval, and from writes refused with NOSPACE meanwhile.
type health struct {
	mu      sync.Mutex
	noSpace bool
	denied  bool // AlarmList needs more than this node's role: rely on writes
	seen    time.Time
	kick    chan struct{} // a write saw NOSPACE: ask soon
}

func (h *health) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.noSpace {
		return ErrNoSpace
	}
	return nil
}

// observe notes a store error of the node's own work.
func (h *health) observe(err error) {
	if errors.Is(orchestrator.ClassifyError(err), orchestrator.ErrNoSpace) {
		h.mu.Lock()
		h.noSpace, h.seen = true, time.Now()
		h.mu.Unlock()
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

// alarmLoop asks etcd for its alarms, so that /readyz and the metric show a
// NOSPACE alarm, and show it cleared as soon as an operator disarms it:
// nothing needs a restart. It asks every AlarmInterval while an alarm is
// raised or a write saw NOSPACE, and every 6 x AlarmInterval otherwise (a
// NOSPACE shows through refused writes first anyway).
func (n *Node) alarmLoop() {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.health.kick:
			t.Stop()
		}
		n.checkAlarms()
		wait := 6 * n.cfg.AlarmInterval
		if n.health.err() != nil {
			wait = n.cfg.AlarmInterval
		}
		t.Reset(wait)
	}
}

func (n *Node) checkAlarms() {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.AlarmInterval)
	defer cancel()
	resp, err := n.cfg.Etcd.AlarmList(ctx)
	h := &n.health
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.noSpace
	switch {
	case err != nil:
		if errors.Is(orchestrator.ClassifyError(err), orchestrator.ErrStoreDenied) && !h.denied {
			h.denied = true
			n.log.Info("etcd alarms cannot be read with this node's etcd role; a NOSPACE alarm shows through refused writes only")
		}
		// A NOSPACE seen in a write clears once writes work again; without
		// AlarmList, give it an interval and let the next write tell.
		if h.denied && h.noSpace && time.Since(h.seen) > 3*n.cfg.AlarmInterval {
			h.noSpace = false
		}
	default:
		h.denied = false
		h.noSpace = false
		for _, a := range resp.Alarms {
			if a.Alarm == pb.AlarmType_NOSPACE {
				h.noSpace = true
			}
		}
	}
	if h.noSpace != was {
		if h.noSpace {
			n.log.Error("etcd raised its NOSPACE alarm: it refuses every write, so no instance can start or progress", "help", orchestrator.NoSpaceHelp)
		} else {
			n.log.Info("etcd's NOSPACE alarm is cleared; writes work again")
		}
	}
	v := 0.0
	if h.noSpace {
		v = 1
	}
	n.m.alarm.WithLabelValues("NOSPACE").Set(v)
}
