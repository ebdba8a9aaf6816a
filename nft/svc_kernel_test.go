package nft

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/podnet/podnet/integration/sandbox"
)

// svcState has one of each kind of service: dual-stack ClusterIP with two
// ports, NodePort with externalTrafficPolicy Local, LoadBalancer with source
// ranges, and a service without endpoints.
var svcState = State{
	ClusterCIDRs:  prefixes("10.244.1.0/24", "10.244.2.0/24", "fd00:10:244:1::/64"),
	LocalPodCIDRs: prefixes("10.244.1.0/24", "fd00:10:244:1::/64"),
	NodeIPs:       addrs("192.168.1.11", "192.168.1.12", "2001:db8::11"),
	NodeName:      "node1",
	LocalIPs:      addrs("192.168.1.11", "2001:db8::11"),
	Services: []Service{
		{
			Namespace: "default", Name: "web",
			ClusterIPs: addrs("10.96.0.10", "fd00:96::10"),
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}, {Name: "dns", Protocol: UDP, Port: 53}},
			Endpoints: []Endpoint{
				{Address: netip.MustParseAddr("10.244.2.5"), Ports: map[string]uint16{"http": 8080, "dns": 5353}, NodeName: "node2", Ready: true},
				{Address: netip.MustParseAddr("10.244.1.5"), Ports: map[string]uint16{"http": 8080, "dns": 5353}, NodeName: "node1", Ready: true},
				{Address: netip.MustParseAddr("fd00:10:244:1::5"), Ports: map[string]uint16{"http": 8080}, NodeName: "node1", Ready: true},
				{Address: netip.MustParseAddr("10.244.1.9"), Ports: map[string]uint16{"http": 8080}, NodeName: "node1", Serving: true, Terminating: true},
			},
		},
		{
			Namespace: "default", Name: "np-local",
			ClusterIPs: addrs("10.96.0.11"), ExternalIPs: addrs("203.0.113.7"),
			Ports:                 []ServicePort{{Protocol: SCTP, Port: 9000, NodePort: 30090}},
			ExternalTrafficPolicy: PolicyLocal,
			Endpoints: []Endpoint{
				{Address: netip.MustParseAddr("10.244.2.6"), Ports: map[string]uint16{"": 9001}, NodeName: "node2", Ready: true},
			},
		},
		{
			Namespace: "default", Name: "lb",
			ClusterIPs: addrs("10.96.0.12"), LoadBalancerIPs: addrs("198.51.100.1"),
			LoadBalancerSourceRanges: prefixes("192.0.2.0/24"),
			Ports:                    []ServicePort{{Protocol: TCP, Port: 443, NodePort: 30443}},
			Endpoints: []Endpoint{
				{Address: netip.MustParseAddr("10.244.2.7"), Ports: map[string]uint16{"": 8443}, NodeName: "node2", Ready: true},
			},
		},
		{Namespace: "default", Name: "empty", ClusterIPs: addrs("10.96.0.13"), Ports: []ServicePort{{Protocol: TCP, Port: 80}}},
	},
}

// canonical sorts the elements of concatenated sets and maps, which nft lists
// in the kernel's hash order, and the endpoint-count chains (sortChainBlocks).
func canonical(s string) string {
	lines := strings.Split(sortChainBlocks(s), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.HasPrefix(l, "\t\telements = { ") || i == 0 || !strings.Contains(lines[i-1], " . ") {
			out = append(out, l)
			continue
		}
		var elems []string
		for ; ; i++ {
			e := strings.TrimSpace(strings.TrimPrefix(lines[i], "\t\telements = { "))
			last := strings.HasSuffix(e, " }")
			elems = append(elems, strings.TrimSuffix(strings.TrimSuffix(e, " }"), ","))
			if last {
				break
			}
		}
		slices.Sort(elems)
		out = append(out, "\t\telements = { "+strings.Join(elems, ",\n\t\t\t     ")+" }")
	}
	return strings.Join(out, "\n")
}

// sortChainBlocks puts the endpoint-count chains of a listing in name order:
// nft lists chains in the order they were created, and Sync creates them as
// services need them.
func sortChainBlocks(s string) string {
	const sep = "\n\n\tchain "
	parts := strings.Split(strings.TrimSuffix(s, "\n}"), sep)
	head, fixed, count := parts[0], []string{}, []string{}
	for _, p := range parts[1:] {
		if strings.HasPrefix(p, "lb-") || strings.HasPrefix(p, "np-") {
			count = append(count, p)
		} else {
			fixed = append(fixed, p)
		}
	}
	slices.Sort(count)
	return strings.Join(append([]string{head}, append(fixed, count...)...), sep) + "\n}"
}

func TestTableSyncServices(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-svc")
	tbl := newTable(t, ns)

	lessEndpoints := svcState.Clone()
	lessEndpoints.Services[0].Endpoints = lessEndpoints.Services[0].Endpoints[1:]
	lessEndpoints.Services = lessEndpoints.Services[:3]
	steps := []struct {
		name  string
		state State
	}{
		{"services", svcState},
		{"an endpoint and a service removed", lessEndpoints},
		{"services again", svcState},
		{"no services", v4Only},
	}
	for _, step := range steps {
		if err := tbl.Sync(step.state); err != nil {
			t.Fatalf("%s: Sync: %v", step.name, err)
		}
		got := canonical(trimTrailing(nft(t, ns, "list", "table", "inet", TableName)))
		if diff := cmp.Diff(canonical(trimTrailing(Render(step.state))), got); diff != "" {
			t.Errorf("%s: nft list table differs from Render (-want +got):\n%s", step.name, diff)
		}
		checkSynced(t, ns, step.state)
	}
}

// Edits of one service that move identical bytes between sets (lb-restricted
// and masq-vips hold the same VIP . proto . port; service-ips and
// service-ips-cluster may hold the same verdict; masq-nodeports of both
// families the same proto . port) go through the fast path and leave the
// kernel equal to the State after each step.
func TestTableSyncFastPathEdits(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-edits")
	tbl := newTable(t, ns)
	lb := Service{Namespace: "default", Name: "lb", ClusterIPs: addrs("10.96.0.12", "fd00:96::12"), LoadBalancerIPs: addrs("198.51.100.1"),
		ExternalIPs: addrs("203.0.113.9"),
		Ports:       []ServicePort{{Protocol: TCP, Port: 443, NodePort: 30443}},
		Endpoints:   []Endpoint{{Address: netip.MustParseAddr("10.244.2.7"), Ports: map[string]uint16{"": 8443}, NodeName: "node2", Ready: true}},
	}
	state := func(edit func(*Service)) State {
		s := svcState.Clone()
		svc := lb.Clone()
		edit(&svc)
		s.Services = []Service{svc}
		return s
	}
	steps := []struct {
		name string
		edit func(*Service)
	}{
		{"plain", func(*Service) {}},
		{"source ranges added", func(s *Service) { s.LoadBalancerSourceRanges = prefixes("192.0.2.0/24") }},
		{"source ranges removed", func(*Service) {}},
		{"duplicate and overlapping ranges", func(s *Service) {
			s.LoadBalancerSourceRanges = prefixes("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "192.0.2.0/24")
		}},
		{"Local with ranges", func(s *Service) {
			s.LoadBalancerSourceRanges = prefixes("192.0.2.0/24")
			s.ExternalTrafficPolicy = PolicyLocal
		}},
		{"Local, no endpoints", func(s *Service) { s.ExternalTrafficPolicy, s.Endpoints = PolicyLocal, nil }},
		{"Cluster, no endpoints", func(s *Service) { s.Endpoints = nil }},
		{"Cluster with endpoints", func(*Service) {}},
		{"IPv4 only", func(s *Service) { s.ClusterIPs = addrs("10.96.0.12") }},
		{"dual-stack again", func(*Service) {}},
	}
	for _, st := range steps {
		s := state(st.edit)
		if err := tbl.Sync(s); err != nil {
			t.Fatalf("%s: Sync: %v", st.name, err)
		}
		checkSynced(t, ns, s)
	}
}
