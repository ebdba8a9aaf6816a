package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// testDaemon is a Daemon on fakes: routing.Fake, nft.Fake, a real allocator and
// config files under a temp dir, and a sysctl setter that only records.
type testDaemon struct {
	*Daemon
	kernel *routing.Fake
	nft    *nft.Fake
	logs   *observer.ObservedLogs

	mu      sync.Mutex
	sysctls map[string]string
}

func newTestDaemon(t *testing.T, change func(*Config)) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	if change != nil {
		change(&cfg)
	}
	core, logs := observer.New(zap.DebugLevel)
	td := &testDaemon{kernel: routing.NewFake(), nft: &nft.Fake{}, logs: logs, sysctls: map[string]string{}}
	d, err := New(cfg, zap.New(core), Deps{Kernel: td.kernel, NFT: td.nft, Tracer: &nft.FakeTracer{}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	d.sysctl = func(name, value string) error {
		td.mu.Lock()
		defer td.mu.Unlock()
		td.sysctls[name] = value
		return nil
	}
	alloc, err := ipam.New(filepath.Join(cfg.StateDir, "ipam"), nil)
	if err != nil {
		t.Fatalf("ipam.New: %v", err)
	}
	t.Cleanup(func() { alloc.Close() })
	d.ipam = alloc
	pods, err := openPodStore(filepath.Join(cfg.StateDir, "pods"))
	if err != nil {
		t.Fatalf("openPodStore: %v", err)
	}
	d.pods = pods
	d.cni = &cniHandler{ipam: alloc, kernel: td.kernel, state: func() podNet { return *d.podNet.Load() }, pods: pods,
		hostPorts: d.hostPorts, trigger: d.Trigger}
	td.Daemon = d
	return td
}

func (td *testDaemon) routes() map[netip.Prefix]netip.Addr {
	rs, _ := td.kernel.ListRoutes()
	out := map[netip.Prefix]netip.Addr{}
	for _, r := range rs {
		out[r.Dst] = r.Via
	}
	return out
}

func threeNodes() *Cluster {
	return &Cluster{Nodes: []Node{
		{Name: "node-b", Addresses: []netip.Addr{addr("192.168.1.11")}, PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24")}},
		{Name: "node-a", Addresses: []netip.Addr{addr("192.168.1.10")}, PodCIDRs: []netip.Prefix{prefix("10.244.0.0/24")}},
		{Name: "node-c", Addresses: []netip.Addr{addr("192.168.1.12")}, PodCIDRs: []netip.Prefix{prefix("10.244.2.0/24")}},
	}}
}

func TestSyncNode(t *testing.T) {
	td := newTestDaemon(t, nil)
	if td.podNet.Load().Ready {
		t.Fatal("ready before the first sync")
	}
	c := threeNodes()
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatalf("syncNode: %v", err)
	}

	wantBridge := routing.Bridge{Name: "podnet0", Gateways: []netip.Prefix{prefix("10.244.0.1/24")}, MTU: 1500}
	if diff := cmp.Diff(&wantBridge, td.kernel.Bridge, netipComparers); diff != "" {
		t.Errorf("bridge (-want +got):\n%s", diff)
	}
	wantRoutes := map[netip.Prefix]netip.Addr{
		prefix("10.244.1.0/24"): addr("192.168.1.11"),
		prefix("10.244.2.0/24"): addr("192.168.1.12"),
	}
	if diff := cmp.Diff(wantRoutes, td.routes(), netipComparers); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	st, ok := td.nft.LastState()
	if !ok {
		t.Fatal("nft table not synced")
	}
	if diff := cmp.Diff(desiredNFT(c, "node-a", nil), st, netipComparers); diff != "" {
		t.Errorf("nft state (-want +got):\n%s", diff)
	}
	if got := td.sysctls; !maps.Equal(got, map[string]string{"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}) {
		t.Errorf("sysctls = %v, want only IPv4 forwarding and bridged IPv4 through netfilter on", got)
	}
	if got := td.ipam.Ranges(); !slices.Equal(got, []netip.Prefix{prefix("10.244.0.0/24")}) {
		t.Errorf("ipam ranges = %v", got)
	}
	conf, err := os.ReadFile(filepath.Join(td.cfg.CNIConfDir, ConflistName))
	if err != nil {
		t.Fatalf("conflist not written: %v", err)
	}
	if !strings.Contains(string(conf), `"socket": "`+td.cfg.Socket+`"`) {
		t.Errorf("conflist does not name the socket:\n%s", conf)
	}
	if pn := td.podNet.Load(); !pn.Ready || pn.Bridge != "podnet0" || pn.MTU != 1500 {
		t.Errorf("podNet = %+v, want ready on podnet0 with MTU 1500", pn)
	}
	s := td.Status()
	if !s.Ready || s.Peers != 2 || s.Routes != 2 || s.MTU != 1500 || !slices.Equal(s.PodCIDRs, []string{"10.244.0.0/24"}) {
		t.Errorf("status = %+v", s)
	}

	// Now pods can be added, from the node's range.
	_, cerr := td.cni.Serve(cniReq("ADD", "c1"))
	if cerr != nil {
		t.Fatalf("ADD after sync: %v", cerr)
	}
	if a := td.ipam.Get("c1", "eth0"); len(a) != 1 || !prefix("10.244.0.0/24").Contains(a[0].Addr.Addr()) {
		t.Errorf("allocation %v not from the node's podCIDR", a)
	}

	// node-c leaves, node-b moves: the routes follow.
	c2 := &Cluster{Nodes: []Node{
		{Name: "node-a", Addresses: []netip.Addr{addr("192.168.1.10")}, PodCIDRs: []netip.Prefix{prefix("10.244.0.0/24")}},
		{Name: "node-b", Addresses: []netip.Addr{addr("192.168.1.21")}, PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24")}},
	}}
	td.cluster.Store(c2)
	if err := td.syncNode(); err != nil {
		t.Fatalf("second syncNode: %v", err)
	}
	wantRoutes = map[netip.Prefix]netip.Addr{prefix("10.244.1.0/24"): addr("192.168.1.21")}
	if diff := cmp.Diff(wantRoutes, td.routes(), netipComparers); diff != "" {
		t.Errorf("routes after change (-want +got):\n%s", diff)
	}
	st, _ = td.nft.LastState()
	if diff := cmp.Diff(desiredNFT(c2, "node-a", nil), st, netipComparers); diff != "" {
		t.Errorf("nft state after change (-want +got):\n%s", diff)
	}
	if s := td.Status(); s.Peers != 1 || s.Routes != 1 || s.Allocations != 1 {
		t.Errorf("status after change = %+v", s)
	}
	for _, msg := range []string{"route added", "route replaced", "route removed"} {
		if td.logs.FilterMessage(msg).Len() == 0 {
			t.Errorf("no %q log", msg)
		}
	}

	// Someone deletes a podnet route: the next sync restores it.
	td.kernel.Routes = map[netip.Prefix]netip.Addr{}
	if err := td.syncNode(); err != nil {
		t.Fatalf("third syncNode: %v", err)
	}
	if diff := cmp.Diff(wantRoutes, td.routes(), netipComparers); diff != "" {
		t.Errorf("routes after drift (-want +got):\n%s", diff)
	}
}

func TestSyncNodeDualStackAndMTU(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) { c.MTU = 1400 })
	td.cluster.Store(&Cluster{Nodes: []Node{
		{Name: "node-a", Addresses: []netip.Addr{addr("192.168.1.10"), addr("fd00::10")},
			PodCIDRs: []netip.Prefix{prefix("10.244.0.0/24"), prefix("fd00:10:244::/64")}},
		{Name: "node-b", Addresses: []netip.Addr{addr("192.168.1.11")},
			PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24"), prefix("fd00:10:244:1::/64")}},
	}})
	if err := td.syncNode(); err != nil {
		t.Fatalf("syncNode: %v", err)
	}
	want := routing.Bridge{Name: "podnet0", MTU: 1400,
		Gateways: []netip.Prefix{prefix("10.244.0.1/24"), prefix("fd00:10:244::1/64")}}
	if diff := cmp.Diff(&want, td.kernel.Bridge, netipComparers); diff != "" {
		t.Errorf("bridge (-want +got):\n%s", diff)
	}
	if got := td.sysctls; got["net.ipv4.ip_forward"] != "1" || got["net.ipv6.conf.all.forwarding"] != "1" ||
		got["net.bridge.bridge-nf-call-iptables"] != "1" || got["net.bridge.bridge-nf-call-ip6tables"] != "1" {
		t.Errorf("sysctls = %v, want forwarding and bridged traffic through netfilter on for both families", got)
	}
	// node-b has no IPv6 address: its v6 podCIDR is skipped with a warning, not an error.
	if diff := cmp.Diff(map[netip.Prefix]netip.Addr{prefix("10.244.1.0/24"): addr("192.168.1.11")}, td.routes(), netipComparers); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if td.logs.FilterMessage("peer route skipped").Len() != 1 {
		t.Error("skipped route not logged")
	}
	if pn := td.podNet.Load(); pn.MTU != 1400 {
		t.Errorf("pod MTU = %d, want the configured 1400", pn.MTU)
	}
}

func TestSyncNodeNotReady(t *testing.T) {
	tests := []struct {
		name    string
		cluster *Cluster
		want    string
	}{
		{"node missing", &Cluster{Nodes: threeNodes().Nodes[:1]}, "node not in cluster state"},
		{"no podCIDR", &Cluster{Nodes: []Node{{Name: "node-a", Addresses: []netip.Addr{addr("192.168.1.10")}}}}, "no podCIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := newTestDaemon(t, nil)
			td.cluster.Store(threeNodes())
			if err := td.syncNode(); err != nil {
				t.Fatalf("first syncNode: %v", err)
			}
			td.cluster.Store(tt.cluster)
			err := td.syncNode()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("syncNode = %v, want %q", err, tt.want)
			}
			if pn := td.podNet.Load(); pn.Ready || !strings.Contains(pn.Reason, tt.want) {
				t.Errorf("podNet = %+v, want not ready because %q", pn, tt.want)
			}
			_, cerr := td.cni.Serve(cniReq("ADD", "c1"))
			if cerr == nil || cerr.Code != 11 {
				t.Errorf("ADD while not ready = %v, want code 11", cerr)
			}
		})
	}
}

func TestSyncNodeErrors(t *testing.T) {
	t.Run("sysctl", func(t *testing.T) {
		td := newTestDaemon(t, nil)
		td.sysctl = func(string, string) error { return errors.New("read-only /proc") }
		td.cluster.Store(threeNodes())
		if err := td.syncNode(); err == nil || !strings.Contains(err.Error(), "read-only /proc") {
			t.Errorf("syncNode = %v, want the sysctl error", err)
		}
		if td.podNet.Load().Ready {
			t.Error("ready although forwarding could not be enabled")
		}
	})
	t.Run("nft", func(t *testing.T) {
		td := newTestDaemon(t, nil)
		td.nft.SyncErr = errors.New("nft: batch rejected")
		td.cluster.Store(threeNodes())
		if err := td.syncNode(); err == nil || !strings.Contains(err.Error(), "batch rejected") {
			t.Errorf("syncNode = %v, want the nft error", err)
		}
		// The rest of the sync still happened.
		if len(td.routes()) != 2 {
			t.Errorf("routes = %v, want 2 despite the nft error", td.routes())
		}
		if _, err := os.Stat(filepath.Join(td.cfg.CNIConfDir, ConflistName)); err != nil {
			t.Errorf("conflist: %v", err)
		}
	})
	t.Run("conflist", func(t *testing.T) {
		td := newTestDaemon(t, nil)
		// A regular file where the conf dir should be.
		if err := os.WriteFile(td.cfg.CNIConfDir, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		td.cluster.Store(threeNodes())
		if err := td.syncNode(); err == nil || !strings.Contains(err.Error(), ConflistName) {
			t.Errorf("syncNode = %v, want an error naming the conflist", err)
		}
	})
}

func TestSyncNodePodCIDRChange(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	c := threeNodes()
	c.Nodes[1].PodCIDRs = []netip.Prefix{prefix("10.244.9.0/24")}
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	if got := td.ipam.Ranges(); !slices.Equal(got, []netip.Prefix{prefix("10.244.9.0/24")}) {
		t.Errorf("ipam ranges = %v, want the new podCIDR", got)
	}
	if gws := td.kernel.Bridge.Gateways; len(gws) != 1 || gws[0] != prefix("10.244.9.1/24") {
		t.Errorf("bridge gateways = %v", gws)
	}
}

func TestTriggerCoalesces(t *testing.T) {
	td := newTestDaemon(t, nil)
	for range 5 {
		td.Trigger()
	}
	if n := len(td.trigger); n != 1 {
		t.Errorf("%d pending triggers, want 1", n)
	}
}

func TestSyncLoopRecordsSyncs(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.cluster.Store(threeNodes())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); td.syncLoop(ctx) }()
	defer func() { cancel(); <-done }()
	td.Trigger()
	waitFor(t, "first sync", func() bool { return td.Status().Syncs >= 1 })
	if s := td.Status(); !s.Ready || s.LastError != "" || s.LastSync.IsZero() {
		t.Errorf("status = %+v", s)
	}

	td.cluster.Store(&Cluster{}) // this node gone: sync fails and is recorded
	td.Trigger()
	waitFor(t, "failed sync", func() bool { return td.Status().LastError != "" })
	if s := td.Status(); !strings.Contains(s.LastError, "node not in cluster state") {
		t.Errorf("lastError = %q", s.LastError)
	}
}

func TestWatchFile(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) { c.PollInterval = 10 * time.Millisecond })
	first := []byte("nodes:\n- name: node-a\n  addresses: [192.168.1.10]\n  podCIDRs: [10.244.0.0/24]\n")
	if err := os.WriteFile(td.cfg.ClusterFile, first, 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCluster(first)
	td.cluster.Store(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); td.watchFile(ctx, first) }()
	defer func() { cancel(); <-done }()

	second := append(first, []byte("- name: node-b\n  addresses: [192.168.1.11]\n  podCIDRs: [10.244.1.0/24]\n")...)
	writeAtomic(t, td.cfg.ClusterFile, second)
	waitFor(t, "new cluster state", func() bool { return len(td.cluster.Load().Nodes) == 2 })
	select {
	case <-td.trigger:
	case <-time.After(5 * time.Second):
		t.Fatal("no sync triggered by the file change")
	}

	writeAtomic(t, td.cfg.ClusterFile, []byte("nodes: [\n"))
	waitFor(t, "invalid file logged", func() bool { return td.logs.FilterMessage("cluster file invalid; keeping last good state").Len() > 0 })
	if n := len(td.cluster.Load().Nodes); n != 2 {
		t.Errorf("invalid file replaced the state: %d nodes", n)
	}
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	if _, err := writeFileAtomic(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Without br_netfilter the bridge sysctls do not exist: the sync goes on and
// the missing module is logged once.
func TestSyncNodeWithoutBrNetfilter(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.sysctl = func(name, value string) error {
		if strings.HasPrefix(name, "net.bridge.") {
			return fmt.Errorf("sysctl %s=%s: %w", name, value, fs.ErrNotExist)
		}
		return nil
	}
	td.cluster.Store(threeNodes())
	for range 2 {
		if err := td.syncNode(); err != nil {
			t.Fatalf("syncNode = %v, want no error without br_netfilter", err)
		}
	}
	if n := td.logs.FilterMessageSnippet("br_netfilter is not loaded").Len(); n != 1 {
		t.Errorf("%d warnings about br_netfilter over two syncs, want 1", n)
	}
}
