package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// lifecycle is how podnetd tells its supervisor how it is doing: readiness
// once a sync succeeded, served on /readyz (--metrics-addr) and sent to systemd
// as READY=1; liveness on /healthz; a STATUS= line for `systemctl status`.
type lifecycle struct {
	// ready: a sync succeeded. It stays set: later failures are retried
	// while the kernel keeps the last good state.
	ready atomic.Bool
	// syncStart is when the running sync started (UnixNano), 0 between syncs.
	syncStart atomic.Int64
	// addr is the address of the listener of /metrics, /healthz and /readyz
	// (a net.Addr); unset when not served.
	addr atomic.Value

	mu         sync.Mutex
	lastStatus string // the last STATUS= sent
}

// startLifecycle serves the metrics and health endpoints when --metrics-addr
// (or the deprecated --health-addr) is set (a port already in use is a
// start-up error) and tells systemd that podnetd is starting, then that it is
// stopping once ctx ends. stop closes the listener.
func (d *Daemon) startLifecycle(ctx context.Context) (stop func(), err error) {
	var srv *http.Server
	if addr := d.cfg.metricsAddr(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("metrics and health endpoints: %w", err)
		}
		d.life.addr.Store(ln.Addr())
		srv = &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln) // returns when closed
		d.log.Info("serving /metrics, /healthz and /readyz", zap.Stringer("addr", ln.Addr()))
		if d.cfg.HealthAddr != "" {
			d.log.Warn("--health-addr is deprecated: use --metrics-addr, which serves /healthz and /readyz too")
		}
	}
	if notifySocket() != "" {
		d.sendStatus("starting", false)
	}
	stopNotify := context.AfterFunc(ctx, func() { d.notify("STOPPING=1") })
	return func() {
		stopNotify()
		if srv != nil {
			srv.Close()
		}
	}, nil
}

// syncing records that a sync starts (syncLoop calls it before syncNode).
func (d *Daemon) syncing(start time.Time) { d.life.syncStart.Store(start.UnixNano()) }

// synced records the outcome of a sync: the first success makes podnetd
// ready and sends READY=1; every outcome updates systemd's STATUS= line.
func (d *Daemon) synced(err error) {
	d.life.syncStart.Store(0)
	first := err == nil && d.life.ready.CompareAndSwap(false, true)
	if first {
		d.log.Info("first sync done: ready")
	}
	if notifySocket() != "" {
		d.sendStatus(d.statusLine(err), first)
	}
}

// statusLine sums up the last sync in one line for `systemctl status`.
func (d *Daemon) statusLine(err error) string {
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ") // a newline would end the assignment
		if len(msg) > 400 {
			msg = msg[:400] + "…"
		}
		if errors.Is(err, errNoNode) || errors.Is(err, errNoPodCIDR) {
			return "waiting for this node's podCIDR: " + msg
		}
		if d.life.ready.Load() {
			return "sync failing, retrying (the kernel keeps the last good state): " + msg
		}
		return "first sync failing, retrying: " + msg
	}
	s := d.Status()
	return fmt.Sprintf("synced: %d peers, %d routes, %d pods, %d services programmed, %d rejected",
		s.Peers, s.Routes, s.Allocations, s.ServicesProgrammed, s.ServicesRejected)
}

// sendStatus sends STATUS=line to systemd, preceded by READY=1 if ready,
// unless it is not ready and line was the last one sent.
func (d *Daemon) sendStatus(line string, ready bool) {
	d.life.mu.Lock()
	defer d.life.mu.Unlock()
	if !ready && line == d.life.lastStatus {
		return
	}
	d.life.lastStatus = line
	state := "STATUS=" + line
	if ready {
		state = "READY=1\n" + state
	}
	d.notify(state)
}

// notify sends state (VAR=value lines) to systemd when podnetd runs under it
// with Type=notify; a failure is logged: it costs systemd's view, not the
// node.
func (d *Daemon) notify(state string) {
	if err := sdNotify(notifySocket(), state); err != nil {
		d.log.Warn("telling systemd failed", zap.String("state", state), zap.Error(err))
	}
}

// maxSyncDuration is how long a sync may run before /healthz reports podnetd
// wedged: at least two minutes (a cold sync of 50k services takes seconds),
// and four resync intervals.
func (d *Daemon) maxSyncDuration() time.Duration {
	return max(2*time.Minute, 4*d.cfg.ResyncInterval)
}

// errWedged is /healthz's answer when a sync runs for too long.
var errWedged = errors.New("a sync has been running for too long")

// alive is /healthz's check: podnetd is alive unless a sync has been running
// for longer than maxSyncDuration (stuck in the kernel or on a lock). A
// daemon that has no sync to do (e.g. waiting for its node's podCIDR) is
// alive: restarting it would not help.
func (d *Daemon) alive(now time.Time) error {
	start := d.life.syncStart.Load()
	if start == 0 {
		return nil
	}
	if running := now.Sub(time.Unix(0, start)); running > d.maxSyncDuration() {
		return fmt.Errorf("%w: %s", errWedged, running.Round(time.Second))
	}
	return nil
}

// healthHandler serves GET /healthz (200 while alive, 503 when wedged) and
// GET /readyz (200 once a sync succeeded, 503 before, with the reason), as
// plain text for kubelet probes and curl.
func (d *Daemon) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.alive(time.Now()); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.life.ready.Load() {
			reason := "first sync not done"
			d.mu.Lock() // not Status: probes come before Run has set up IPAM
			e := d.status.LastError
			d.mu.Unlock()
			if e != "" {
				reason += ": " + e
			}
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
