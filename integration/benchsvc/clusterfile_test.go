package benchsvc

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/daemon"
)

var (
	node1 = NodeSpec{Name: "node1", Addr: netip.MustParseAddr("192.0.2.11"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24")}
	node2 = NodeSpec{Name: "node2", Addr: netip.MustParseAddr("192.0.2.12"), PodCIDR: netip.MustParsePrefix("10.244.2.0/24")}
)

func TestClusterYAML(t *testing.T) {
	svcs := GenServices(1, node1, node2)
	want := `nodes:
  - name: node1
    addresses: [192.0.2.11]
    podCIDRs: [10.244.1.0/24]
  - name: node2
    addresses: [192.0.2.12]
    podCIDRs: [10.244.2.0/24]
services:
  - name: svc-00000
    namespace: bench
    clusterIPs: [10.96.0.16]
    ports:
      - {port: 80, targetPort: 8080}
    endpoints:
      - {addresses: [10.244.1.2], node: node1}
      - {addresses: [10.244.1.3], node: node1}
      - {addresses: [10.244.2.2], node: node2}
      - {addresses: [10.244.2.3], node: node2}
`
	if diff := cmp.Diff(want, string(ClusterYAML([]NodeSpec{node1, node2}, svcs))); diff != "" {
		t.Errorf("ClusterYAML (-want +got):\n%s", diff)
	}
	if got := string(ClusterYAML([]NodeSpec{node1}, nil)); got != "nodes:\n  - name: node1\n    addresses: [192.0.2.11]\n    podCIDRs: [10.244.1.0/24]\nservices: []\n" {
		t.Errorf("ClusterYAML without services:\n%s", got)
	}
}

// The generated file must be valid for podnetd: every service programmed,
// none rejected, cluster IPs and endpoints as generated.
func TestGenServicesParse(t *testing.T) {
	const n = 600 // more than the 252 pool addresses, so endpoints wrap around
	svcs := GenServices(n, node1, node2)
	c, err := daemon.ParseCluster(ClusterYAML([]NodeSpec{node1, node2}, svcs))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != n || len(c.RejectedServices) != 0 || len(c.IgnoredServices) != 0 {
		t.Fatalf("parsed %d services, %d rejected (%v), %d ignored; want %d, 0, 0",
			len(c.Services), len(c.RejectedServices), c.RejectedServices, len(c.IgnoredServices), n)
	}
	for i, s := range c.Services {
		if s.Name != svcs[i].Name || len(s.ClusterIPs) != 1 || s.ClusterIPs[0] != svcs[i].VIP {
			t.Fatalf("service %d: got %s %v, want %s %s", i, s.Name, s.ClusterIPs, svcs[i].Name, svcs[i].VIP)
		}
		if len(s.Endpoints) != EndpointsPerService {
			t.Fatalf("service %d: %d endpoints, want %d", i, len(s.Endpoints), EndpointsPerService)
		}
		for k, e := range s.Endpoints {
			if e.Address != svcs[i].Endpoints[k].Addr || e.NodeName != svcs[i].Endpoints[k].Node || e.Ports[""] != TargetPort {
				t.Fatalf("service %d endpoint %d: got %+v, want %+v port %d", i, k, e, svcs[i].Endpoints[k], TargetPort)
			}
		}
	}
	if got, want := svcs[n-1].VIP, netip.MustParseAddr("10.96.2.103"); got != want {
		t.Errorf("last VIP %s, want %s", got, want)
	}
}

func TestFreshEndpoint(t *testing.T) {
	svc := GenServices(1, node1, node2)[0] // local endpoints .2 and .3
	a, ok := FreshEndpoint(svc, node1.PodCIDR, 0)
	if !ok || a != netip.MustParseAddr("10.244.1.4") {
		t.Errorf("FreshEndpoint from 0 = %s, %v; want 10.244.1.4", a, ok)
	}
	a, ok = FreshEndpoint(svc, node1.PodCIDR, 251) // .253, then wraps to .2
	if !ok || a != netip.MustParseAddr("10.244.1.253") {
		t.Errorf("FreshEndpoint from 251 = %s, %v; want 10.244.1.253", a, ok)
	}
	if got := svc.SortedEndpoints(); got[0] != netip.MustParseAddr("10.244.1.2") || got[3] != netip.MustParseAddr("10.244.2.3") {
		t.Errorf("SortedEndpoints = %v", got)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) Sample {
		var s Sample
		for _, x := range v {
			s = append(s, time.Duration(x)*time.Millisecond)
		}
		return s
	}
	hundred := make(Sample, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	for _, tc := range []struct {
		name string
		s    Sample
		q    float64
		want time.Duration
	}{
		{"empty", nil, .5, 0},
		{"one", ms(7), .99, 7 * time.Millisecond},
		{"p50 of 4 is the 2nd", ms(4, 1, 3, 2), .5, 2 * time.Millisecond},
		{"p99 of 20 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), .99, 20 * time.Millisecond},
		{"p50 of 100", hundred, .5, 50 * time.Millisecond},
		{"p99 of 100", hundred, .99, 99 * time.Millisecond},
		{"p100", hundred, 1, 100 * time.Millisecond},
	} {
		if got := tc.s.Percentile(tc.q); got != tc.want {
			t.Errorf("%s: Percentile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
	if got := ms(1, 2, 6).Mean(); got != 3*time.Millisecond {
		t.Errorf("Mean = %v, want 3ms", got)
	}
	if got := hundred.Max(); got != 100*time.Millisecond {
		t.Errorf("Max = %v, want 100ms", got)
	}
	if hundred[0] != 100*time.Millisecond {
		t.Error("Percentile sorted the caller's sample")
	}
}
