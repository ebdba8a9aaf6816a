package nft

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// explainState has one service per case of TestFakeExplain. Pods are in
// 10.244.0.0/16 (pod-a 10.244.2.2 and pod-b 10.244.3.2 on node1, pod-c
// 10.244.4.2 on node2); clients outside the cluster are in 192.0.2.0/24
// (inside the load balancer's source ranges) and 198.51.100.0/24.
var explainState = State{
	ClusterCIDRs: prefixes("10.244.0.0/16", "240.0.0.0/4", "fd00:10:244::/48"),
	// node1's podCIDRs: the client 10.244.1.2, pod-a and pod-b.
	LocalPodCIDRs: prefixes("10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24", "fd00:10:244:1::/64", "fd00:10:244:2::/64", "fd00:10:244:3::/64"),
	NodeIPs:       addrs("192.168.1.11", "192.168.1.12", "2001:db8::11"),
	NodeName:      "node1",
	LocalIPs:      addrs("192.168.1.11", "2001:db8::11"),
	Services: []Service{
		{
			Namespace: "default", Name: "web",
			ClusterIPs: addrs("10.96.0.10", "fd00:96::10"),
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
			Endpoints: []Endpoint{explainEndpoint("10.244.2.2", "node1"), explainEndpoint("10.244.3.2", "node1"),
				explainEndpoint("fd00:10:244:2::2", "node1")},
		},
		{Namespace: "default", Name: "self", ClusterIPs: addrs("10.96.0.11"),
			Ports: []ServicePort{{Name: "http", Protocol: TCP, Port: 80}}, Endpoints: []Endpoint{explainEndpoint("10.244.2.2", "node1")}},
		{Namespace: "default", Name: "empty", ClusterIPs: addrs("10.96.0.13"), Ports: []ServicePort{{Protocol: TCP, Port: 80}}},
		{
			Namespace: "default", Name: "ext",
			ClusterIPs:               addrs("10.96.0.20"),
			ExternalIPs:              addrs("203.0.113.10"),
			LoadBalancerIPs:          addrs("203.0.113.20"),
			LoadBalancerSourceRanges: prefixes("192.0.2.0/24"),
			Ports:                    []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}},
			Endpoints:                []Endpoint{explainEndpoint("10.244.2.2", "node1"), explainEndpoint("10.244.3.2", "node1")},
		},
		{
			Namespace: "default", Name: "local",
			ClusterIPs:            addrs("10.96.0.21"),
			ExternalIPs:           addrs("203.0.113.11"),
			Ports:                 []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30081}},
			ExternalTrafficPolicy: PolicyLocal,
			Endpoints:             []Endpoint{explainEndpoint("10.244.2.2", "node1"), explainEndpoint("10.244.4.2", "node2")},
		},
		{
			Namespace: "default", Name: "remote",
			ClusterIPs:            addrs("10.96.0.22"),
			ExternalIPs:           addrs("203.0.113.12"),
			Ports:                 []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30082}},
			ExternalTrafficPolicy: PolicyLocal,
			Endpoints:             []Endpoint{explainEndpoint("10.244.4.2", "node2")},
		},
		{
			Namespace: "default", Name: "ext6",
			ClusterIPs: addrs("fd00:96::20"),
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30083}},
			Endpoints:  []Endpoint{explainEndpoint("fd00:10:244:2::2", "node1"), explainEndpoint("fd00:10:244:3::2", "node1")},
		},
		{
			Namespace: "default", Name: "sticky",
			ClusterIPs:      addrs("10.96.0.30"),
			Ports:           []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
			AffinityTimeout: 10 * time.Minute,
			Endpoints:       []Endpoint{explainEndpoint("10.244.2.2", "node1"), explainEndpoint("10.244.3.2", "node1")},
		},
		{
			Namespace: "default", Name: "egress",
			ClusterIPs: addrs("10.96.0.40"),
			Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
			Endpoints:  []Endpoint{explainEndpoint("198.51.100.50", "")},
		},
	},
	HostPorts: []HostPort{
		{Protocol: TCP, Port: 30000, PodIP: netip.MustParseAddr("10.244.2.2"), PodPort: 8080},
		{HostIP: netip.MustParseAddr("192.168.1.11"), Protocol: UDP, Port: 30001, PodIP: netip.MustParseAddr("10.244.3.2"), PodPort: 5353},
		{Protocol: TCP, Port: 30080, PodIP: netip.MustParseAddr("10.244.3.2"), PodPort: 8080}, // the NodePort of ext wins
		{Protocol: TCP, Port: 30000, PodIP: netip.MustParseAddr("fd00:10:244:2::2"), PodPort: 8080},
	},
}

// explainEndpoint is a ready endpoint on node serving http on 8080.
func explainEndpoint(ip, node string) Endpoint {
	return Endpoint{Address: netip.MustParseAddr(ip), Ports: map[string]uint16{"http": 8080}, NodeName: node, Ready: true}
}

func tcpTo(src, dst string, port uint16) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: unix.IPPROTO_TCP, DstPort: port}
}

func fromNode(p Packet) Packet {
	p.Local = true
	return p
}

// explainCases are the packets of TestFakeExplain, with the Explanation of
// explainState as text (Explanation.String); the kernel tests run them too.
var explainCases = []struct {
	name string
	p    Packet
	want string
}{
	{"ClusterIP with 2 endpoints", tcpTo("10.244.1.2", "10.96.0.10", 80), `
verdict dnat
service 10.96.0.10 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"ClusterIP port the service does not have", tcpTo("10.244.1.2", "10.96.0.10", 81), `
verdict reject
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr @cluster-ips-v4 reject with icmp port-unreachable
    element 10.96.0.10
    10.96.0.10 is a ClusterIP and tcp port 81 is not one of its service ports: rejected with port unreachable
`},
	{"ClusterIP pinged", Packet{Src: netip.MustParseAddr("10.244.1.2"), Dst: netip.MustParseAddr("10.96.0.10"), Proto: unix.IPPROTO_ICMP}, `
verdict reject
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr @cluster-ips-v4 reject with icmp port-unreachable
    element 10.96.0.10
    10.96.0.10 is a ClusterIP and icmp is not one of its service ports: rejected with port unreachable
`},
	{"service without endpoints", tcpTo("10.244.1.2", "10.96.0.13", 80), `
verdict reject
service 10.96.0.13 . tcp . 80
chains prerouting services no-endpoints
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.13 . tcp . 80 : goto no-endpoints
    the service port has no endpoints: goto no-endpoints
[no-endpoints] reject
    rejected: the client gets port unreachable (connection refused)
`},
	{"ClusterIP from outside the cluster", tcpTo("198.51.100.2", "10.96.0.10", 80), `
verdict dnat
service 10.96.0.10 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 10.96.0.10 . tcp . 80
    the client 198.51.100.2 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"ClusterIP from the node itself", fromNode(tcpTo("192.168.1.11", "10.96.0.10", 80)), `
verdict dnat
service 10.96.0.10 . tcp . 80
chains output services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 10.96.0.10 . tcp . 80
    the client 192.168.1.11 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"pod reaching itself through a one-endpoint service", tcpTo("10.244.2.2", "10.96.0.11", 80), `
verdict dnat
service 10.96.0.11 . tcp . 80
chains prerouting services lb-v4-1
backends 10.244.2.2:8080
masquerade yes: the pod 10.244.2.2 reached itself through the service: masqueraded, so that the reply comes from another address than its own
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.11 . tcp . 80 : goto lb-v4-1
    the service port has 1 endpoint: goto lb-v4-1
[lb-v4-1] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @backends-v4
    element 10.96.0.11 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080
    DNAT to the only endpoint 10.244.2.2:8080
[postrouting] ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random
    element 10.244.2.2 . 10.244.2.2
    the pod 10.244.2.2 reached itself through the service: masqueraded, so that the reply comes from another address than its own
`},
	{"pod reaching a service it is one of two endpoints of", tcpTo("10.244.2.2", "10.96.0.10", 80), `
verdict dnat
service 10.96.0.10 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: to 10.244.2.2:8080: the pod 10.244.2.2 reached itself through the service: masqueraded, so that the reply comes from another address than its own; to 10.244.3.2:8080: the pod 10.244.2.2 reaches 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 10.96.0.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random
    element 10.244.2.2 . 10.244.2.2
    to 10.244.2.2:8080: the pod 10.244.2.2 reached itself through the service: masqueraded, so that the reply comes from another address than its own
[postrouting] (no rule)
    to 10.244.3.2:8080: the pod 10.244.2.2 reaches 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"ClusterIP with an endpoint outside the cluster", tcpTo("10.244.1.2", "10.96.0.40", 80), `
verdict dnat
service 10.96.0.40 . tcp . 80
chains prerouting services lb-v4-1
backends 198.51.100.50:8080
masquerade yes: the pod 10.244.1.2 reaches 198.51.100.50:8080, outside the cluster CIDRs and not a node: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.40 . tcp . 80 : goto lb-v4-1
    the service port has 1 endpoint: goto lb-v4-1
[lb-v4-1] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @backends-v4
    element 10.96.0.40 . tcp . 80 . 0x00000000 : 198.51.100.50 . 8080
    DNAT to the only endpoint 198.51.100.50:8080
[postrouting] ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random
    element 10.244.0.0/16
    the pod 10.244.1.2 reaches 198.51.100.50:8080, outside the cluster CIDRs and not a node: masqueraded to the node's address
`},
	{"IPv6 ClusterIP", tcpTo("fd00:10:244:1::2", "fd00:96::10", 80), `
verdict dnat
service fd00:96::10 . tcp . 80
chains prerouting services lb-v6-1
backends [fd00:10:244:2::2]:8080
masquerade no: the pod fd00:10:244:1::2 reaches [fd00:10:244:2::2]:8080, in the cluster CIDRs (fd00:10:244::/48): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip6 daddr . meta l4proto . th dport vmap @service-ips-v6
    element fd00:96::10 . tcp . 80 : goto lb-v6-1
    the service port has 1 endpoint: goto lb-v6-1
[lb-v6-1] dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 1 map @backends-v6
    element fd00:96::10 . tcp . 80 . 0x00000000 : fd00:10:244:2::2 . 8080
    DNAT to the only endpoint [fd00:10:244:2::2]:8080
[postrouting] (no rule)
    the pod fd00:10:244:1::2 reaches [fd00:10:244:2::2]:8080, in the cluster CIDRs (fd00:10:244::/48): no rule matches, the client keeps its address
`},
	{"external IP from outside", tcpTo("198.51.100.2", "203.0.113.10", 80), `
verdict dnat
service 203.0.113.10 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 203.0.113.10 . tcp . 80
    the client 198.51.100.2 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 203.0.113.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"external IP from a pod", tcpTo("10.244.1.2", "203.0.113.10", 80), `
verdict dnat
service 203.0.113.10 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.10 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 203.0.113.10 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.10 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"load balancer IP from a source range", tcpTo("192.0.2.2", "203.0.113.20", 80), `
verdict dnat
service 203.0.113.20 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
    element 203.0.113.20 . tcp . 80 . 192.0.2.0/24
    the client 192.0.2.2 is in a loadBalancerSourceRange of 203.0.113.20 . tcp . 80: allowed
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 203.0.113.20 . tcp . 80
    the client 192.0.2.2 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.20 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 203.0.113.20 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.20 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"load balancer IP from the last address of a source range", tcpTo("192.0.2.255", "203.0.113.20", 80), `
verdict dnat
service 203.0.113.20 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
    element 203.0.113.20 . tcp . 80 . 192.0.2.0/24
    the client 192.0.2.255 is in a loadBalancerSourceRange of 203.0.113.20 . tcp . 80: allowed
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 203.0.113.20 . tcp . 80
    the client 192.0.2.255 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.20 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 203.0.113.20 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.20 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"load balancer IP from outside the source ranges", tcpTo("198.51.100.2", "203.0.113.20", 80), `
verdict drop
service 203.0.113.20 . tcp . 80
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
    element 203.0.113.20 . tcp . 80
    203.0.113.20 . tcp . 80 takes only clients in its loadBalancerSourceRanges and 198.51.100.2 is in none: dropped
`},
	{"load balancer IP from a pod outside the source ranges", tcpTo("10.244.1.2", "203.0.113.20", 80), `
verdict drop
service 203.0.113.20 . tcp . 80
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
    element 203.0.113.20 . tcp . 80
    203.0.113.20 . tcp . 80 takes only clients in its loadBalancerSourceRanges and 10.244.1.2 is in none: dropped
`},
	{"NodePort from outside", tcpTo("198.51.100.2", "192.168.1.11", 30080), `
verdict dnat
service tcp . 30080
chains prerouting services np-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr != @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @masq-nodeports-v4 meta mark set meta mark | 0x00004000
    element tcp . 30080
    the client 198.51.100.2 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30080 : goto np-v4-2
    the service port has 2 endpoints: goto np-v4-2
[np-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v4
    element tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30080 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"NodePort from a pod", tcpTo("10.244.1.2", "192.168.1.11", 30080), `
verdict dnat
service tcp . 30080
chains prerouting services np-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30080 : goto np-v4-2
    the service port has 2 endpoints: goto np-v4-2
[np-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v4
    element tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30080 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"NodePort from another node's pod", tcpTo("10.244.4.2", "192.168.1.11", 30080), `
verdict dnat
service tcp . 30080
chains prerouting services np-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr != @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @masq-nodeports-v4 meta mark set meta mark | 0x00004000
    element tcp . 30080
    the client 10.244.4.2 is a pod of another node (cluster CIDR 10.244.0.0/16), whose endpoint's reply must come back through this node: marked 0x00004000 for masquerade
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30080 : goto np-v4-2
    the service port has 2 endpoints: goto np-v4-2
[np-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v4
    element tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30080 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"IPv6 NodePort from a pod", tcpTo("fd00:10:244:1::2", "2001:db8::11", 30083), `
verdict dnat
service tcp . 30083
chains prerouting services np-v6-2
backends [fd00:10:244:2::2]:8080 [fd00:10:244:3::2]:8080
masquerade no: the pod fd00:10:244:1::2 reaches [fd00:10:244:2::2]:8080, [fd00:10:244:3::2]:8080, in the cluster CIDRs (fd00:10:244::/48): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v6
    element tcp . 30083 : goto np-v6-2
    the service port has 2 endpoints: goto np-v6-2
[np-v6-2] dnat ip6 to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v6
    element tcp . 30083 . 0x00000000 : fd00:10:244:2::2 . 8080, tcp . 30083 . 0x00000001 : fd00:10:244:3::2 . 8080
    DNAT to one of the 2 endpoints, picked at random: [fd00:10:244:2::2]:8080, [fd00:10:244:3::2]:8080
[postrouting] (no rule)
    the pod fd00:10:244:1::2 reaches [fd00:10:244:2::2]:8080, [fd00:10:244:3::2]:8080, in the cluster CIDRs (fd00:10:244::/48): no rule matches, the client keeps its address
`},
	{"IPv6 NodePort from another node's pod", tcpTo("fd00:10:244:4::2", "2001:db8::11", 30083), `
verdict dnat
service tcp . 30083
chains prerouting services np-v6-2
backends [fd00:10:244:2::2]:8080 [fd00:10:244:3::2]:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip6 saddr != @local-pod-cidrs-v6 ip6 daddr != ::1 fib daddr type local meta l4proto . th dport @masq-nodeports-v6 meta mark set meta mark | 0x00004000
    element tcp . 30083
    the client fd00:10:244:4::2 is a pod of another node (cluster CIDR fd00:10:244::/48), whose endpoint's reply must come back through this node: marked 0x00004000 for masquerade
[services] ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v6
    element tcp . 30083 : goto np-v6-2
    the service port has 2 endpoints: goto np-v6-2
[np-v6-2] dnat ip6 to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v6
    element tcp . 30083 . 0x00000000 : fd00:10:244:2::2 . 8080, tcp . 30083 . 0x00000001 : fd00:10:244:3::2 . 8080
    DNAT to one of the 2 endpoints, picked at random: [fd00:10:244:2::2]:8080, [fd00:10:244:3::2]:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"NodePort from the node itself", fromNode(tcpTo("192.168.1.11", "192.168.1.11", 30080)), `
verdict dnat
service tcp . 30080
chains output services np-v4-2
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] ip saddr != @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @masq-nodeports-v4 meta mark set meta mark | 0x00004000
    element tcp . 30080
    the client 192.168.1.11 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30080 : goto np-v4-2
    the service port has 2 endpoints: goto np-v4-2
[np-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-v4
    element tcp . 30080 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30080 . 0x00000001 : 10.244.3.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"NodePort on another node's address", tcpTo("198.51.100.2", "192.168.1.12", 30080), `
verdict none
chains prerouting services hostports
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.12:30080: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 192.168.1.12:30080: the packet goes on without DNAT
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"NodePort on loopback", fromNode(tcpTo("127.0.0.1", "127.0.0.1", 30080)), `
verdict none
chains output services hostports
masquerade no: the client 127.0.0.1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] (no rule)
    no rule matches tcp to 127.0.0.1:30080: not for a service, the packet goes on to the hostports chain
[output] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    hostPorts never translate a loopback source (127.0.0.1): the packet goes on without DNAT
[postrouting] (no rule)
    the client 127.0.0.1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"Local policy external IP from outside", tcpTo("198.51.100.2", "203.0.113.11", 80), `
verdict dnat
service 203.0.113.11 . tcp . 80
chains prerouting services lb-v4-1
backends 10.244.2.2:8080
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.11 . tcp . 80 : goto lb-v4-1
    the service port has 1 endpoint: goto lb-v4-1
[lb-v4-1] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @backends-v4
    element 203.0.113.11 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080
    DNAT to the only endpoint 10.244.2.2:8080
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"Local policy external IP from a pod", tcpTo("10.244.1.2", "203.0.113.11", 80), `
verdict dnat
service 203.0.113.11 . tcp . 80
chains prerouting services lbc-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr @cluster-cidrs-v4 ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
    element 203.0.113.11 . tcp . 80 : goto lbc-v4-2
    the client 10.244.1.2 is a pod (cluster CIDR 10.244.0.0/16), which externalTrafficPolicy Local does not apply to; the service port has 2 endpoints: goto lbc-v4-2
[lbc-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-cluster-v4
    element 203.0.113.11 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.11 . tcp . 80 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"Local policy external IP from the node itself", fromNode(tcpTo("192.168.1.11", "203.0.113.11", 80)), `
verdict dnat
service 203.0.113.11 . tcp . 80
chains output services lbc-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] fib saddr type local ip daddr . meta l4proto . th dport @service-ips-cluster-v4 meta mark set meta mark | 0x00004000
    element 203.0.113.11 . tcp . 80 : goto lbc-v4-2
    the client 192.168.1.11 is the node itself: marked 0x00004000 for masquerade
[services] fib saddr type local ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
    element 203.0.113.11 . tcp . 80 : goto lbc-v4-2
    the node itself is not subject to externalTrafficPolicy Local; the service port has 2 endpoints: goto lbc-v4-2
[lbc-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-cluster-v4
    element 203.0.113.11 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 203.0.113.11 . tcp . 80 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"Local policy NodePort from outside", tcpTo("198.51.100.2", "192.168.1.11", 30081), `
verdict dnat
service tcp . 30081
chains prerouting services np-v4-1
backends 10.244.2.2:8080
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30081 : goto np-v4-1
    the service port has 1 endpoint: goto np-v4-1
[np-v4-1] dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-backends-v4
    element tcp . 30081 . 0x00000000 : 10.244.2.2 . 8080
    DNAT to the only endpoint 10.244.2.2:8080
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"Local policy NodePort from a pod", tcpTo("10.244.1.2", "192.168.1.11", 30081), `
verdict dnat
service tcp . 30081
chains prerouting services npc-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
    element tcp . 30081 : goto npc-v4-2
    the client 10.244.1.2 is a pod of this node (podCIDR 10.244.1.0/24), which externalTrafficPolicy Local does not apply to; the service port has 2 endpoints: goto npc-v4-2
[npc-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-cluster-v4
    element tcp . 30081 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30081 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"Local policy NodePort from another node's pod", tcpTo("10.244.4.2", "192.168.1.11", 30081), `
verdict dnat
service tcp . 30081
chains prerouting services npc-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
    element tcp . 30081 : goto npc-v4-2
    the client 10.244.4.2 is a pod of another node (cluster CIDR 10.244.0.0/16): marked 0x00004000 for masquerade, so that the endpoint's reply comes back through this node
[services] ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
    element tcp . 30081 : goto npc-v4-2
    a pod is not subject to externalTrafficPolicy Local; the service port has 2 endpoints: goto npc-v4-2
[npc-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-cluster-v4
    element tcp . 30081 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30081 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`}, {"Local policy NodePort from the node itself", fromNode(tcpTo("192.168.1.11", "192.168.1.11", 30081)), `
verdict dnat
service tcp . 30081
chains output services npc-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
    element tcp . 30081 : goto npc-v4-2
    the client 192.168.1.11 is the node itself: marked 0x00004000 for masquerade
[services] fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
    element tcp . 30081 : goto npc-v4-2
    the node itself is not subject to externalTrafficPolicy Local; the service port has 2 endpoints: goto npc-v4-2
[npc-v4-2] dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-backends-cluster-v4
    element tcp . 30081 . 0x00000000 : 10.244.2.2 . 8080, tcp . 30081 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"Local policy ClusterIP", tcpTo("198.51.100.2", "10.96.0.21", 80), `
verdict dnat
service 10.96.0.21 . tcp . 80
chains prerouting services lb-v4-2
backends 10.244.2.2:8080 10.244.4.2:8080
masquerade yes: marked 0x00004000 in services: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
    element 10.96.0.21 . tcp . 80
    the client 198.51.100.2 is outside the cluster CIDRs: marked 0x00004000 for masquerade
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.21 . tcp . 80 : goto lb-v4-2
    the service port has 2 endpoints: goto lb-v4-2
[lb-v4-2] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @backends-v4
    element 10.96.0.21 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.21 . tcp . 80 . 0x00000001 : 10.244.4.2 . 8080
    DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.4.2:8080
[postrouting] meta mark & 0x00004000 == 0x00004000 masquerade fully-random
    marked 0x00004000 in services: masqueraded to the node's address
`},
	{"Local policy without a local endpoint, external IP", tcpTo("198.51.100.2", "203.0.113.12", 80), `
verdict drop
service 203.0.113.12 . tcp . 80
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 203.0.113.12 . tcp . 80 : drop
    no endpoint of the service port runs on this node and its traffic policy is Local: dropped
`},
	{"Local policy without a local endpoint, NodePort", tcpTo("198.51.100.2", "192.168.1.11", 30082), `
verdict drop
service tcp . 30082
chains prerouting services
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
    element tcp . 30082 : drop
    no endpoint of the service port runs on this node and its traffic policy is Local: dropped
`},
	{"Local policy without a local endpoint, from a pod", tcpTo("10.244.1.2", "203.0.113.12", 80), `
verdict dnat
service 203.0.113.12 . tcp . 80
chains prerouting services lbc-v4-1
backends 10.244.4.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip saddr @cluster-cidrs-v4 ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
    element 203.0.113.12 . tcp . 80 : goto lbc-v4-1
    the client 10.244.1.2 is a pod (cluster CIDR 10.244.0.0/16), which externalTrafficPolicy Local does not apply to; the service port has 1 endpoint: goto lbc-v4-1
[lbc-v4-1] dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @backends-cluster-v4
    element 203.0.113.12 . tcp . 80 . 0x00000000 : 10.244.4.2 . 8080
    DNAT to the only endpoint 10.244.4.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.4.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"session affinity without an affinity element", tcpTo("10.244.1.2", "10.96.0.30", 80), `
verdict dnat
service 10.96.0.30 . tcp . 80
chains prerouting services lba-v4-2-600
backends 10.244.2.2:8080 10.244.3.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.30 . tcp . 80 : goto lba-v4-2-600
    the service port has 2 endpoints: goto lba-v4-2-600
[lba-v4-2-600] numgen random mod 2 0 update @affinity-v4 { ip saddr . ip daddr . meta l4proto . th dport . numgen inc mod 1 timeout 10m } dnat ip to ip daddr . meta l4proto . th dport . numgen inc mod 1 map @backends-v4
    element 10.96.0.30 . tcp . 80 . 0x00000000 : 10.244.2.2 . 8080, 10.96.0.30 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    no affinity-v4 element pins the client 10.244.1.2: DNAT to one of the 2 endpoints, picked at random: 10.244.2.2:8080, 10.244.3.2:8080, recorded in affinity-v4 for 10m
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"pod to pod", tcpTo("10.244.1.2", "10.244.2.2", 8080), `
verdict none
chains prerouting services hostports
masquerade no: the pod 10.244.1.2 reaches 10.244.2.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 10.244.2.2:8080: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 10.244.2.2:8080: the packet goes on without DNAT
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.2.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`},
	{"pod to a node", tcpTo("10.244.1.2", "192.168.1.12", 22), `
verdict none
chains prerouting services hostports
masquerade no: the pod 10.244.1.2 reaches 192.168.1.12:22, a node (node-ips-v4): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.12:22: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 192.168.1.12:22: the packet goes on without DNAT
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 192.168.1.12:22, a node (node-ips-v4): no rule matches, the client keeps its address
`},
	{"pod to outside the cluster", Packet{Src: netip.MustParseAddr("10.244.1.2"), Dst: netip.MustParseAddr("8.8.8.8"), Proto: unix.IPPROTO_UDP, DstPort: 53}, `
verdict none
chains prerouting services hostports
masquerade yes: the pod 10.244.1.2 reaches 8.8.8.8:53, outside the cluster CIDRs and not a node: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches udp to 8.8.8.8:53: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps udp to 8.8.8.8:53: the packet goes on without DNAT
[postrouting] ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random
    element 10.244.0.0/16
    the pod 10.244.1.2 reaches 8.8.8.8:53, outside the cluster CIDRs and not a node: masqueraded to the node's address
`},
	{"pod at the top of an interval open to the end", tcpTo("255.255.255.254", "8.8.8.8", 443), `
verdict none
chains prerouting services hostports
masquerade yes: the pod 255.255.255.254 reaches 8.8.8.8:443, outside the cluster CIDRs and not a node: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 8.8.8.8:443: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 8.8.8.8:443: the packet goes on without DNAT
[postrouting] ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random
    element 240.0.0.0/4
    the pod 255.255.255.254 reaches 8.8.8.8:443, outside the cluster CIDRs and not a node: masqueraded to the node's address
`},
	{"outside to outside", tcpTo("198.51.100.2", "192.0.2.9", 80), `
verdict none
chains prerouting services hostports
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.0.2.9:80: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 192.0.2.9:80: the packet goes on without DNAT
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"IPv6 pod to outside the cluster", tcpTo("fd00:10:244:1::2", "2001:db8:1::1", 443), `
verdict none
chains prerouting services hostports
masquerade yes: the pod fd00:10:244:1::2 reaches [2001:db8:1::1]:443, outside the cluster CIDRs and not a node: masqueraded to the node's address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to [2001:db8:1::1]:443: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to [2001:db8:1::1]:443: the packet goes on without DNAT
[postrouting] ip6 saddr @cluster-cidrs-v6 ip6 daddr != @cluster-cidrs-v6 ip6 daddr != @node-ips-v6 masquerade fully-random
    element fd00:10:244::/48
    the pod fd00:10:244:1::2 reaches [2001:db8:1::1]:443, outside the cluster CIDRs and not a node: masqueraded to the node's address
`},
	{"IPv6 outside to the node", tcpTo("2001:db8:1::1", "2001:db8::11", 22), `
verdict none
chains prerouting services hostports
masquerade no: the client 2001:db8:1::1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to [2001:db8::11]:22: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to [2001:db8::11]:22: the packet goes on without DNAT
[postrouting] (no rule)
    the client 2001:db8:1::1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`}, {"hostPort from outside", tcpTo("198.51.100.2", "192.168.1.11", 30000), `
verdict dnat
hostport tcp . 30000
chains prerouting services hostports
backends 10.244.2.2:8080
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.11:30000: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-any-v4
    element tcp . 30000 : 10.244.2.2 . 8080
    192.168.1.11 is a local address and the hostPort tcp . 30000 maps every local address: DNAT to the pod 10.244.2.2:8080
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"hostPort hairpin", tcpTo("10.244.2.2", "192.168.1.11", 30000), `
verdict dnat
hostport tcp . 30000
chains prerouting services hostports
backends 10.244.2.2:8080
masquerade yes: the pod 10.244.2.2 reached itself through its own hostPort: masqueraded, so that the reply comes from another address than its own
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.11:30000: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-any-v4
    element tcp . 30000 : 10.244.2.2 . 8080
    192.168.1.11 is a local address and the hostPort tcp . 30000 maps every local address: DNAT to the pod 10.244.2.2:8080
[postrouting] ct status dnat ip saddr . ip daddr @hostport-hairpin-v4 masquerade fully-random
    element 10.244.2.2 . 10.244.2.2
    the pod 10.244.2.2 reached itself through its own hostPort: masqueraded, so that the reply comes from another address than its own
`},
	{"hostPort on another node's address", tcpTo("198.51.100.2", "192.168.1.12", 30000), `
verdict none
chains prerouting services hostports
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.12:30000: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    no hostPort maps tcp to 192.168.1.12:30000: the packet goes on without DNAT
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"hostPort with a hostIP, UDP", udpTo("198.51.100.2", "192.168.1.11", 30001), `
verdict dnat
hostport 192.168.1.11 . udp . 30001
chains prerouting services hostports
backends 10.244.3.2:5353
masquerade no: the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches udp to 192.168.1.11:30001: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports-v4
    element 192.168.1.11 . udp . 30001 : 10.244.3.2 . 5353
    192.168.1.11 is a local address and the hostPort 192.168.1.11 . udp . 30001 maps it: DNAT to the pod 10.244.3.2:5353
[postrouting] (no rule)
    the client 198.51.100.2 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"hostPort from a loopback source", fromNode(tcpTo("127.0.0.1", "127.0.0.1", 30000)), `
verdict none
chains output services hostports
masquerade no: the client 127.0.0.1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] (no rule)
    no rule matches tcp to 127.0.0.1:30000: not for a service, the packet goes on to the hostports chain
[output] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] (no rule)
    hostPorts never translate a loopback source (127.0.0.1): the packet goes on without DNAT
[postrouting] (no rule)
    the client 127.0.0.1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"IPv6 hostPort", tcpTo("2001:db8:1::1", "2001:db8::11", 30000), `
verdict dnat
hostport tcp . 30000
chains prerouting services hostports
backends [fd00:10:244:2::2]:8080
masquerade no: the client 2001:db8:1::1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] (no rule)
    no rule matches tcp to [2001:db8::11]:30000: not for a service, the packet goes on to the hostports chain
[prerouting] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] ip6 saddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @hostports-any-v6
    element tcp . 30000 : fd00:10:244:2::2 . 8080
    2001:db8::11 is a local address and the hostPort tcp . 30000 maps every local address: DNAT to the pod [fd00:10:244:2::2]:8080
[postrouting] (no rule)
    the client 2001:db8:1::1 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
	{"hostPort from the node itself", fromNode(tcpTo("192.168.1.11", "192.168.1.11", 30000)), `
verdict dnat
hostport tcp . 30000
chains output services hostports
backends 10.244.2.2:8080
masquerade no: the client 192.168.1.11 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
[output] jump services
    a new connection the node itself opens goes to the services chain
[services] (no rule)
    no rule matches tcp to 192.168.1.11:30000: not for a service, the packet goes on to the hostports chain
[output] jump hostports
    a new connection no service took goes to the hostports chain
[hostports] ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-any-v4
    element tcp . 30000 : 10.244.2.2 . 8080
    192.168.1.11 is a local address and the hostPort tcp . 30000 maps every local address: DNAT to the pod 10.244.2.2:8080
[postrouting] (no rule)
    the client 192.168.1.11 is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address
`},
}

func udpTo(src, dst string, port uint16) Packet {
	p := tcpTo(src, dst, port)
	p.Proto = unix.IPPROTO_UDP
	return p
}
