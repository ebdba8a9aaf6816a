package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// runningDaemon is a Daemon started with Run on fakes, its cluster file
// holding cluster.
type runningDaemon struct {
	*Daemon
	kernel *routing.Fake
	ct     *conntrack.Fake
}

func startDaemon(t *testing.T, cluster string, change func(*Config)) *runningDaemon {
	t.Helper()
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	cfg.ResyncInterval = time.Hour // syncs only when the test causes them
	if change != nil {
		change(&cfg)
	}
	if err := os.WriteFile(cfg.ClusterFile, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	rd := &runningDaemon{kernel: routing.NewFake(), ct: &conntrack.Fake{}}
	d, err := New(cfg, zap.NewNop(), Deps{Kernel: rd.kernel, NFT: &nft.Fake{}, Conntrack: rd.ct})
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil }
	rd.Daemon = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, "first sync", d.life.ready.Load) // Status only once Run set up IPAM
	return rd
}

// url is the metrics listener's URL for path.
func (rd *runningDaemon) url(t *testing.T, path string) string {
	t.Helper()
	addr, _ := rd.life.addr.Load().(net.Addr)
	if addr == nil {
		t.Fatal("no metrics listener")
	}
	return "http://" + addr.String() + path
}

// get makes a GET on the metrics listener and returns the status and body.
func (rd *runningDaemon) get(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(rd.url(t, path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// scrape gets /metrics and parses it.
func (rd *runningDaemon) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, h := rd.get(t, "/metrics")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s:\n%s", code, h.Get("Content-Type"), body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// seriesText renders the series of the named families as `name{labels}
// value` lines, sorted: a histogram as its _count only (durations vary), a
// family that is missing as "name absent".
func seriesText(fams map[string]*dto.MetricFamily, names ...string) string {
	var lines []string
	for _, name := range names {
		f, ok := fams[name]
		if !ok {
			lines = append(lines, name+" absent")
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(labels)
			series, v := name, 0.0
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				series, v = name+"_count", float64(m.GetHistogram().GetSampleCount())
			}
			if len(labels) > 0 {
				series += "{" + strings.Join(labels, ",") + "}"
			}
			lines = append(lines, series+" "+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// unixClient is an HTTP client of the daemon's socket.
func unixClient(socket string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
}

// TestMetricsScrape runs a daemon on fakes with metrics on, drives syncs with
// services, CNI calls, a route deleted behind its back and a cluster change,
// then scrapes /metrics over HTTP and compares the key series; /healthz and
// /readyz answer on the same listener.
func TestMetricsScrape(t *testing.T) {
	rd := startDaemon(t, servicesCluster, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	// A UDP flow of dns to the endpoint the cluster change below replaces, and
	// a TCP one that stays.
	rd.ct.Add(
		conntrack.Entry{Proto: 17, OrigSrc: netip.MustParseAddrPort("10.244.0.9:40000"),
			OrigDst: netip.MustParseAddrPort("10.96.0.53:53"), ReplySrc: netip.MustParseAddrPort("10.244.1.7:53")},
		conntrack.Entry{Proto: 6, OrigSrc: netip.MustParseAddrPort("10.244.0.9:40001"),
			OrigDst: netip.MustParseAddrPort("10.96.0.10:80"), ReplySrc: netip.MustParseAddrPort("10.244.0.5:8080")},
	)

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/v1/status": 404} {
		if code, body, _ := rd.get(t, path); code != want {
			t.Errorf("GET %s = %d %q, want %d", path, code, body, want)
		}
	}

	// CNI: two ADDs, one DEL, and a request that is not JSON.
	ctx := context.Background()
	cl := client.New(rd.cfg.Socket, 5*time.Second)
	for _, req := range []struct{ cmd, id string }{{"ADD", "c1"}, {"ADD", "c2"}, {"DEL", "c2"}} {
		if _, err := cl.CNI(ctx, cniReq(req.cmd, req.id)); err != nil {
			t.Fatalf("%s %s: %v", req.cmd, req.id, err)
		}
	}
	resp, err := unixClient(rd.cfg.Socket).Post("http://podnetd/v1/cni", "application/json", strings.NewReader(`{"command": "ADD",`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed CNI request: HTTP %d, want 400", resp.StatusCode)
	}

	// Someone deletes podnet's route to node-b: a resync puts it back.
	peerB := prefix("10.244.1.0/24")
	rd.kernel.DeleteRoute(peerB)
	rd.Trigger()
	waitFor(t, "route to node-b restored", func() bool { return rd.hasRoute(peerB) })

	// The cluster changes: node-c joins, dns moves to another endpoint.
	changed := strings.Replace(servicesCluster, "services:\n",
		"- name: node-c\n  addresses: [192.168.1.12]\n  podCIDRs: [10.244.2.0/24]\nservices:\n", 1)
	changed = strings.Replace(changed, "10.244.1.7", "10.244.1.8", 1)
	writeAtomic(t, rd.cfg.ClusterFile, []byte(changed))
	waitFor(t, "the change synced", func() bool { return rd.hasRoute(prefix("10.244.2.0/24")) && len(rd.ct.Entries()) == 1 })

	// A scrape whose syncs count is known: no sync ran meanwhile.
	var fams map[string]*dto.MetricFamily
	var syncs uint64
	waitFor(t, "a scrape between syncs", func() bool {
		syncs = rd.Status().Syncs
		fams = rd.scrape(t)
		return rd.Status().Syncs == syncs
	})
	want := fmt.Sprintf(`podnet_build_info{version=%q} 1
podnet_cni_request_duration_seconds_count{result="decoding_failure",verb="other"} 1
podnet_cni_request_duration_seconds_count{result="ok",verb="ADD"} 2
podnet_cni_request_duration_seconds_count{result="ok",verb="DEL"} 1
podnet_cni_requests_total{result="decoding_failure",verb="other"} 1
podnet_cni_requests_total{result="ok",verb="ADD"} 2
podnet_cni_requests_total{result="ok",verb="DEL"} 1
podnet_conntrack_deleted_total 1
podnet_endpoints_programmed{ready="false"} 1
podnet_endpoints_programmed{ready="true"} 2
podnet_first_sync_done 1
podnet_ipam_allocated{range="10.244.0.0/24"} 1
podnet_ipam_capacity{range="10.244.0.0/24"} 253
podnet_route_changes_total{action="added",cause="cluster"} 1
podnet_route_changes_total{action="added",cause="drift"} 1
podnet_route_changes_total{action="added",cause="start"} 1
podnet_route_changes_total{action="removed",cause="cluster"} 0
podnet_route_changes_total{action="removed",cause="drift"} 0
podnet_route_changes_total{action="removed",cause="start"} 0
podnet_route_changes_total{action="replaced",cause="cluster"} 0
podnet_route_changes_total{action="replaced",cause="drift"} 0
podnet_route_changes_total{action="replaced",cause="start"} 0
podnet_services{state="ignored"} 1
podnet_services{state="programmed"} 2
podnet_services{state="rejected"} 1
podnet_sync_duration_seconds_count{controller="bridge",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="cni_config",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="conntrack",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="ipam",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="node",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="routes",result="ok"} %[2]d
podnet_sync_duration_seconds_count{controller="services",result="ok"} %[2]d
podnet_sync_errors_total{controller="bridge"} 0
podnet_sync_errors_total{controller="cni_config"} 0
podnet_sync_errors_total{controller="conntrack"} 0
podnet_sync_errors_total{controller="ipam"} 0
podnet_sync_errors_total{controller="node"} 0
podnet_sync_errors_total{controller="reap"} 0
podnet_sync_errors_total{controller="routes"} 0
podnet_sync_errors_total{controller="services"} 0
`, Version, syncs)
	got := seriesText(fams, "podnet_build_info", "podnet_cni_request_duration_seconds", "podnet_cni_requests_total",
		"podnet_conntrack_deleted_total", "podnet_endpoints_programmed", "podnet_first_sync_done",
		"podnet_ipam_allocated", "podnet_ipam_capacity", "podnet_route_changes_total", "podnet_services",
		"podnet_sync_duration_seconds", "podnet_sync_errors_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("/metrics after %d syncs (-want +got):\n%s", syncs, diff)
	}
	if syncs < 3 {
		t.Errorf("%d syncs, want at least 3: the first, the drift repair, the cluster change", syncs)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s: the Go or process collector is missing", name)
		}
	}
}

func (rd *runningDaemon) hasRoute(dst netip.Prefix) bool {
	rs, _ := rd.kernel.ListRoutes()
	return slices.ContainsFunc(rs, func(r routing.Route) bool { return r.Dst == dst })
}

// Standalone, metrics are off: the default has no address, and Run opens no
// listener.
func TestMetricsOffByDefault(t *testing.T) {
	if d := Default(); d.MetricsAddr != "" || d.HealthAddr != "" {
		t.Errorf("Default() serves metrics on %q (health %q), want off", d.MetricsAddr, d.HealthAddr)
	}
	rd := startDaemon(t, servicesCluster, nil)
	if addr := rd.life.addr.Load(); addr != nil {
		t.Errorf("metrics listener on %v without --metrics-addr", addr)
	}
}

// The deprecated --health-addr alone opens the same listener, /metrics
// included.
func TestHealthAddrServesMetrics(t *testing.T) {
	rd := startDaemon(t, servicesCluster, func(c *Config) { c.HealthAddr = "127.0.0.1:0" })
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, _ := rd.get(t, path); code != http.StatusOK || body != "ok\n" {
			t.Errorf("GET %s = %d %q, want 200 ok", path, code, body)
		}
	}
	got := seriesText(rd.scrape(t), "podnet_first_sync_done", "podnet_services")
	want := "podnet_first_sync_done 1\npodnet_services{state=\"ignored\"} 1\npodnet_services{state=\"programmed\"} 2\npodnet_services{state=\"rejected\"} 1\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("/metrics (-want +got):\n%s", diff)
	}
}

// gathered is what the daemon's registry holds now.
func gathered(t *testing.T, d *Daemon) map[string]*dto.MetricFamily {
	t.Helper()
	fs, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fs {
		out[f.GetName()] = f
	}
	return out
}

// A failing step is counted as an error of its controller; the steps after
// it still run and are counted as they end; /metrics says not ready yet.
func TestSyncMetricsErrors(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.nft.SyncErr = errors.New("nft: batch rejected")
	td.cluster.Store(threeNodes())
	start := time.Now()
	err := td.syncNode()
	if err == nil {
		t.Fatal("syncNode succeeded with the nft error")
	}
	td.recordSync(start, err)
	td.synced(err)
	td.cluster.Store(&Cluster{}) // this node gone: the sync waits, it does not fail
	err = td.syncNode()
	td.recordSync(start, err)
	td.synced(err)

	want := `podnet_first_sync_done 0
podnet_services absent
podnet_sync_duration_seconds_count{controller="bridge",result="ok"} 1
podnet_sync_duration_seconds_count{controller="cni_config",result="ok"} 1
podnet_sync_duration_seconds_count{controller="ipam",result="ok"} 1
podnet_sync_duration_seconds_count{controller="node",result="error"} 1
podnet_sync_duration_seconds_count{controller="node",result="waiting"} 1
podnet_sync_duration_seconds_count{controller="routes",result="ok"} 1
podnet_sync_duration_seconds_count{controller="services",result="error"} 1
podnet_sync_errors_total{controller="bridge"} 0
podnet_sync_errors_total{controller="cni_config"} 0
podnet_sync_errors_total{controller="conntrack"} 0
podnet_sync_errors_total{controller="ipam"} 0
podnet_sync_errors_total{controller="node"} 1
podnet_sync_errors_total{controller="reap"} 0
podnet_sync_errors_total{controller="routes"} 0
podnet_sync_errors_total{controller="services"} 1
`
	got := seriesText(gathered(t, td.Daemon), "podnet_first_sync_done", "podnet_services", "podnet_sync_duration_seconds", "podnet_sync_errors_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// Route changes are told apart by cause: the first sync's, those the
// cluster asked for, and repairs of what changed behind podnet's back.
func TestRouteChangeCauses(t *testing.T) {
	route := func(dst, via string) routing.Route { return routing.Route{Dst: prefix(dst), Via: addr(via)} }
	a, b, b2, c := route("10.244.1.0/24", "192.168.1.11"), route("10.244.2.0/24", "192.168.1.12"),
		route("10.244.2.0/24", "192.168.1.22"), route("10.244.3.0/24", "192.168.1.13")
	type sync struct {
		desired []routing.Route
		ch      routing.RouteChanges
		err     error
	}
	tests := []struct {
		name  string
		syncs []sync
		want  string // the changes counted, by action and cause
	}{{
		name:  "first sync",
		syncs: []sync{{desired: []routing.Route{a}, ch: routing.RouteChanges{Added: []routing.Route{a}, Removed: []routing.Route{c}}}},
		want:  "added start 1\nremoved start 1\n",
	}, {
		name: "failed first sync: still start",
		syncs: []sync{
			{desired: []routing.Route{a, b}, ch: routing.RouteChanges{Added: []routing.Route{a}}, err: errors.New("busy")},
			{desired: []routing.Route{a, b}, ch: routing.RouteChanges{Added: []routing.Route{b}}},
		},
		want: "added start 2\n",
	}, {
		name: "cluster: a peer joins, moves, leaves",
		syncs: []sync{
			{desired: []routing.Route{a, b}},
			{desired: []routing.Route{a, b, c}, ch: routing.RouteChanges{Added: []routing.Route{c}}},
			{desired: []routing.Route{a, b2, c}, ch: routing.RouteChanges{Replaced: []routing.Route{b2}}},
			{desired: []routing.Route{b2, c}, ch: routing.RouteChanges{Removed: []routing.Route{a}}},
		},
		want: "added cluster 1\nremoved cluster 1\nreplaced cluster 1\n",
	}, {
		name: "drift: deleted, changed, added behind podnet's back",
		syncs: []sync{
			{desired: []routing.Route{a, b}},
			{desired: []routing.Route{a, b}, ch: routing.RouteChanges{Added: []routing.Route{a}, Replaced: []routing.Route{b}, Removed: []routing.Route{c}}},
		},
		want: "added drift 1\nremoved drift 1\nreplaced drift 1\n",
	}, {
		name: "a failed sync is not the last desired state",
		syncs: []sync{
			{desired: []routing.Route{a}},
			{desired: []routing.Route{a, c}, err: errors.New("busy")},
			{desired: []routing.Route{a, c}, ch: routing.RouteChanges{Added: []routing.Route{c}}},
		},
		want: "added cluster 1\n",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics(func() bool { return false })
			for _, s := range tt.syncs {
				m.routesSynced(s.desired, s.ch, s.err)
			}
			var got bytes.Buffer
			for _, action := range []string{"added", "removed", "replaced"} {
				for _, cause := range []string{causeCluster, causeDrift, causeStart} {
					if n := counterValue(t, m.routeChanges.WithLabelValues(action, cause)); n > 0 {
						fmt.Fprintf(&got, "%s %s %g\n", action, cause, n)
					}
				}
			}
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Errorf("route changes (-want +got):\n%s", diff)
			}
		})
	}
}

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Concurrent CNI calls and syncs update the IPAM gauges without a race; the
// series of a range that is gone are deleted.
func TestIPAMGauges(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			id := fmt.Sprintf("c%d", i)
			if _, cerr := td.cni.Serve(cniReq("ADD", id)); cerr != nil {
				t.Errorf("ADD %s: %v", id, cerr)
			}
			td.cniServed("ADD", time.Now(), nil)
		})
	}
	wg.Wait()
	c := threeNodes()
	c.Nodes[1].PodCIDRs = append(c.Nodes[1].PodCIDRs, prefix("fd00:10:244::/120"))
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	want := `podnet_ipam_allocated{range="10.244.0.0/24"} 8
podnet_ipam_allocated{range="fd00:10:244::/120"} 0
podnet_ipam_capacity{range="10.244.0.0/24"} 253
podnet_ipam_capacity{range="fd00:10:244::/120"} 254
`
	if diff := cmp.Diff(want, seriesText(gathered(t, td.Daemon), "podnet_ipam_allocated", "podnet_ipam_capacity")); diff != "" {
		t.Errorf("IPAM gauges (-want +got):\n%s", diff)
	}
	c = threeNodes()
	c.Nodes[1].PodCIDRs = []netip.Prefix{prefix("10.244.9.0/24")}
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	want = "podnet_ipam_allocated{range=\"10.244.9.0/24\"} 0\npodnet_ipam_capacity{range=\"10.244.9.0/24\"} 253\n"
	if diff := cmp.Diff(want, seriesText(gathered(t, td.Daemon), "podnet_ipam_allocated", "podnet_ipam_capacity")); diff != "" {
		t.Errorf("IPAM gauges after the podCIDR changed (-want +got):\n%s", diff)
	}
}
