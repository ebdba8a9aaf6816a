package nft

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// Tests that send real packets through the service rules. Topology, all
// namespaces of the sandbox (each test builds its own):
//
//	client 10.244.1.2 ── 10.244.1.1 node ── 10.244.3.1 ── 10.244.3.2 pod-b
//	                                 │
//	pod-a  10.244.2.2 ── 10.244.2.1 ─┘       node 192.168.1.11 on lo
//
// pod-a and pod-b run the same servers: TCP 8080 and UDP 5353 answer every
// request with the pod's name and the client address they saw.

const (
	svcWebVIP   = "10.96.0.10" // web: 80/TCP and 53/UDP, endpoints pod-a and pod-b
	svcSelfVIP  = "10.96.0.11" // self: 80/TCP, endpoint pod-a only
	svcEmptyVIP = "10.96.0.13" // empty: 80/TCP, no endpoints

	svcClientIP = "10.244.1.2"
	svcPodAIP   = "10.244.2.2"
	svcPodBIP   = "10.244.3.2"

	svcTimeout = 2 * time.Second // bounds every dial and read
)

// svcLab is the topology above, with the table of the node not yet synced.
type svcLab struct {
	client, podA, podB, node *sandbox.NetNS
	tbl                      *Table
	// localPods are the node's own podCIDRs in the synced State: all three
	// links' subnets, unless a test makes the client a pod of another node.
	localPods []netip.Prefix
}

// newSvcLab builds the topology with namespace names starting with prefix and
// starts the servers in pod-a and pod-b.
func newSvcLab(t *testing.T, prefix string) *svcLab {
	t.Helper()
	l := &svcLab{
		client:    sandbox.TestNetNS(t, prefix+"-client"),
		podA:      sandbox.TestNetNS(t, prefix+"-a"),
		podB:      sandbox.TestNetNS(t, prefix+"-b"),
		node:      sandbox.TestNetNS(t, prefix+"-node"),
		localPods: prefixes("10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"),
	}
	for _, p := range []struct {
		ns     *sandbox.NetNS
		link   string
		subnet string
	}{{l.client, "to-client", "10.244.1"}, {l.podA, "to-a", "10.244.2"}, {l.podB, "to-b", "10.244.3"}} {
		veth(t, l.node, p.link, p.ns, "eth0")
		addAddr(t, l.node, p.link, netip.MustParsePrefix(p.subnet+".1/24"))
		addAddr(t, p.ns, "eth0", netip.MustParsePrefix(p.subnet+".2/24"))
		addDefaultRoute(t, p.ns, "eth0", netip.MustParseAddr(p.subnet+".1"))
	}
	addAddr(t, l.node, "lo", netip.MustParsePrefix("192.168.1.11/32"))
	err := l.node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
	if err != nil {
		t.Fatalf("enable forwarding in node: %v", err)
	}
	for _, s := range []struct {
		ns   *sandbox.NetNS
		name string
		ip   string
	}{{l.podA, "pod-a", svcPodAIP}, {l.podB, "pod-b", svcPodBIP}} {
		serveTCP(t, s.ns, s.name, net.JoinHostPort(s.ip, "8080"))
		serveUDP(t, s.ns, s.name, net.JoinHostPort(s.ip, "5353"))
	}
	l.tbl = newTable(t, l.node)
	return l
}

// sync programs the node with services.
func (l *svcLab) sync(t *testing.T, services ...Service) {
	t.Helper()
	err := l.tbl.Sync(State{
		ClusterCIDRs:  prefixes("10.244.0.0/16"),
		LocalPodCIDRs: l.localPods,
		NodeIPs:       addrs("192.168.1.11"),
		NodeName:      "node1",
		LocalIPs:      addrs("192.168.1.11"),
		Services:      services,
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// svcEndpoint is a ready endpoint on node1 with the ports of web.
func svcEndpoint(ip string) Endpoint {
	return Endpoint{Address: netip.MustParseAddr(ip), Ports: map[string]uint16{"http": 8080, "dns": 5353}, NodeName: "node1", Ready: true}
}

// webService is web with the given endpoints.
func webService(eps ...Endpoint) Service {
	return Service{
		Namespace: "default", Name: "web",
		ClusterIPs: addrs(svcWebVIP),
		Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}, {Name: "dns", Protocol: UDP, Port: 53}},
		Endpoints:  eps,
	}
}

// serveTCP answers every connection to addr in ns with "name clientIP".
func serveTCP(t *testing.T, ns *sandbox.NetNS, name, addr string) {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr) // the socket stays in ns; addr's family
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute)); err != nil { // bounds Accept
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			c.SetDeadline(time.Now().Add(svcTimeout))
			fmt.Fprintf(c, "%s %s", name, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// serveUDP answers every datagram to addr in ns with "name clientIP".
func serveUDP(t *testing.T, ns *sandbox.NetNS, name, addr string) {
	t.Helper()
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr) // the family of addr
		return err
	})
	if err != nil {
		t.Fatalf("listen on udp %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	if err := pc.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			pc.WriteTo([]byte(fmt.Sprintf("%s %s", name, from.(*net.UDPAddr).IP)), from)
		}
	}()
}

// reply is a server's answer: which pod answered and whom it saw.
type reply struct{ server, client string }

// ask sends one request from ns to addr over network ("tcp4", "udp6", …) and
// returns the answer. A TCP dial error is returned unwrapped enough for
// errors.Is(err, syscall.ECONNREFUSED).
func ask(ns *sandbox.NetNS, network, addr string) (reply, error) {
	var text string
	err := ns.Do(func() error {
		c, err := net.DialTimeout(network, addr, svcTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(svcTimeout)); err != nil {
			return err
		}
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			text = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		text = string(b)
		return err
	})
	if err != nil {
		return reply{}, fmt.Errorf("%s %s from %s: %w", network, addr, ns.Name, err)
	}
	server, client, ok := strings.Cut(text, " ")
	if !ok {
		return reply{}, fmt.Errorf("%s %s from %s: malformed answer %q", network, addr, ns.Name, text)
	}
	return reply{server, client}, nil
}

// askMany makes n TCP connections from ns to addr and counts the answers by
// server; every connection must be answered and every server must have seen
// wantClient.
func askMany(t *testing.T, ns *sandbox.NetNS, addr string, n int, wantClient string) map[string]int {
	t.Helper()
	got, wrong := map[string]int{}, map[string]int{}
	for i := range n {
		r, err := ask(ns, "tcp4", addr)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, n, err)
		}
		if r.client != wantClient {
			wrong[r.server+" saw "+r.client]++
		}
		got[r.server]++
	}
	if len(wrong) > 0 {
		t.Errorf("of %d connections, servers saw another client than %s: %v", n, wantClient, wrong)
	}
	return got
}

func TestSvcClusterIPTCP(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-tcp")
	vip := net.JoinHostPort(svcWebVIP, "80")
	if _, err := ask(l.client, "tcp4", vip); err == nil {
		t.Fatal("before Sync, the VIP answered: the test network leaks")
	}
	l.sync(t, webService(svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))

	const n = 40
	got := askMany(t, l.client, vip, n, svcClientIP) // no SNAT between pods
	if got["pod-a"] == 0 || got["pod-b"] == 0 || got["pod-a"]+got["pod-b"] != n {
		t.Errorf("%d connections went to %v, want both pod-a and pod-b", n, got)
	}
}

func TestSvcClusterIPUDP(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-udp")
	l.sync(t, webService(svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))

	got := map[string]int{}
	for i := range 10 { // each from a new source port, so a new conntrack entry
		r, err := ask(l.client, "udp4", net.JoinHostPort(svcWebVIP, "53"))
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if r.client != svcClientIP {
			t.Errorf("request %d: %s saw client %s, want %s", i+1, r.server, r.client, svcClientIP)
		}
		got[r.server]++
	}
	if got["pod-a"]+got["pod-b"] != 10 {
		t.Errorf("answers by server: %v, want only pod-a and pod-b", got)
	}
}

func TestSvcRejects(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-rej")
	l.sync(t,
		webService(svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)),
		Service{Namespace: "default", Name: "empty", ClusterIPs: addrs(svcEmptyVIP), Ports: []ServicePort{{Protocol: TCP, Port: 80}}},
	)
	for _, tc := range []struct {
		name, addr string
	}{
		{"service without endpoints", net.JoinHostPort(svcEmptyVIP, "80")},
		{"ClusterIP port the service does not have", net.JoinHostPort(svcWebVIP, "81")},
	} {
		// The kernel's ICMP rate limit is shared by every namespace: under a
		// loaded test run one port-unreachable may be dropped, and the SYN's
		// retransmission after 1 s is refused. So up to 3 tries, each of
		// which must be refused (a drop would time out), one of them fast.
		var took []time.Duration
		for range 3 {
			start := time.Now()
			_, err := ask(l.client, "tcp4", tc.addr)
			took = append(took, time.Since(start))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: got %v, want connection refused", tc.name, err)
				break
			}
			if took[len(took)-1] < 500*time.Millisecond {
				break
			}
		}
		if last := took[len(took)-1]; last >= 500*time.Millisecond {
			t.Errorf("%s: refused after %v, want well under 1s", tc.name, took)
		}
	}
}

func TestSvcHairpin(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-hp")
	l.sync(t, Service{
		Namespace: "default", Name: "self",
		ClusterIPs: addrs(svcSelfVIP),
		Ports:      []ServicePort{{Name: "http", Protocol: TCP, Port: 80}},
		Endpoints:  []Endpoint{svcEndpoint(svcPodAIP)},
	})
	r, err := ask(l.podA, "tcp4", net.JoinHostPort(svcSelfVIP, "80"))
	if err != nil {
		t.Fatal(err)
	}
	if r.server != "pod-a" {
		t.Errorf("answered by %s, want pod-a", r.server)
	}
	t.Logf("pod-a reached itself through %s and saw client %s", svcSelfVIP, r.client)
	if r.client == svcPodAIP {
		t.Errorf("pod-a reached itself through the VIP and saw its own address %s: not masqueraded", r.client)
	}
}

func TestSvcEndpointRemoved(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-upd")
	vip := net.JoinHostPort(svcWebVIP, "80")
	l.sync(t, webService(svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))
	if got := askMany(t, l.client, vip, 40, svcClientIP); got["pod-b"] == 0 {
		t.Fatalf("before the update, 40 connections went to %v, none to pod-b", got)
	}

	l.sync(t, webService(svcEndpoint(svcPodAIP)))
	const n = 40
	if got := askMany(t, l.client, vip, n, svcClientIP); got["pod-a"] != n {
		t.Errorf("after removing pod-b, %d connections went to %v, want all to pod-a", n, got)
	}
}

// The node itself reaching a ClusterIP from an address outside the cluster
// CIDRs (its own, 192.168.1.11) is masqueraded: each pod sees the node's
// address on its link, and replies come back through the node.
func TestSvcFromNodeMasqueraded(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-node")
	c := dial(t, l.node)
	idx, err := linkIndex(c, "to-a")
	if err != nil {
		t.Fatal(err)
	}
	// 10.96.0.0/16 dev to-a src 192.168.1.11: the service range, as a node's
	// default route would cover it, with the node's own address as source.
	err = c.Route.Add(&rtnetlink.RouteMessage{
		Family: unix.AF_INET, DstLength: 16, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Dst: net.ParseIP("10.96.0.0"), Src: net.ParseIP("192.168.1.11"), OutIface: idx},
	})
	if err != nil {
		t.Fatalf("route to the service range in node: %v", err)
	}
	l.sync(t, webService(svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))
	wantServers(t, "node to ClusterIP", askAll(t, l.node, "tcp4", net.JoinHostPort(svcWebVIP, "80"), 20, masqueraded), "pod-a", "pod-b")
}
