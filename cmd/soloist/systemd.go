package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd's service notification protocol, for a unit with Type=notify
// and WatchdogSec= (deploy/systemd/soloist.service):
//
//   - READY=1 once the node serves HTTP and has its first etcd session
//     (node.Start returned), so that units ordered After=soloist.service and
//     `systemctl start` wait for a node that can take work;
//   - STOPPING=1 when the drain begins;
//   - WATCHDOG=1 every half of WatchdogSec while the node's own /livez
//     answers, so that systemd kills (SIGABRT: Go prints every goroutine's
//     stack) and restarts a node that hangs. /livez never checks etcd: an
//     etcd outage must not make systemd restart every node.
//
// Outside systemd (no NOTIFY_SOCKET, no WATCHDOG_USEC) each is a no-op.
// NOTIFY_SOCKET stays in the environment, so exec functions inherit it;
// the unit's NotifyAccess=main makes systemd ignore whatever they send, and
// WATCHDOG_PID keeps them from thinking the watchdog is theirs.

// notifyReady tells systemd that the node is ready.
func notifyReady(log *slog.Logger) { sdNotify(log, daemon.SdNotifyReady) }

// notifyStopping tells systemd that the node drains and will exit.
func notifyStopping(log *slog.Logger) { sdNotify(log, daemon.SdNotifyStopping) }

func sdNotify(log *slog.Logger, state string) {
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		log.Warn("cannot notify systemd", "state", state, "error", err)
	case sent:
		log.Debug("notified systemd", "state", state)
	}
}

// startWatchdog pings systemd's watchdog at half its interval for as long
// as healthy returns nil (each call bounded by a timeout), until stop is
// called. Without a watchdog for this process it does nothing.
func startWatchdog(log *slog.Logger, healthy func(context.Context) error) (stop func()) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings are invalid; not pinging it", "error", err)
		return func() {}
	}
	if interval <= 0 {
		return func() {}
	}
	every := interval / 2
	timeout := min(every/2, 5*time.Second)
	log.Info("pinging the systemd watchdog", "watchdog_interval", interval.String(), "ping_every", every.String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			cctx, ccancel := context.WithTimeout(ctx, timeout)
			err := healthy(cctx)
			ccancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if !failing {
					log.Warn("not pinging the systemd watchdog: the node is not healthy; systemd restarts it if this lasts",
						"error", err, "watchdog_interval", interval.String())
				}
				failing = true
			default:
				if failing {
					log.Info("healthy again; pinging the systemd watchdog")
				}
				failing = false
				sdNotify(log, daemon.SdNotifyWatchdog)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// livezProbe returns a check that GETs /livez on the API listener at addr,
// as a liveness probe would: it fails when the HTTP server (or the whole
// process) no longer answers. An unspecified listen address is probed on
// the loopback.
func livezProbe(addr net.Addr) func(context.Context) error {
	url := livezURL(addr)
	client := &http.Client{Transport: &http.Transport{
		Proxy:             nil, // never through HTTP_PROXY
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

func livezURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/livez"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/livez"
}
