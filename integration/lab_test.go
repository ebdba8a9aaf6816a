package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// TestLabMatrix is `make lab` as a test: 3 nodes, 2 pods each, every journey
// over real TCP with the source address checked (no NAT), the web service's
// ClusterIP from every pod, clean teardown. Run fails on any failed check;
// the test also makes sure the service journey ran in full, so that losing it
// cannot pass unnoticed: every pod of every node made all its connections
// through the VIP, both endpoints (on two nodes) served each pod, and each
// saw the pod's own address.
func TestLabMatrix(t *testing.T) {
	sandbox.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := lab.Run(ctx, lab.Options{Nodes: 3, PodsPerNode: 2, BinDir: binDir, WorkDir: t.TempDir(), Log: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, "file:")
}

// TestLabMatrixKube is `make lab SOURCE=kube` as a test: the same lab and
// the same checks as TestLabMatrix, with a real etcd and kube-apiserver as
// the source of cluster state (Nodes, then the web Service and an
// EndpointSlice per endpoint node made with client-go) and every podnetd
// reading it with --kubeconfig as the service account of
// deploy/kubernetes/rbac.yaml. It also makes sure every podnetd reported the
// API server as its source, so that a lab quietly back on the cluster file
// cannot pass. TestMain builds kube-apiserver before the sandbox.
func TestLabMatrixKube(t *testing.T) {
	sandbox.Require(t)
	if kubeErr != nil {
		t.Fatalf("kube-apiserver: %v", kubeErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"node1/podnetd.log", "node2/podnetd.log", "node3/podnetd.log", "kube/kube-apiserver.log"} {
				if b, err := os.ReadFile(filepath.Join(work, f)); err == nil {
					t.Logf("--- %s (tail)\n%s", f, tail(string(b), 30))
				}
			}
		}
	})
	rep, err := lab.Run(ctx, lab.Options{Nodes: 3, PodsPerNode: 2, BinDir: binDir, WorkDir: work, Log: newTestLog(t),
		Source: lab.SourceKube})
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, rep, fmt.Sprintf("kube:https://%s:", lab.APIServerAddr))
}

// checkReport asserts what Run checked beyond its own error: every node's
// podnetd reported a source starting with source, the matrix ran, and the
// service journey ran in full.
func checkReport(t *testing.T, rep lab.Report, source string) {
	t.Helper()
	if len(rep.Sources) != 3 {
		t.Fatalf("podnetd sources %q, want one per node (3)", rep.Sources)
	}
	for i, s := range rep.Sources {
		if !strings.HasPrefix(s, source) {
			t.Fatalf("node%d: podnetd source %q, want %s…", i+1, s, source)
		}
	}
	if len(rep.Checks) == 0 {
		t.Fatal("no connectivity checks ran")
	}
	if len(rep.Services) != 6 {
		t.Fatalf("service checks = %d, want one per pod (6)", len(rep.Services))
	}
	clientNodes := map[string]bool{}
	for _, c := range rep.Services {
		s := c.Service
		if s.Dst() != netip.AddrPortFrom(lab.WebVIP, lab.WebPort) || s.TargetPort != lab.WebTargetPort {
			t.Fatalf("%s: checked service %s at %s → %d, want the web service", c.From.Name, s.Name, s.Dst(), s.TargetPort)
		}
		if len(s.Endpoints) != 2 || s.Endpoints[0].Node == s.Endpoints[1].Node {
			t.Fatalf("web endpoints %v: want two pods on two nodes", s.EndpointNames())
		}
		if !c.OK() || c.Connected != lab.ServiceConns {
			t.Fatalf("%s → web: %d/%d connected, served %v, wrong sources %v, err %v", c.From.Name, c.Connected, c.Tried, c.Served, c.Wrong, c.Err)
		}
		for _, ep := range s.Endpoints {
			if c.Served[ep.Name] == 0 {
				t.Fatalf("%s → web: endpoint %s served nothing (%v)", c.From.Name, ep.Name, c.Served)
			}
			if ep != c.From && !slices.Contains(c.Saw, c.From.IP) {
				t.Fatalf("%s → web: endpoints saw %v, not the pod's own %s", c.From.Name, c.Saw, c.From.IP)
			}
		}
		clientNodes[c.From.Node.Name] = true
	}
	if len(clientNodes) != 3 {
		t.Fatalf("service clients on nodes %v, want every node", clientNodes)
	}
	checkTraces(t, rep.Traces)
}

// checkTraces asserts that each journey was traced with the right answer and
// an nftrace'd probe that agrees: pod → pod on one node stays on the bridge,
// across nodes goes via the peer's address, pod → service may reach both web
// endpoints and the probe's DNAT chose one of them, the service without
// endpoints rejects (the probe's connection refused).
func checkTraces(t *testing.T, traces []lab.TraceCheck) {
	t.Helper()
	want := map[lab.Journey]string{
		lab.PodPodSameNode: api.TraceDelivered, lab.PodPodCrossNode: api.TraceDelivered,
		lab.PodService: api.TraceDelivered, lab.NoEndpoints: api.TraceRejected,
	}
	if len(traces) != len(want) {
		t.Fatalf("%d traces, want %d", len(traces), len(want))
	}
	for _, c := range traces {
		if !c.OK() {
			t.Errorf("trace %s: %v", c.Journey, c.Problems())
			continue
		}
		tr := c.Trace
		if tr.Outcome != want[c.Journey] {
			t.Errorf("trace %s: outcome %s, want %s", c.Journey, tr.Outcome, want[c.Journey])
		}
		crossed := slices.ContainsFunc(tr.Hops, func(h api.Hop) bool { return strings.HasPrefix(h.Where, "node node") })
		if crossed != (c.Journey == lab.PodPodCrossNode) && c.Journey != lab.PodService {
			t.Errorf("trace %s: crosses to another node = %v\n%+v", c.Journey, crossed, tr.Hops)
		}
		switch c.Journey {
		case lab.PodService:
			if tr.Probe.DNAT == "" || !slices.Contains(tr.Endpoints, tr.Probe.DNAT) || tr.Probe.Result != "connected" {
				t.Errorf("trace %s: probe %+v, want connected with a DNAT to one of %v", c.Journey, tr.Probe, tr.Endpoints)
			}
		case lab.NoEndpoints:
			if tr.Probe.Result != "refused" || tr.Probe.DNAT != "" {
				t.Errorf("trace %s: probe %+v, want refused without DNAT", c.Journey, tr.Probe)
			}
		default:
			if tr.Probe.Result != "connected" || tr.Probe.DNAT != "" {
				t.Errorf("trace %s: probe %+v, want connected without DNAT", c.Journey, tr.Probe)
			}
		}
	}
}
