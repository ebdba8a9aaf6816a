package daemon

import (
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/routing"
)

// Prometheus metrics, served on GET /metrics of the --metrics-addr listener
// with /healthz and /readyz (health.go). Every series is listed, with its
// type, labels and meaning, in docs/metrics.md: keep the two in step.
//
// Values are recorded where they change (a sync step, a CNI call), never
// computed by walking the cluster state on a scrape.

// The controller label of the sync series: the whole node sync, then each of
// its steps in the order syncNode runs them.
const (
	ctlNode      = "node"       // the whole sync (syncLoop)
	ctlIPAM      = "ipam"       // the allocator's ranges follow the node's podCIDRs
	ctlBridge    = "bridge"     // forwarding sysctls, the bridge and its gateways
	ctlRoutes    = "routes"     // host routes to the peers' podCIDRs
	ctlServices  = "services"   // the nftables table: masquerade and services
	ctlConntrack = "conntrack"  // stale UDP conntrack entries deleted
	ctlReap      = "reap"       // pod links retired before a crash deleted
	ctlCNIConfig = "cni_config" // the conflist written
)

var controllers = []string{ctlNode, ctlIPAM, ctlBridge, ctlRoutes, ctlServices, ctlConntrack, ctlReap, ctlCNIConfig}

// The result label of podnet_sync_duration_seconds.
const (
	resultOK      = "ok"
	resultError   = "error"
	resultWaiting = "waiting" // node sync only: this node or its podCIDR is not in the cluster state yet
)

// The cause label of podnet_route_changes_total.
const (
	causeStart   = "start"   // no route sync succeeded yet since podnetd started
	causeCluster = "cluster" // the desired route changed
	causeDrift   = "drift"   // the kernel changed behind podnet's back
)

var (
	// syncBuckets span a no-op resync (well under a millisecond) to a cold
	// sync of 50k services (seconds) and a wedged one (/healthz gives up
	// after at least two minutes).
	syncBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	// cniBuckets span a refused call (microseconds) to an ADD that waits
	// for the kernel under load.
	cniBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// cniVerbs are the verbs of the verb label; any other command, or a request
// that could not be decoded, counts as "other".
var cniVerbs = []string{"ADD", "DEL", "CHECK", "STATUS", "GC"}

// cniResults names the CNI error codes (spec, "Error"), for the result label:
// short and stable, where the numbers need a table.
var cniResults = map[uint]string{
	types.ErrUnknown:                     "unknown",
	types.ErrIncompatibleCNIVersion:      "incompatible_version",
	types.ErrUnsupportedField:            "unsupported_field",
	types.ErrUnknownContainer:            "unknown_container",
	types.ErrInvalidEnvironmentVariables: "invalid_env",
	types.ErrIOFailure:                   "io_failure",
	types.ErrDecodingFailure:             "decoding_failure",
	types.ErrInvalidNetworkConfig:        "invalid_config",
	types.ErrInvalidNetNS:                "invalid_netns",
	types.ErrTryAgainLater:               "try_again_later",
	types.ErrPluginNotAvailable:          "not_available",
	types.ErrLimitedConnectivity:         "limited_connectivity",
	types.ErrInternal:                    "internal",
}

// metrics is one Daemon's Prometheus registry and series. Its methods are
// safe for concurrent use, except routesSynced (syncNode only).
type metrics struct {
	reg *prometheus.Registry

	syncDuration *prometheus.HistogramVec // controller, result
	syncErrors   *prometheus.CounterVec   // controller
	services     *prometheus.GaugeVec     // state
	endpoints    *prometheus.GaugeVec     // ready
	ipamCapacity *prometheus.GaugeVec     // range
	ipamUsed     *prometheus.GaugeVec     // range
	cniRequests  *prometheus.CounterVec   // verb, result
	cniDuration  *prometheus.HistogramVec // verb, result
	routeChanges *prometheus.CounterVec   // action, cause
	ctDeleted    prometheus.Counter

	ipamMu     sync.Mutex
	ipamRanges []netip.Prefix // the ranges the ipam series have

	// The desired routes of the last route sync that succeeded (routesOK).
	// Only routesSynced uses them.
	routesOK   bool
	lastRoutes []routing.Route
}

// newMetrics registers podnetd's series, the Go runtime's and the process's
// in a registry of their own (never the global one: tests run many daemons
// in one process). ready reports whether the first sync succeeded.
func newMetrics(ready func() bool) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := registrar{m.reg}
	f.gaugeFunc("podnet_first_sync_done", "1 once a node sync succeeded (what /readyz reports), 0 before.", func() float64 {
		if ready() {
			return 1
		}
		return 0
	})
	f.gaugeVec("podnet_build_info", "Always 1; version is podnetd's version.", "version").WithLabelValues(Version).Set(1)
	m.syncDuration = f.histogramVec("podnet_sync_duration_seconds",
		"Duration of node syncs (controller node) and of each of their steps, by result.", syncBuckets, "controller", "result")
	m.syncErrors = f.counterVec("podnet_sync_errors_total",
		"Node syncs (controller node) and sync steps that failed; the failures are retried.", "controller")
	for _, c := range controllers { // from 0: increase() sees the first failure
		m.syncErrors.WithLabelValues(c)
	}
	m.services = f.gaugeVec("podnet_services",
		"Services of the cluster state after the last sync that programmed the nftables table: programmed, rejected (invalid, or refused by the table) or ignored (headless, or served by another proxy).", "state")
	m.endpoints = f.gaugeVec("podnet_endpoints_programmed",
		"Endpoint addresses of the programmed services, by their Ready condition, after the last sync that programmed the nftables table.", "ready")
	m.ipamCapacity = f.gaugeVec("podnet_ipam_capacity", "Pod addresses a range can hand out (network, gateway and IPv4 broadcast excluded).", "range")
	m.ipamUsed = f.gaugeVec("podnet_ipam_allocated", "Pod addresses of a range allocated now.", "range")
	m.cniRequests = f.counterVec("podnet_cni_requests_total", "CNI calls served, by verb and result.", "verb", "result")
	m.cniDuration = f.histogramVec("podnet_cni_request_duration_seconds", "Duration of CNI calls, by verb and result.", cniBuckets, "verb", "result")
	m.routeChanges = f.counterVec("podnet_route_changes_total",
		"Peer routes podnet added, replaced or removed, by cause: cluster (the desired route changed), drift (it had not: the kernel was changed behind podnet's back) or start (no route sync had succeeded since podnetd started).",
		"action", "cause")
	for _, action := range []string{"added", "replaced", "removed"} {
		for _, cause := range []string{causeStart, causeCluster, causeDrift} {
			m.routeChanges.WithLabelValues(action, cause)
		}
	}
	m.ctDeleted = f.counter("podnet_conntrack_deleted_total", "Stale UDP conntrack entries deleted after service changes (0 while the cleanup is off).")
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registrar makes series and registers them in reg; a name registered twice
// is a bug and panics.
type registrar struct{ reg *prometheus.Registry }

func (f registrar) gaugeFunc(name, help string, fn func() float64) {
	f.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

func (f registrar) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f registrar) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f registrar) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f registrar) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(v)
	return v
}

// metricsHandler serves GET /metrics in the Prometheus exposition format and
// the health endpoints (healthHandler) on one listener. A collector that
// fails is logged and left out of the scrape; the others are served.
func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(d.log.With(zap.String("component", "metrics"))),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      d.metrics.reg, // promhttp_metric_handler_errors_total
	}))
	mux.Handle("/", d.healthHandler())
	return mux
}

// nodeSynced observes one node sync that took took and returned err: failed,
// unless it only waits for this node or its podCIDR to appear.
func (m *metrics) nodeSynced(took time.Duration, err error) {
	result := resultOK
	switch {
	case errors.Is(err, errNoNode) || errors.Is(err, errNoPodCIDR):
		result = resultWaiting
	case err != nil:
		result = resultError
	}
	m.observeSync(ctlNode, took, result)
}

func (m *metrics) observeSync(controller string, took time.Duration, result string) {
	m.syncDuration.WithLabelValues(controller, result).Observe(took.Seconds())
	if result == resultError {
		m.syncErrors.WithLabelValues(controller).Inc()
	}
}

// stepTimer times the steps of one node sync, one after the other: a step
// lasts from the end of the previous one (or the timer's start) to its done.
type stepTimer struct {
	m    *metrics
	last time.Time
}

// steps starts timing the steps of a node sync.
func (m *metrics) steps() *stepTimer { return &stepTimer{m: m, last: time.Now()} }

// done ends the step of controller, which failed with err if not nil, and
// returns err.
func (t *stepTimer) done(controller string, err error) error {
	now := time.Now()
	result := resultOK
	if err != nil {
		result = resultError
	}
	t.m.observeSync(controller, now.Sub(t.last), result)
	t.last = now
	return err
}

// setServices sets the service and endpoint gauges from v, the view of a
// sync that programmed the table.
func (m *metrics) setServices(v *serviceView) {
	m.services.WithLabelValues("programmed").Set(float64(len(v.programmed)))
	m.services.WithLabelValues("rejected").Set(float64(len(v.rejected) + len(v.refused)))
	m.services.WithLabelValues("ignored").Set(float64(len(v.ignored)))
	var ready, notReady int
	for _, svc := range v.programmed {
		for _, ep := range svc.Endpoints {
			if ep.Ready {
				ready++
			} else {
				notReady++
			}
		}
	}
	m.endpoints.WithLabelValues("true").Set(float64(ready))
	m.endpoints.WithLabelValues("false").Set(float64(notReady))
}

// setIPAM sets the IPAM gauges from stats, one series per range; the series
// of ranges no longer configured are deleted.
func (m *metrics) setIPAM(stats []ipam.RangeStats) {
	m.ipamMu.Lock()
	defer m.ipamMu.Unlock()
	ranges := make([]netip.Prefix, 0, len(stats))
	for _, s := range stats {
		r := s.Range.String()
		m.ipamCapacity.WithLabelValues(r).Set(float64(s.Size))
		m.ipamUsed.WithLabelValues(r).Set(float64(s.Used))
		ranges = append(ranges, s.Range)
	}
	for _, old := range m.ipamRanges {
		if !slices.Contains(ranges, old) {
			m.ipamCapacity.DeleteLabelValues(old.String())
			m.ipamUsed.DeleteLabelValues(old.String())
		}
	}
	m.ipamRanges = ranges
}

// routesSynced counts the changes of one route sync of desired by cause, and
// after one that succeeded remembers desired. A change is drift when the
// desired routes did not change since the last route sync that succeeded:
// podnet re-adds or replaces a route it wanted then with the same gateway
// (deleted or changed behind its back, or a foreign route in its way gone),
// or removes a route of its own that it did not want then. Only syncNode
// calls it.
func (m *metrics) routesSynced(desired []routing.Route, ch routing.RouteChanges, err error) {
	if len(ch.Added)+len(ch.Replaced)+len(ch.Removed) > 0 {
		last := m.lastDesired()
		count := func(action string, routes []routing.Route, removed bool) {
			for _, r := range routes {
				m.routeChanges.WithLabelValues(action, routeCause(last, r, removed)).Inc()
			}
		}
		count("added", ch.Added, false)
		count("replaced", ch.Replaced, false)
		count("removed", ch.Removed, true)
	}
	if err == nil {
		m.routesOK, m.lastRoutes = true, desired
	}
}

// lastDesired maps the destinations of the desired routes of the last route
// sync that succeeded to their gateways; nil before such a sync.
func (m *metrics) lastDesired() map[netip.Prefix]netip.Addr {
	if !m.routesOK {
		return nil
	}
	out := make(map[netip.Prefix]netip.Addr, len(m.lastRoutes))
	for _, r := range m.lastRoutes {
		out[r.Dst] = r.Via
	}
	return out
}

// routeCause is why r was added or replaced (removed false), or removed,
// given last, the desired routes of the last route sync that succeeded (nil:
// none yet).
func routeCause(last map[netip.Prefix]netip.Addr, r routing.Route, removed bool) string {
	if last == nil {
		return causeStart
	}
	via, wanted := last[r.Dst]
	switch {
	case removed && !wanted: // a route of podnet's it never wanted
		return causeDrift
	case !removed && wanted && via == r.Via: // wanted as it is now
		return causeDrift
	}
	return causeCluster
}

// cniServed records one CNI call for the metrics (serveCNI calls it): its
// command, when it started, and its error (nil: it succeeded). After a verb
// that may change the allocations, it updates the IPAM gauges.
func (d *Daemon) cniServed(command string, start time.Time, cerr *api.Error) {
	verb := "other"
	if slices.Contains(cniVerbs, command) {
		verb = command
	}
	result := "ok"
	if cerr != nil {
		result = cniResults[cerr.Code]
		if result == "" {
			result = "code_" + strconv.FormatUint(uint64(cerr.Code), 10)
		}
	}
	d.metrics.cniRequests.WithLabelValues(verb, result).Inc()
	d.metrics.cniDuration.WithLabelValues(verb, result).Observe(time.Since(start).Seconds())
	if d.ipam != nil && (verb == "ADD" || verb == "DEL" || verb == "GC") {
		d.metrics.setIPAM(d.ipam.Stats())
	}
}
