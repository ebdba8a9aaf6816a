package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// servicesCluster has two nodes and four services: web and dns are valid, bad is
// rejected (services[1]), headless ignored (services[3]).
const servicesCluster = `nodes:
- name: node-a
  addresses: [192.168.1.10]
  podCIDRs: [10.244.0.0/24]
- name: node-b
  addresses: [192.168.1.11]
  podCIDRs: [10.244.1.0/24]
services:
- name: web
  type: NodePort
  clusterIPs: [10.96.0.10]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
  endpoints:
  - {addresses: [10.244.0.5], node: node-a}
  - {addresses: [10.244.1.5], node: node-b, ready: false, serving: true, terminating: true}
- name: bad
  clusterIPs: [10.96.0.11]
  ports: [{name: a, port: 53}, {name: b, protocol: FOO, port: 54}]
- name: dns
  namespace: kube-system
  clusterIPs: [10.96.0.53]
  ports: [{port: 53, protocol: UDP}]
  endpoints: [{addresses: [10.244.1.7], node: node-b}]
- name: headless
  ports: [{port: 80}]
`

const badServiceError = `services[1] default/bad: ports[1].protocol "FOO": want TCP, UDP or SCTP`

// wantServices is GET /v1/services after a sync of servicesCluster.
var wantServices = api.Services{
	Programmed: []api.Service{
		{
			Namespace: "default", Name: "web", ClusterIPs: []string{"10.96.0.10"},
			InternalTrafficPolicy: "Cluster", ExternalTrafficPolicy: "Cluster",
			Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}},
			Endpoints: []api.Endpoint{
				{Address: "10.244.0.5", Node: "node-a", Ports: map[string]int{"http": 8080}, Ready: true, Serving: true},
				{Address: "10.244.1.5", Node: "node-b", Ports: map[string]int{"http": 8080}, Serving: true, Terminating: true},
			},
		},
		{
			Namespace: "kube-system", Name: "dns", ClusterIPs: []string{"10.96.0.53"},
			InternalTrafficPolicy: "Cluster", ExternalTrafficPolicy: "Cluster",
			Ports:     []api.ServicePort{{Protocol: "UDP", Port: 53}},
			Endpoints: []api.Endpoint{{Address: "10.244.1.7", Node: "node-b", Ports: map[string]int{"": 53}, Ready: true, Serving: true}},
		},
	},
	Rejected: []api.RejectedService{{Index: 1, Namespace: "default", Name: "bad", Field: "ports[1].protocol",
		Reason: `"FOO": want TCP, UDP or SCTP`, Error: badServiceError}},
	Ignored: []api.IgnoredService{{Index: 3, Namespace: "default", Name: "headless", Reason: "headless: no cluster IP"}},
}

// TestRunProgramsValidServices runs the whole daemon on fakes from a cluster file
// with one invalid service: the others are programmed, the invalid one is logged
// and listed by GET /v1/services, and the status counts them.
func TestRunProgramsValidServices(t *testing.T) {
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	if err := os.WriteFile(cfg.ClusterFile, []byte(servicesCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	table := &nft.Fake{}
	d, err := New(cfg, zap.New(core), Deps{Kernel: routing.NewFake(), NFT: table})
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "the table synced", func() bool { return table.Syncs() > 0 })

	st, _ := table.LastState()
	var names []string
	for _, svc := range st.Services {
		names = append(names, svc.Namespace+"/"+svc.Name)
	}
	if want := []string{"default/web", "kube-system/dns"}; !cmp.Equal(want, names) {
		t.Errorf("services in the table = %v, want %v", names, want)
	}
	if st.NodeName != "node-a" || !cmp.Equal([]netip.Addr{addr("192.168.1.10")}, st.LocalIPs, netipComparers) {
		t.Errorf("table NodeName %q, LocalIPs %v; want node-a, [192.168.1.10]", st.NodeName, st.LocalIPs)
	}
	rejected := logs.FilterMessage("service rejected").All()
	if len(rejected) != 1 {
		t.Fatalf("%d 'service rejected' logs, want 1", len(rejected))
	}
	want := map[string]any{"index": int64(1), "service": "default/bad", "field": "ports[1].protocol", "value": `"FOO"`, "reason": "want TCP, UDP or SCTP"}
	if diff := cmp.Diff(want, rejected[0].ContextMap()); diff != "" {
		t.Errorf("rejected log fields (-want +got):\n%s", diff)
	}
	loaded := logs.FilterMessage("cluster file loaded").All()
	if len(loaded) != 1 || loaded[0].ContextMap()["servicesRejected"] != int64(1) || loaded[0].ContextMap()["services"] != int64(2) {
		t.Errorf("cluster file loaded logs = %v", loaded)
	}

	c := client.New(cfg.Socket, 5*time.Second)
	waitFor(t, "a recorded sync", func() bool { s, err := c.Status(ctx); return err == nil && s.Syncs > 0 })
	s, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.ServicesProgrammed != 2 || s.ServicesRejected != 1 || s.ServicesIgnored != 1 || s.LastError != "" {
		t.Errorf("status = %+v, want 2 services programmed, 1 rejected, 1 ignored", s)
	}
	got, err := c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&wantServices, got); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

func TestServeServices(t *testing.T) {
	td := newTestDaemon(t, nil)
	srv := rootServer(t, td.Daemon)
	defer srv.Close()

	var before api.Services
	getJSON(t, srv.URL+"/v1/services", &before)
	if diff := cmp.Diff(api.Services{Programmed: []api.Service{}, Rejected: []api.RejectedService{}, Ignored: []api.IgnoredService{}}, before); diff != "" {
		t.Errorf("before the first sync (-want +got):\n%s", diff)
	}

	c, err := ParseCluster([]byte(servicesCluster))
	if err != nil {
		t.Fatal(err)
	}
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	var got api.Services
	getJSON(t, srv.URL+"/v1/services", &got)
	if diff := cmp.Diff(wantServices, got); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

// skippingNFT is an nft.Fake whose Sync also reports problems as skipped, as a
// table that cannot program some values does.
type skippingNFT struct {
	*nft.Fake
	mu       sync.Mutex
	problems []string
}

func (s *skippingNFT) Sync(st nft.State) error {
	err := s.Fake.Sync(st)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || len(s.problems) == 0 {
		return err
	}
	return errors.Join(nil, &nft.SkippedError{Problems: s.problems})
}

// TestSyncNodeTableRefusesService: a service valid in the file but skipped by the
// table is reported as rejected, logged once, and does not fail the sync.
func TestSyncNodeTableRefusesService(t *testing.T) {
	td := newTestDaemon(t, nil)
	table := &skippingNFT{Fake: td.nft, problems: []string{
		"Services[1] kube-system/dns: ClusterIPs [10.96.0.10 10.96.0.11]: at most one per family",
		"NodeIPs[0] 1.2.3.4%x: has a zone",
	}}
	td.Daemon.nft = table
	c, err := ParseCluster([]byte(servicesCluster))
	if err != nil {
		t.Fatal(err)
	}
	td.cluster.Store(c)
	for range 2 {
		if err := td.syncNode(); err != nil {
			t.Fatalf("syncNode = %v; skipped values must not fail the sync", err)
		}
	}
	got := td.services.Load().apiServices()
	if len(got.Programmed) != 1 || got.Programmed[0].Name != "web" {
		t.Errorf("programmed = %+v, want only web", got.Programmed)
	}
	wantRejected := []api.RejectedService{
		wantServices.Rejected[0],
		{Index: 2, Namespace: "kube-system", Name: "dns", Reason: "not programmed by the nft table: ClusterIPs [10.96.0.10 10.96.0.11]: at most one per family",
			Error: "services[2] kube-system/dns: not programmed by the nft table: ClusterIPs [10.96.0.10 10.96.0.11]: at most one per family"},
	}
	if diff := cmp.Diff(wantRejected, got.Rejected); diff != "" {
		t.Errorf("rejected (-want +got):\n%s", diff)
	}
	if s := td.Status(); s.ServicesProgrammed != 1 || s.ServicesRejected != 2 || s.ServicesIgnored != 1 {
		t.Errorf("status = %+v", s)
	}
	if n := td.logs.FilterMessage("service rejected").Len(); n != 1 {
		t.Errorf("%d 'service rejected' logs over two syncs, want 1", n)
	}
	if n := td.logs.FilterMessage("nft table skipped invalid values").Len(); n != 1 {
		t.Errorf("%d 'nft table skipped invalid values' logs over two syncs, want 1", n)
	}

	// A sync the table fails keeps the view of what it holds.
	td.nft.SyncErr = errors.New("nft: batch rejected")
	if err := td.syncNode(); err == nil || !strings.Contains(err.Error(), "batch rejected") {
		t.Fatalf("syncNode = %v, want the nft error", err)
	}
	if v := td.services.Load(); len(v.programmed) != 1 || len(v.refused) != 1 {
		t.Errorf("view after a failed sync = %+v", v)
	}
}

func TestSplitSkipped(t *testing.T) {
	skipped := &nft.SkippedError{Problems: []string{"x"}}
	failed := errors.New("netlink: permission denied")
	tests := []struct {
		name        string
		err         error
		wantSkipped bool
		wantRest    error // compared with errors.Is; nil: no error left
	}{
		{"nil", nil, false, nil},
		{"failure only", failed, false, failed},
		{"skipped only", skipped, true, nil},
		{"skipped joined alone", errors.Join(nil, skipped), true, nil},
		{"skipped joined with a failure", errors.Join(failed, skipped), true, failed},
		{"skipped wrapped", fmt.Errorf("sync: %w", skipped), true, skipped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotSkipped, rest := splitSkipped(tt.err)
			if (gotSkipped != nil) != tt.wantSkipped || gotSkipped != nil && gotSkipped != skipped {
				t.Errorf("skipped = %v, want %v", gotSkipped, tt.wantSkipped)
			}
			if tt.wantRest == nil && rest != nil || tt.wantRest != nil && !errors.Is(rest, tt.wantRest) {
				t.Errorf("rest = %v, want %v", rest, tt.wantRest)
			}
			if tt.wantRest != nil && errors.Is(rest, nft.ErrInvalid) && !errors.Is(tt.wantRest, nft.ErrInvalid) {
				t.Errorf("rest %v still holds the skipped values", rest)
			}
		})
	}
}

// TestSyncSecondsIsMeasured checks the status reports how long the sync took.
func TestSyncSecondsIsMeasured(t *testing.T) {
	td := newTestDaemon(t, nil)
	td.sysctl = func(string, string) error { time.Sleep(30 * time.Millisecond); return nil }
	td.cluster.Store(threeNodes())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); td.syncLoop(ctx) }()
	defer func() { cancel(); <-done }()
	td.Trigger()
	waitFor(t, "a sync", func() bool { return td.Status().Syncs >= 1 })
	if s := td.Status(); s.SyncSeconds < 0.03 || s.SyncSeconds > 5 {
		t.Errorf("syncSeconds = %v, want the ~0.03 s the sync took", s.SyncSeconds)
	}
}

// TestTableRejectionsReadsNFTProblems pins the form in which the nft package
// reports a skipped service, which tableRejections reads.
func TestTableRejectionsReadsNFTProblems(t *testing.T) {
	port := []nft.ServicePort{{Protocol: nft.TCP, Port: 80}}
	svcs := []nft.Service{
		{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{addr("10.96.0.10")}, Ports: port},
		{Namespace: "default", ClusterIPs: []netip.Addr{addr("10.96.0.11")}, Ports: port}, // no name: the table skips it
	}
	skipped, err := splitSkipped((&nft.Fake{}).Sync(nft.State{Services: svcs}))
	if err != nil || skipped == nil {
		t.Fatalf("Sync: skipped %v, error %v; want only skipped values", skipped, err)
	}
	byTable, other := tableRejections(skipped, len(svcs))
	if len(byTable) != 1 || byTable[1] == "" || len(other) != 0 {
		t.Errorf("tableRejections(%q) = %v, %v; want services[1] with a reason", skipped.Problems, byTable, other)
	}
}
