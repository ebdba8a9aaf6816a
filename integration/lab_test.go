package integration

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

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
}
