package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

var (
	addr   = netip.MustParseAddr
	prefix = netip.MustParsePrefix
)

// netipComparers let cmp compare netip values by value.
var netipComparers = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestDesiredRoutes(t *testing.T) {
	self := Node{Name: "self", Addresses: []netip.Addr{addr("192.168.1.1")}, PodCIDRs: []netip.Prefix{prefix("10.244.0.0/24")}}
	tests := []struct {
		name        string
		peers       []Node
		want        []routing.Route
		wantSkipped []string // substrings, one per skipped error
	}{
		{
			name: "no peers",
		},
		{
			name: "v4 peers",
			peers: []Node{
				{Name: "b", Addresses: []netip.Addr{addr("192.168.1.2")}, PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24")}},
				{Name: "c", Addresses: []netip.Addr{addr("192.168.1.3")}, PodCIDRs: []netip.Prefix{prefix("10.244.2.0/24"), prefix("10.245.2.0/24")}},
			},
			want: []routing.Route{
				{Dst: prefix("10.244.1.0/24"), Via: addr("192.168.1.2")},
				{Dst: prefix("10.244.2.0/24"), Via: addr("192.168.1.3")},
				{Dst: prefix("10.245.2.0/24"), Via: addr("192.168.1.3")},
			},
		},
		{
			name: "peer without podCIDRs",
			peers: []Node{
				{Name: "b", Addresses: []netip.Addr{addr("192.168.1.2")}},
			},
		},
		{
			name: "dual-stack peer uses the address of each family",
			peers: []Node{{
				Name:      "b",
				Addresses: []netip.Addr{addr("fd00::2"), addr("192.168.1.2"), addr("192.168.1.22"), addr("fd00::22")},
				PodCIDRs:  []netip.Prefix{prefix("10.244.1.0/24"), prefix("fd00:10:244:1::/64")},
			}},
			want: []routing.Route{
				{Dst: prefix("10.244.1.0/24"), Via: addr("192.168.1.2")},
				{Dst: prefix("fd00:10:244:1::/64"), Via: addr("fd00::2")},
			},
		},
		{
			name: "v6 podCIDR on a v4-only peer is skipped, others kept",
			peers: []Node{
				{Name: "b", Addresses: []netip.Addr{addr("192.168.1.2")}, PodCIDRs: []netip.Prefix{prefix("fd00:10:244:1::/64"), prefix("10.244.1.0/24")}},
				{Name: "c", Addresses: []netip.Addr{addr("192.168.1.3")}, PodCIDRs: []netip.Prefix{prefix("10.244.2.0/24")}},
			},
			want: []routing.Route{
				{Dst: prefix("10.244.1.0/24"), Via: addr("192.168.1.2")},
				{Dst: prefix("10.244.2.0/24"), Via: addr("192.168.1.3")},
			},
			wantSkipped: []string{"node b: no address of the family of podCIDR fd00:10:244:1::/64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// self in the middle, so a bug that skips the wrong node shows.
			nodes := append([]Node{}, tt.peers...)
			nodes = slices.Insert(nodes, len(nodes)/2, self)
			got, skipped := desiredRoutes(&Cluster{Nodes: nodes}, "self")
			if diff := cmp.Diff(tt.want, got, netipComparers); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			for _, r := range got {
				if self.PodCIDRs[0] == r.Dst || r.Via == self.Addresses[0] {
					t.Errorf("route %v leads to self", r)
				}
			}
			if len(skipped) != len(tt.wantSkipped) {
				t.Fatalf("skipped = %v, want %d errors", skipped, len(tt.wantSkipped))
			}
			for i, w := range tt.wantSkipped {
				if !strings.Contains(skipped[i].Error(), w) {
					t.Errorf("skipped[%d] = %q, want %q", i, skipped[i], w)
				}
			}
		})
	}
}

func TestDesiredNFT(t *testing.T) {
	web := nft.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{addr("10.96.0.10")},
		Ports:     []nft.ServicePort{{Protocol: nft.TCP, Port: 80}},
		Endpoints: []nft.Endpoint{{Address: addr("10.244.1.5"), NodeName: "b", Ports: map[string]uint16{"": 8080}, Ready: true, Serving: true}}}
	c := &Cluster{
		Nodes: []Node{
			{Name: "a", Addresses: []netip.Addr{addr("192.168.1.1"), addr("fd00::1")}, PodCIDRs: []netip.Prefix{prefix("10.244.0.0/24"), prefix("fd00:10:244::/64")}},
			{Name: "b", Addresses: []netip.Addr{addr("192.168.1.2")}, PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24")}},
			{Name: "c", Addresses: []netip.Addr{addr("192.168.1.3")}},
		},
		Services: []*nft.Service{&web},
	}
	base := nft.State{
		ClusterCIDRs: []netip.Prefix{prefix("10.244.0.0/24"), prefix("fd00:10:244::/64"), prefix("10.244.1.0/24")},
		NodeIPs:      []netip.Addr{addr("192.168.1.1"), addr("fd00::1"), addr("192.168.1.2"), addr("192.168.1.3")},
		Services:     []nft.Service{web},
	}
	tests := []struct {
		self      string
		localIPs  []netip.Addr
		localPods []netip.Prefix
	}{
		{"a", []netip.Addr{addr("192.168.1.1"), addr("fd00::1")}, []netip.Prefix{prefix("10.244.0.0/24"), prefix("fd00:10:244::/64")}},
		{"b", []netip.Addr{addr("192.168.1.2")}, []netip.Prefix{prefix("10.244.1.0/24")}},
		{"c", []netip.Addr{addr("192.168.1.3")}, nil}, // no podCIDR yet
		{"x", nil, nil}, // not in the cluster: no local addresses
	}
	for _, tt := range tests {
		t.Run(tt.self, func(t *testing.T) {
			want := base
			want.NodeName, want.LocalIPs, want.LocalPodCIDRs = tt.self, tt.localIPs, tt.localPods
			if diff := cmp.Diff(want, desiredNFT(c, tt.self, nil), netipComparers); diff != "" {
				t.Errorf("desiredNFT (-want +got):\n%s", diff)
			}
		})
	}
	if got := desiredNFT(&Cluster{}, "a", nil); len(got.ClusterCIDRs)+len(got.NodeIPs)+len(got.LocalIPs)+len(got.Services) != 0 {
		t.Errorf("desiredNFT(empty, nil) = %+v", got)
	}
}

func TestGateways(t *testing.T) {
	got := gateways([]netip.Prefix{prefix("10.244.1.0/24"), prefix("fd00:10:244:1::/64"), prefix("10.96.0.0/16")})
	want := []netip.Prefix{prefix("10.244.1.1/24"), prefix("fd00:10:244:1::1/64"), prefix("10.96.0.1/16")}
	if diff := cmp.Diff(want, got, netipComparers); diff != "" {
		t.Errorf("gateways (-want +got):\n%s", diff)
	}
	if got := gateways(nil); got != nil {
		t.Errorf("gateways(nil) = %v", got)
	}
}
