package kubesource

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// node is a Node created at t0 plus age seconds, with InternalIP addrs and
// podCIDRs.
func node(name string, age int, addrs []string, cidrs ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))},
		Spec: v1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: name})
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: a})
	}
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeExternalIP, Address: "203.0.113.9"})
	return n
}

func TestNodes(t *testing.T) {
	old := node("node-z", 0, []string{"192.0.2.10"}, "10.244.0.0/16")
	dual := node("node-b", 1, []string{"192.0.2.11", "2001:db8::11", "192.0.2.11"}, "10.245.1.0/24", "fd00:10:244:1::/64")
	podCIDROnly := node("node-c", 2, []string{"192.0.2.12"})
	podCIDROnly.Spec.PodCIDRs, podCIDROnly.Spec.PodCIDR = nil, "10.245.2.0/24"
	waiting := node("node-d", 3, []string{"192.0.2.13"})
	nested := node("node-a", 4, []string{"192.0.2.14"}, "10.244.3.0/24") // inside node-z's /16: the younger loses
	noAddr := node("node-e", 5, nil, "10.245.5.0/24")
	badAddr := node("node-f", 6, []string{"not-an-ip", "127.0.0.1", "192.0.2.16"}, "10.245.6.0/24")
	badCIDR := node("node-g", 7, []string{"192.0.2.17"}, "10.245.7.1/24")
	small := node("node-h", 8, []string{"192.0.2.18"}, "10.245.8.0/31")
	twoV4 := node("node-i", 9, []string{"192.0.2.19"}, "10.245.9.0/24", "10.245.10.0/24")
	sameAge := node("node-j", 1, []string{"192.0.2.20"}, "10.245.1.128/25") // as old as node-b, later by name

	entries := map[string]*nodeEntry{}
	for _, n := range []*v1.Node{old, dual, podCIDROnly, waiting, nested, noAddr, badAddr, badCIDR, small, twoV4, sameAge} {
		entries[n.Name] = translateNode(n)
	}
	nodes, problems := assembleNodes(entries)
	wantNodes := []Node{
		{Name: "node-b", Addresses: []netip.Addr{addr("192.0.2.11"), addr("2001:db8::11")},
			PodCIDRs: []netip.Prefix{prefix("10.245.1.0/24"), prefix("fd00:10:244:1::/64")}},
		{Name: "node-c", Addresses: []netip.Addr{addr("192.0.2.12")}, PodCIDRs: []netip.Prefix{prefix("10.245.2.0/24")}},
		{Name: "node-d", Addresses: []netip.Addr{addr("192.0.2.13")}},
		{Name: "node-f", Addresses: []netip.Addr{addr("192.0.2.16")}, PodCIDRs: []netip.Prefix{prefix("10.245.6.0/24")}},
		{Name: "node-z", Addresses: []netip.Addr{addr("192.0.2.10")}, PodCIDRs: []netip.Prefix{prefix("10.244.0.0/16")}},
	}
	if diff := cmp.Diff(wantNodes, nodes, netipComparers); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Error())
	}
	wantProblems := []string{
		`Node node-j: spec.podCIDRs[0] "10.245.1.128/25": overlaps a podCIDR of node node-b`,
		`Node node-a: spec.podCIDRs[0] "10.244.3.0/24": overlaps a podCIDR of node node-z`,
		`Node node-e: status.addresses: no usable InternalIP address to route its podCIDRs to`,
		`Node node-f: status.addresses[1].address "not-an-ip": not an IP address`,
		`Node node-f: status.addresses[2].address "127.0.0.1": not a usable node address`,
		`Node node-g: spec.podCIDRs[0] "10.245.7.1/24": not a network prefix (e.g. 10.244.1.0/24)`,
		`Node node-h: spec.podCIDRs[0] "10.245.8.0/31": too small for pods`,
		`Node node-i: spec.podCIDRs[1] "10.245.10.0/24": a second podCIDR of its family`,
	}
	if diff := cmp.Diff(wantProblems, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestOverlap(t *testing.T) {
	var taken []span
	for _, p := range []string{"10.0.0.0/24", "10.0.2.0/24", "10.0.4.0/22", "fd00::/64"} {
		pp := prefix(p)
		taken = append(taken, span{first: pp.Addr(), last: lastAddr(pp), node: p})
	}
	tests := []struct {
		p    string
		want string
	}{
		{"10.0.1.0/24", ""},
		{"10.0.0.128/25", "10.0.0.0/24"},
		{"10.0.0.0/16", "10.0.0.0/24"},
		{"10.0.5.0/24", "10.0.4.0/22"},
		{"10.0.3.0/24", ""},
		{"10.0.8.0/24", ""},
		{"9.0.0.0/8", ""},
		{"fd00::1:0/112", "fd00::/64"},
		{"fd00:0:0:1::/64", ""},
	}
	for _, tt := range tests {
		p := prefix(tt.p)
		got, _ := overlap(taken, span{first: p.Addr(), last: lastAddr(p)})
		if got != tt.want {
			t.Errorf("overlap(%s) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
