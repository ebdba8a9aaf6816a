package nft

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/podnet/podnet/integration/sandbox"
	"golang.org/x/sys/unix"
)

// Real-packet tests of NodePorts, external VIPs, load balancer source ranges,
// traffic policies, endpoint conditions and dual-stack services. They extend
// the topology of svc_traffic_test.go with two clients outside the cluster
// CIDRs (10.244.0.0/16):
//
//	ext-a 192.0.2.2    ── 192.0.2.1    node   inside loadBalancerSourceRanges
//	ext-b 198.51.100.2 ── 198.51.100.1 node   outside them
//
// A masqueraded client shows to pod-a as 10.244.2.1 and to pod-b as
// 10.244.3.1: the node's address on the link to each pod.

const (
	extAIP    = "192.0.2.2"
	extNodeIP = "192.168.1.11" // the node's address on lo (State.NodeIPs, LocalIPs)
	extVIP    = "203.0.113.10" // externalIPs of service ext
	extLBVIP  = "203.0.113.20" // loadBalancerIPs of service ext
	extNP     = "30080"        // NodePort of service ext, port 80

	// dropTimeout bounds a dial that should be dropped. It outlasts the SYN
	// retransmission at 1s, so that a reject whose first ICMP error the
	// kernel's ICMP rate limiter swallowed still shows as refused.
	dropTimeout = 1500 * time.Millisecond
)

// extLab is svcLab with the clients ext-a and ext-b.
type extLab struct {
	*svcLab
	extA, extB *sandbox.NetNS
}

func newExtLab(t *testing.T, prefix string) *extLab {
	t.Helper()
	l := &extLab{svcLab: newSvcLab(t, prefix),
		extA: sandbox.TestNetNS(t, prefix+"-ext-a"),
		extB: sandbox.TestNetNS(t, prefix+"-ext-b"),
	}
	for _, c := range []struct {
		ns           *sandbox.NetNS
		link, subnet string
	}{{l.extA, "to-ext-a", "192.0.2"}, {l.extB, "to-ext-b", "198.51.100"}} {
		veth(t, l.node, c.link, c.ns, "eth0")
		addAddr(t, l.node, c.link, netip.MustParsePrefix(c.subnet+".1/24"))
		addAddr(t, c.ns, "eth0", netip.MustParsePrefix(c.subnet+".2/24"))
		addDefaultRoute(t, c.ns, "eth0", netip.MustParseAddr(c.subnet+".1"))
	}
	return l
}

// extService is ext: ClusterIP, external IP and load balancer IP on port 80
// with NodePort 30080, load balancer clients restricted to 192.0.2.0/24.
func extService(policy TrafficPolicy, eps ...Endpoint) Service {
	return Service{
		Namespace: "default", Name: "ext",
		ClusterIPs:               addrs(svcWebVIP),
		ExternalIPs:              addrs(extVIP),
		LoadBalancerIPs:          addrs(extLBVIP),
		LoadBalancerSourceRanges: prefixes("192.0.2.0/24"),
		Ports:                    []ServicePort{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080}},
		ExternalTrafficPolicy:    policy,
		Endpoints:                eps,
	}
}

// onNode is svcEndpoint on another node.
func onNode(node string, ep Endpoint) Endpoint {
	ep.NodeName = node
	return ep
}

// saw says which client address each server must see.
type saw func(server string) string

// client: every server sees ip, the client's own address.
func client(ip string) saw { return func(string) string { return ip } }

// masqueraded: each pod sees the node's address on its link.
func masqueraded(server string) string {
	return map[string]string{"pod-a": "10.244.2.1", "pod-b": "10.244.3.1"}[server]
}

// askAll makes n connections from ns to addr over network ("tcp4" or "tcp6").
// Every one must be answered by a server that saw the client want names. It
// returns the answers by server.
func askAll(t *testing.T, ns *sandbox.NetNS, network, addr string, n int, want saw) map[string]int {
	t.Helper()
	got, wrong := map[string]int{}, map[string]int{}
	for i := range n {
		r, err := ask(ns, network, addr)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		if w := want(r.server); r.client != w {
			wrong[r.server+" saw "+r.client+", want "+w]++
		}
		got[r.server]++
	}
	if len(wrong) > 0 {
		t.Errorf("%s to %s from %s, of %d connections: %v", network, addr, ns.Name, n, wrong)
	}
	return got
}

// wantServers checks that the answers in got came from exactly the servers in
// want, each at least once.
func wantServers(t *testing.T, what string, got map[string]int, want ...string) {
	t.Helper()
	ok := len(got) == len(want)
	for _, s := range want {
		ok = ok && got[s] > 0
	}
	if !ok {
		t.Errorf("%s: answers by server %v, want each of %v and no other", what, got, want)
	}
}

// probe is one dial that a test expects to be dropped.
type probe struct {
	ns         *sandbox.NetNS
	addr, what string
}

// wantDropped dials every probe at once and wants each dial to time out: the
// SYN was dropped, neither refused nor answered.
func wantDropped(t *testing.T, probes ...probe) {
	t.Helper()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			errs[i] = p.ns.Do(func() error {
				c, err := net.DialTimeout("tcp", p.addr, dropTimeout)
				if err == nil {
					c.Close()
				}
				return err
			})
		})
	}
	wg.Wait()
	for i, p := range probes {
		var ne net.Error
		switch err := errs[i]; {
		case err == nil:
			t.Errorf("%s: %s from %s connected, want it dropped", p.what, p.addr, p.ns.Name)
		case !errors.As(err, &ne) || !ne.Timeout():
			t.Errorf("%s: %s from %s: %v, want a timeout (dropped)", p.what, p.addr, p.ns.Name, err)
		}
	}
}

func TestSvcNodePort(t *testing.T) {
	sandbox.Require(t)
	l := newExtLab(t, "svc-np")
	// A server of the node's own on 127.0.0.1:30080 must keep answering: the
	// NodePort is not served on loopback addresses. route_localnet lets the
	// kernel route a DNATed 127.0.0.1 connection, so only the table's loopback
	// check keeps it from an endpoint.
	serveTCP(t, l.node, "node-lo", net.JoinHostPort("127.0.0.1", extNP))
	if err := l.node.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/route_localnet", []byte("1"), 0o644)
	}); err != nil {
		t.Fatalf("route_localnet in node: %v", err)
	}
	np := net.JoinHostPort(extNodeIP, extNP)
	if _, err := ask(l.client, "tcp4", np); err == nil {
		t.Fatal("before Sync, the NodePort answered: the test network leaks")
	}
	l.sync(t, extService(PolicyCluster, svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))

	const n = 30
	// A pod of this node keeps its address.
	wantServers(t, "client to node IP", askAll(t, l.client, "tcp4", np, n, client(svcClientIP)), "pod-a", "pod-b")
	// One outside them is masqueraded, on every local address of the node.
	wantServers(t, "ext-a to node IP", askAll(t, l.extA, "tcp4", np, n, masqueraded), "pod-a", "pod-b")
	wantServers(t, "ext-a to the node's address on its link",
		askAll(t, l.extA, "tcp4", net.JoinHostPort("192.0.2.1", extNP), n, masqueraded), "pod-a", "pod-b")
	// The node itself connects from 192.168.1.11, outside the cluster CIDRs.
	wantServers(t, "node to its own IP", askAll(t, l.node, "tcp4", np, n, masqueraded), "pod-a", "pod-b")

	r, err := ask(l.node, "tcp4", net.JoinHostPort("127.0.0.1", extNP))
	if err != nil || r.server != "node-lo" {
		t.Errorf("node to 127.0.0.1:%s: got %+v, %v; want the node's own server node-lo", extNP, r, err)
	}

	// A pod of another node (in the cluster CIDRs, not in this node's
	// podCIDRs) is masqueraded: without it, an endpoint beside that pod
	// would answer it directly, bypassing this node's conntrack.
	l.localPods = prefixes("10.244.2.0/24", "10.244.3.0/24")
	l.sync(t, extService(PolicyCluster, svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))
	wantServers(t, "another node's pod to node IP", askAll(t, l.client, "tcp4", np, n, masqueraded), "pod-a", "pod-b")
	// A VIP is translated on the client's own node, so a pod keeps its
	// address there whatever node it is on.
	wantServers(t, "another node's pod to external IP",
		askAll(t, l.client, "tcp4", net.JoinHostPort(extVIP, "80"), n, client(svcClientIP)), "pod-a", "pod-b")
}

func TestSvcExternalIPs(t *testing.T) {
	sandbox.Require(t)
	l := newExtLab(t, "svc-ext")
	l.sync(t, extService(PolicyCluster, svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))

	const n = 20
	ext, lb := net.JoinHostPort(extVIP, "80"), net.JoinHostPort(extLBVIP, "80")
	wantServers(t, "client to external IP", askAll(t, l.client, "tcp4", ext, n, client(svcClientIP)), "pod-a", "pod-b")
	wantServers(t, "ext-a to external IP", askAll(t, l.extA, "tcp4", ext, n, masqueraded), "pod-a", "pod-b")
	wantServers(t, "ext-a to ClusterIP", askAll(t, l.extA, "tcp4", net.JoinHostPort(svcWebVIP, "80"), n, masqueraded), "pod-a", "pod-b")
	// 192.0.2.2 is in loadBalancerSourceRanges.
	wantServers(t, "ext-a to load balancer IP", askAll(t, l.extA, "tcp4", lb, n, masqueraded), "pod-a", "pod-b")
	// The ranges restrict the load balancer IPs only.
	wantServers(t, "ext-b to external IP", askAll(t, l.extB, "tcp4", ext, n, masqueraded), "pod-a", "pod-b")
	wantDropped(t,
		probe{l.extB, lb, "ext-b, outside loadBalancerSourceRanges, to load balancer IP"},
		probe{l.client, lb, "client, outside loadBalancerSourceRanges, to load balancer IP"},
	)
}

func TestSvcExternalTrafficPolicyLocal(t *testing.T) {
	sandbox.Require(t)
	l := newExtLab(t, "svc-etp")
	l.sync(t, extService(PolicyLocal, svcEndpoint(svcPodAIP), onNode("node2", svcEndpoint(svcPodBIP))))

	const n = 20
	external := []string{net.JoinHostPort(extNodeIP, extNP), net.JoinHostPort(extVIP, "80"), net.JoinHostPort(extLBVIP, "80")}
	for _, addr := range external {
		// Only the local endpoint, and the client keeps its address.
		wantServers(t, "ext-a to "+addr, askAll(t, l.extA, "tcp4", addr, n, client(extAIP)), "pod-a")
	}
	// internalTrafficPolicy is Cluster: the ClusterIP uses both endpoints.
	vip := net.JoinHostPort(svcWebVIP, "80")
	wantServers(t, "client to ClusterIP", askAll(t, l.client, "tcp4", vip, n, client(svcClientIP)), "pod-a", "pod-b")
	// externalTrafficPolicy does not apply to clients inside the cluster: a pod
	// reaches every endpoint through the NodePort and the external IP, keeping
	// its address, and so does the node itself, masqueraded (kube-proxy's
	// short-circuit).
	np, ext := net.JoinHostPort(extNodeIP, extNP), net.JoinHostPort(extVIP, "80")
	inside := func(why string) {
		t.Helper()
		wantServers(t, "client to NodePort"+why, askAll(t, l.client, "tcp4", np, n, client(svcClientIP)), "pod-a", "pod-b")
		wantServers(t, "client to external IP"+why, askAll(t, l.client, "tcp4", ext, n, client(svcClientIP)), "pod-a", "pod-b")
		wantServers(t, "node to NodePort"+why, askAll(t, l.node, "tcp4", np, n, masqueraded), "pod-a", "pod-b")
	}
	inside("")

	l.sync(t, extService(PolicyLocal, onNode("node2", svcEndpoint(svcPodAIP)), onNode("node2", svcEndpoint(svcPodBIP))))
	var probes []probe
	for _, addr := range external {
		probes = append(probes, probe{l.extA, addr, "no local endpoint"})
	}
	wantDropped(t, probes...)
	wantServers(t, "client to ClusterIP, no local endpoint", askAll(t, l.client, "tcp4", vip, n, client(svcClientIP)), "pod-a", "pod-b")
	inside(", no local endpoint")

	// A pod of another node reaching this node's NodePort is a pod too: every
	// endpoint, but masqueraded, so that the endpoint's reply comes back
	// through this node; the external IP is translated on the pod's own node,
	// so there it keeps its address.
	l.localPods = prefixes("10.244.2.0/24", "10.244.3.0/24")
	l.sync(t, extService(PolicyLocal, svcEndpoint(svcPodAIP), onNode("node2", svcEndpoint(svcPodBIP))))
	wantServers(t, "another node's pod to NodePort", askAll(t, l.client, "tcp4", np, n, masqueraded), "pod-a", "pod-b")
	wantServers(t, "another node's pod to external IP", askAll(t, l.client, "tcp4", ext, n, client(svcClientIP)), "pod-a", "pod-b")
	// And the outside world still gets only the local endpoint.
	wantServers(t, "ext-a to NodePort, client of another node's pod", askAll(t, l.extA, "tcp4", np, n, client(extAIP)), "pod-a")
}

func TestSvcInternalTrafficPolicyLocal(t *testing.T) {
	sandbox.Require(t)
	l := newExtLab(t, "svc-itp")
	local := func(eps ...Endpoint) Service {
		s := extService(PolicyCluster, eps...)
		s.InternalTrafficPolicy = PolicyLocal
		return s
	}
	l.sync(t, local(svcEndpoint(svcPodAIP), onNode("node2", svcEndpoint(svcPodBIP))))

	const n = 20
	vip := net.JoinHostPort(svcWebVIP, "80")
	wantServers(t, "client to ClusterIP", askAll(t, l.client, "tcp4", vip, n, client(svcClientIP)), "pod-a")
	// externalTrafficPolicy is Cluster: the external IP uses both endpoints.
	ext := net.JoinHostPort(extVIP, "80")
	wantServers(t, "client to external IP", askAll(t, l.client, "tcp4", ext, n, client(svcClientIP)), "pod-a", "pod-b")

	// An endpoint without a node is not local either.
	l.sync(t, local(onNode("", svcEndpoint(svcPodAIP)), onNode("node2", svcEndpoint(svcPodBIP))))
	wantDropped(t, probe{l.client, vip, "no local endpoint"})
	wantServers(t, "client to external IP, no local endpoint", askAll(t, l.client, "tcp4", ext, n, client(svcClientIP)), "pod-a", "pod-b")
}

func TestSvcEndpointConditions(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-cond")
	cond := func(ip string, ready, serving, terminating bool) Endpoint {
		ep := svcEndpoint(ip)
		ep.Ready, ep.Serving, ep.Terminating = ready, serving, terminating
		return ep
	}
	const n = 20
	vip := net.JoinHostPort(svcWebVIP, "80")
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want []string // nil: refused, no usable endpoint
	}{
		{"a ready endpoint beats a serving terminating one",
			[]Endpoint{cond(svcPodAIP, false, true, true), cond(svcPodBIP, true, true, false)}, []string{"pod-b"}},
		{"no ready endpoint: the serving terminating one, never the non-serving one",
			[]Endpoint{cond(svcPodAIP, false, true, true), cond(svcPodBIP, false, false, true)}, []string{"pod-a"}},
		{"serving terminating endpoints share the traffic",
			[]Endpoint{cond(svcPodAIP, false, true, true), cond(svcPodBIP, false, true, true)}, []string{"pod-a", "pod-b"}},
		{"only non-serving endpoints",
			[]Endpoint{cond(svcPodAIP, false, false, true), cond(svcPodBIP, false, false, false)}, nil},
	} {
		l.sync(t, webService(tc.eps...))
		if tc.want == nil {
			if _, err := ask(l.client, "tcp4", vip); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: got %v, want connection refused", tc.name, err)
			}
			continue
		}
		wantServers(t, tc.name, askAll(t, l.client, "tcp4", vip, n, client(svcClientIP)), tc.want...)
	}
}

// addDefaultRoute6 adds an IPv6 default route via gw on the named link in ns.
func addDefaultRoute6(t *testing.T, ns *sandbox.NetNS, link string, gw netip.Addr) {
	t.Helper()
	c := dial(t, ns)
	idx, err := linkIndex(c, link)
	if err != nil {
		t.Fatalf("%s: %v", ns.Name, err)
	}
	err = c.Route.Add(&rtnetlink.RouteMessage{
		Family:     unix.AF_INET6,
		Table:      unix.RT_TABLE_MAIN,
		Protocol:   unix.RTPROT_BOOT,
		Scope:      unix.RT_SCOPE_UNIVERSE,
		Type:       unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: idx},
	})
	if err != nil {
		t.Fatalf("IPv6 default route via %s in %s: %v", gw, ns.Name, err)
	}
}

// waitDAD waits until no address in the namespaces is tentative, failing the
// test after 10s.
func waitDAD(t *testing.T, nss ...*sandbox.NetNS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, ns := range nss {
		c := dial(t, ns)
		for {
			as, err := c.Address.List()
			if err != nil {
				t.Fatalf("list addresses in %s: %v", ns.Name, err)
			}
			tentative := ""
			for _, a := range as {
				if a.Attributes != nil && (uint32(a.Flags)|a.Attributes.Flags)&unix.IFA_F_TENTATIVE != 0 {
					tentative = a.Attributes.Address.String()
				}
			}
			if tentative == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: address %s still tentative after 10s", ns.Name, tentative)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestSvcDualStack(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-ds")
	// fd00:10:244:N::/64 mirrors 10.244.N.0/24 (addresses without DAD).
	for _, p := range []struct {
		ns   *sandbox.NetNS
		link string
		net  string
	}{{l.client, "to-client", "fd00:10:244:1::"}, {l.podA, "to-a", "fd00:10:244:2::"}, {l.podB, "to-b", "fd00:10:244:3::"}} {
		for _, a := range []struct {
			ns   *sandbox.NetNS
			link string
			host string
		}{{l.node, p.link, "1"}, {p.ns, "eth0", "2"}} {
			if err := sandbox.AddAddr(a.ns, a.link, netip.MustParsePrefix(p.net+a.host+"/64")); err != nil {
				t.Fatalf("%s: %v", a.ns.Name, err)
			}
		}
		addDefaultRoute6(t, p.ns, "eth0", netip.MustParseAddr(p.net+"1"))
	}
	// The veths' link-local addresses are still tentative: until they are
	// not, neighbour discovery for forwarded packets can stall for seconds.
	waitDAD(t, l.client, l.node, l.podA, l.podB)
	if err := l.node.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		t.Fatalf("enable IPv6 forwarding in node: %v", err)
	}
	const podA6, podB6, client6, vip6 = "fd00:10:244:2::2", "fd00:10:244:3::2", "fd00:10:244:1::2", "fd00:96::10"
	serveTCP(t, l.podA, "pod-a", net.JoinHostPort(podA6, "8080"))
	serveTCP(t, l.podB, "pod-b", net.JoinHostPort(podB6, "8080"))
	serveUDP(t, l.podA, "pod-a", net.JoinHostPort(podA6, "5353"))
	serveUDP(t, l.podB, "pod-b", net.JoinHostPort(podB6, "5353"))

	svc := webService(svcEndpoint(svcPodAIP), svcEndpoint(podA6), svcEndpoint(svcPodBIP), svcEndpoint(podB6))
	svc.ClusterIPs = addrs(svcWebVIP, vip6)
	err := l.tbl.Sync(State{
		ClusterCIDRs:  prefixes("10.244.0.0/16", "fd00:10:244::/48"),
		LocalPodCIDRs: slices.Concat(l.localPods, prefixes("fd00:10:244:1::/64", "fd00:10:244:2::/64", "fd00:10:244:3::/64")),
		NodeIPs:       addrs(extNodeIP),
		NodeName:      "node1",
		LocalIPs:      addrs(extNodeIP),
		Services:      []Service{svc},
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	const n = 30
	wantServers(t, "IPv6 ClusterIP", askAll(t, l.client, "tcp6", net.JoinHostPort(vip6, "80"), n, client(client6)), "pod-a", "pod-b")
	wantServers(t, "IPv4 ClusterIP", askAll(t, l.client, "tcp4", net.JoinHostPort(svcWebVIP, "80"), n, client(svcClientIP)), "pod-a", "pod-b")
	// UDP over IPv6: each datagram from a new source port is a new flow.
	wantServers(t, "IPv6 ClusterIP, UDP", askAll(t, l.client, "udp6", net.JoinHostPort(vip6, "53"), n, client(client6)), "pod-a", "pod-b")

	// With ClientIP affinity, each family's connections stick to one endpoint.
	svc.AffinityTimeout = time.Minute
	if err := l.tbl.Sync(State{
		ClusterCIDRs:  prefixes("10.244.0.0/16", "fd00:10:244::/48"),
		LocalPodCIDRs: slices.Concat(l.localPods, prefixes("fd00:10:244:1::/64", "fd00:10:244:2::/64", "fd00:10:244:3::/64")),
		NodeIPs:       addrs(extNodeIP),
		NodeName:      "node1",
		LocalIPs:      addrs(extNodeIP),
		Services:      []Service{svc},
	}); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, c := range []struct{ network, addr, client string }{
		{"tcp6", net.JoinHostPort(vip6, "80"), client6}, {"tcp4", net.JoinHostPort(svcWebVIP, "80"), svcClientIP},
	} {
		if got := askAll(t, l.client, c.network, c.addr, 20, client(c.client)); len(got) != 1 {
			t.Errorf("%s with affinity: 20 connections went to %v, want one endpoint", c.addr, got)
		}
	}
}
