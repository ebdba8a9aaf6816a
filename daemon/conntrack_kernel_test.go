package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/integration/sandbox"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// Kernel tests of the daemon's conntrack cleanup: real UDP datagrams through
// the daemon's syncs, with a real nft table and conntrack table in a node
// namespace. Topology, all namespaces of the sandbox (each test builds its own):
//
//	client 10.244.1.2 ── 10.244.1.1 node ── 10.244.3.1 ── 10.244.3.2 pod-b
//	                                 │  │
//	pod-a  10.244.2.2 ── 10.244.2.1 ─┘  └─ 192.0.2.1 ── 192.0.2.2 sink (default route)
//
//	node address 192.168.1.10 on the node's lo
//
// pod-a and pod-b answer every datagram to UDP port 5353 with their name. The
// client keeps one socket, so one source port, per destination, as a resolver
// or a game client does. The sink swallows what the node routes out.

const (
	ktClientIP = "10.244.1.2"
	ktVIP      = "10.96.0.10:53"      // dns's ClusterIP port
	ktNodePort = "192.168.1.10:30053" // dns's NodePort on the node address

	ktWait = 300 * time.Millisecond // bounds the wait for each answer
)

// ktCluster is the cluster file for node-a with the dns service holding
// endpoints, or no dns service when endpoints is nil.
func ktCluster(t *testing.T, endpoints []string) *Cluster {
	t.Helper()
	text := `nodes:
- name: node-a
  addresses: [192.168.1.10]
  podCIDRs: [10.244.0.0/16]
`
	if endpoints != nil {
		text += fmt.Sprintf(`services:
- name: dns
  type: NodePort
  clusterIPs: [10.96.0.10]
  ports: [{protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}]
  endpoints: [%s]
`, strings.Join(endpoints, ", "))
	}
	c, err := ParseCluster([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RejectedServices) > 0 {
		t.Fatalf("services rejected: %v", c.RejectedServices)
	}
	return c
}

const (
	ktPodA = "{addresses: [10.244.2.2], node: node-a}"
	ktPodB = "{addresses: [10.244.3.2], node: node-a}"
)

// ktLab is the topology above with a daemon for the node.
type ktLab struct {
	client, node *sandbox.NetNS
	d            *Daemon
}

// newKTLab builds the topology with namespace names starting with prefix, and
// a daemon programming the node's nft table; with cleanup, it deletes stale
// entries from the node's conntrack table.
func newKTLab(t *testing.T, prefix string, cleanup bool) *ktLab {
	t.Helper()
	l := &ktLab{client: sandbox.TestNetNS(t, prefix+"-client"), node: sandbox.TestNetNS(t, prefix+"-node")}
	podA, podB := sandbox.TestNetNS(t, prefix+"-a"), sandbox.TestNetNS(t, prefix+"-b")
	sink := sandbox.TestNetNS(t, prefix+"-sink")
	for _, p := range []struct {
		ns     *sandbox.NetNS
		link   string
		subnet string
	}{{l.client, "to-client", "10.244.1"}, {podA, "to-a", "10.244.2"}, {podB, "to-b", "10.244.3"}} {
		ktLink(t, l.node, p.link, ktVeth(p.ns))
		ktAddr(t, l.node, p.link, p.subnet+".1/24")
		ktAddr(t, p.ns, "eth0", p.subnet+".2/24")
		ktDefaultRoute(t, p.ns, "eth0", p.subnet+".1")
	}
	ktLink(t, l.node, "to-sink", ktVeth(sink))
	ktAddr(t, l.node, "to-sink", "192.0.2.1/24")
	ktAddr(t, sink, "eth0", "192.0.2.2/24")
	ktDefaultRoute(t, l.node, "to-sink", "192.0.2.2")
	ktAddr(t, l.node, "lo", "192.168.1.10/32")
	err := l.node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
	if err != nil {
		t.Fatalf("enable forwarding in node: %v", err)
	}
	ktServe(t, podA, "pod-a")
	ktServe(t, podB, "pod-b")
	l.d = ktDaemon(t, l.node, cleanup)
	return l
}

// ktDaemon is a daemon on the node's nft table, its conntrack table if cleanup,
// and fakes for the rest.
func ktDaemon(t *testing.T, node *sandbox.NetNS, cleanup bool) *Daemon {
	t.Helper()
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	tbl, err := nft.New(nft.WithNetNSFd(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Kernel: routing.NewFake(), NFT: tbl}
	if cleanup {
		ctt, err := conntrack.New(conntrack.WithNetNSFd(node.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		deps.Conntrack = ctt
	}
	d, err := New(cfg, zap.NewNop(), deps)
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil } // the lab set forwarding
	alloc, err := ipam.New(filepath.Join(cfg.StateDir, "ipam"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alloc.Close() })
	d.ipam = alloc
	return d
}

// sync runs one node sync of c, which must succeed.
func (l *ktLab) sync(t *testing.T, c *Cluster) {
	t.Helper()
	l.d.cluster.Store(c)
	if err := l.d.syncNode(); err != nil {
		t.Fatalf("syncNode: %v", err)
	}
}

// dial opens a UDP socket in the client, from source port sport, connected
// to dst; closed when the test ends.
func (l *ktLab) dial(t *testing.T, sport uint16, dst string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := l.client.Do(func() (err error) {
		laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ktClientIP), sport))
		c, err = net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		return err
	})
	if err != nil {
		t.Fatalf("UDP socket from port %d to %s: %v", sport, dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answers sends n datagrams on c, one after the other, and says who answered
// each: the pod's name, "refused" (ICMP port unreachable) or "none" (nothing
// within ktWait).
func answers(t *testing.T, c *net.UDPConn, n int) []string {
	t.Helper()
	var out []string
	buf := make([]byte, 64)
	for range n {
		if _, err := c.Write([]byte("?")); err != nil && !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("send to %s: %v", c.RemoteAddr(), err)
		}
		c.SetReadDeadline(time.Now().Add(ktWait))
		k, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			out = append(out, string(buf[:k]))
		case errors.Is(err, unix.ECONNREFUSED):
			out = append(out, "refused")
		case errors.As(err, &ne) && ne.Timeout():
			out = append(out, "none")
		default:
			t.Fatalf("read from %s: %v", c.RemoteAddr(), err)
		}
	}
	return out
}

// wantAnswers checks who answered n datagrams on c.
func wantAnswers(t *testing.T, what string, c *net.UDPConn, want ...string) {
	t.Helper()
	if got := answers(t, c, len(want)); !slices.Equal(got, want) {
		t.Errorf("%s: from %s to %s answered %v, want %v", what, c.LocalAddr(), c.RemoteAddr(), got, want)
	}
}

// entries lists the client's UDP entries in the node's conntrack table, as
// "10.244.1.2:40001 -> 10.96.0.10:53 reply-src 10.244.2.2:5353", sorted.
func (l *ktLab) entries(t *testing.T) []string {
	t.Helper()
	c, err := ct.Dial(&netlink.Config{NetNS: l.node.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range flows {
		o, r := f.TupleOrig, f.TupleReply
		if o.Proto.Protocol != unix.IPPROTO_UDP || o.IP.SourceAddress.String() != ktClientIP {
			continue
		}
		out = append(out, fmt.Sprintf("%s -> %s reply-src %s",
			netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
			netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort),
			netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort)))
	}
	slices.Sort(out)
	return out
}

// An endpoint removed from a UDP service: a client that keeps its source port
// moves to the remaining endpoint at its next datagram, on the ClusterIP and on
// the NodePort. Without the cleanup (the control) it stays with the removed
// endpoint, which shows the test sees the difference.
func TestKernelConntrackEndpointRemoved(t *testing.T) {
	sandbox.Require(t)
	for _, tt := range []struct {
		name    string
		cleanup bool
		after   string // who answers once pod-a is removed
	}{{"cleanup", true, "pod-b"}, {"control without cleanup", false, "pod-a"}} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "ct-rm"
			if !tt.cleanup {
				prefix = "ct-rm-off"
			}
			l := newKTLab(t, prefix, tt.cleanup)
			l.sync(t, ktCluster(t, []string{ktPodA}))
			vip, np := l.dial(t, 40001, ktVIP), l.dial(t, 40002, ktNodePort)
			wantAnswers(t, "only pod-a", vip, "pod-a", "pod-a")
			wantAnswers(t, "only pod-a", np, "pod-a", "pod-a")

			l.sync(t, ktCluster(t, []string{ktPodA, ktPodB}))
			wantAnswers(t, "pod-b added", vip, "pod-a", "pod-a")
			wantAnswers(t, "pod-b added", np, "pod-a", "pod-a")

			l.sync(t, ktCluster(t, []string{ktPodB}))
			wantAnswers(t, "pod-a removed", vip, tt.after, tt.after, tt.after)
			wantAnswers(t, "pod-a removed", np, tt.after, tt.after, tt.after)
			if s := l.d.Status(); tt.cleanup && (s.ConntrackDeleted != 2 || s.ConntrackFailures != 0) {
				t.Errorf("status: %d conntrack entries deleted, %d failures (%s); want 2, 0",
					s.ConntrackDeleted, s.ConntrackFailures, s.ConntrackLastError)
			}
		})
	}
}

// A UDP service that gets its first endpoint. While it has none, the table
// rejects its datagrams and the kernel confirms no entry, so a client that
// first sent then reaches the endpoint without any cleanup. But a client that
// sent before the service existed has an un-NATed entry (to the ClusterIP,
// routed out of the node; to the NodePort, refused by the node itself) that
// keeps it off the endpoint until the cleanup deletes it.
func TestKernelConntrackFirstEndpoint(t *testing.T) {
	sandbox.Require(t)
	for _, tt := range []struct {
		name    string
		cleanup bool
		vip, np string // who answers the early clients once pod-a serves
	}{{"cleanup", true, "pod-a", "pod-a"}, {"control without cleanup", false, "none", "refused"}} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "ct-first"
			if !tt.cleanup {
				prefix = "ct-first-off"
			}
			l := newKTLab(t, prefix, tt.cleanup)
			l.sync(t, ktCluster(t, nil))
			earlyVIP, earlyNP := l.dial(t, 40001, ktVIP), l.dial(t, 40002, ktNodePort)
			wantAnswers(t, "no service", earlyVIP, "none")
			wantAnswers(t, "no service", earlyNP, "refused")

			l.sync(t, ktCluster(t, []string{}))
			wantAnswers(t, "no endpoints, early client", earlyVIP, "none")
			wantAnswers(t, "no endpoints, early client", earlyNP, "refused")
			vip, np := l.dial(t, 40003, ktVIP), l.dial(t, 40004, ktNodePort)
			wantAnswers(t, "no endpoints", vip, "refused")
			wantAnswers(t, "no endpoints", np, "refused")
			want := []string{
				"10.244.1.2:40001 -> 10.96.0.10:53 reply-src 10.96.0.10:53",
				"10.244.1.2:40002 -> 192.168.1.10:30053 reply-src 192.168.1.10:30053",
			}
			if got := l.entries(t); !slices.Equal(got, want) {
				t.Errorf("entries while the service has no endpoints: %v, want only the early clients' %v", got, want)
			}

			l.sync(t, ktCluster(t, []string{ktPodA}))
			wantAnswers(t, "first endpoint", vip, "pod-a")
			wantAnswers(t, "first endpoint", np, "pod-a")
			wantAnswers(t, "first endpoint, early client", earlyVIP, tt.vip, tt.vip)
			wantAnswers(t, "first endpoint, early client", earlyNP, tt.np, tt.np)
		})
	}
}

// podnetd restarts after the services changed while it was down: pod-a, the
// endpoint its UDP clients were DNATed to, is gone, and a second service got
// its first endpoint after clients had sent to it. The new daemon has no
// earlier sync to compare with; its first sync reconciles the whole table, so
// the clients move to the current endpoints. Without the cleanup (the
// control) they stay stuck.
func TestKernelConntrackRestart(t *testing.T) {
	sandbox.Require(t)
	for _, tt := range []struct {
		name    string
		cleanup bool
		moved   string // who answers the first service's clients after the restart
		early   string // who answers the early client of the second one
	}{{"cleanup", true, "pod-b", "pod-a"}, {"control without cleanup", false, "pod-a", "none"}} {
		t.Run(tt.name, func(t *testing.T) {
			prefix := "ct-restart"
			if !tt.cleanup {
				prefix = "ct-restart-off"
			}
			l := newKTLab(t, prefix, tt.cleanup)
			l.sync(t, ktCluster(t, []string{ktPodA}))
			vip, np := l.dial(t, 40001, ktVIP), l.dial(t, 40002, ktNodePort)
			wantAnswers(t, "before the restart", vip, "pod-a", "pod-a")
			wantAnswers(t, "before the restart", np, "pod-a", "pod-a")
			early := l.dial(t, 40003, "10.96.0.11:53") // no such service yet: routed out
			wantAnswers(t, "no service yet", early, "none")

			// podnetd is down; meanwhile dns loses pod-a and a service on
			// 10.96.0.11 appears, served by pod-a. A new daemon starts.
			c, err := ParseCluster([]byte(`nodes:
- name: node-a
  addresses: [192.168.1.10]
  podCIDRs: [10.244.0.0/16]
services:
- name: dns
  type: NodePort
  clusterIPs: [10.96.0.10]
  ports: [{protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}]
  endpoints: [` + ktPodB + `]
- name: other
  clusterIPs: [10.96.0.11]
  ports: [{protocol: UDP, port: 53, targetPort: 5353}]
  endpoints: [` + ktPodA + `]
`))
			if err != nil || len(c.RejectedServices) > 0 {
				t.Fatalf("cluster: %v %v", err, c.RejectedServices)
			}
			l.d = ktDaemon(t, l.node, tt.cleanup)
			l.sync(t, c)
			wantAnswers(t, "after the restart", vip, tt.moved, tt.moved)
			wantAnswers(t, "after the restart", np, tt.moved, tt.moved)
			wantAnswers(t, "after the restart, early client", early, tt.early, tt.early)
			if s := l.d.Status(); tt.cleanup && (s.ConntrackDeleted != 3 || s.ConntrackFailures != 0) {
				t.Errorf("status: %d conntrack entries deleted, %d failures (%s); want 3, 0",
					s.ConntrackDeleted, s.ConntrackFailures, s.ConntrackLastError)
			}
		})
	}
}

// ktServe answers every datagram to UDP port 5353 in ns with name, until the
// test ends.
func ktServe(t *testing.T, ns *sandbox.NetNS, name string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", ":5353"); return err }); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
}

// ktVeth is a veth whose peer is eth0 in peer.
func ktVeth(peer *sandbox.NetNS) *rtnetlink.LinkInfo {
	return &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: &rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{Name: "eth0", NetNS: rtnetlink.NetNSForFD(uint32(peer.Fd()))},
	}}}
}

// ktLink creates the named link of kind info in ns.
func ktLink(t *testing.T, ns *sandbox.NetNS, name string, info *rtnetlink.LinkInfo) {
	t.Helper()
	c, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{Name: name, Info: info}})
	if err != nil {
		t.Fatalf("create %s %s in %s: %v", info.Kind, name, ns.Name, err)
	}
}

// ktAddr adds the address p to link in ns and sets it up.
func ktAddr(t *testing.T, ns *sandbox.NetNS, link, p string) {
	t.Helper()
	if err := sandbox.AddAddr(ns, link, netip.MustParsePrefix(p)); err != nil {
		t.Fatalf("%s: %v", ns.Name, err)
	}
}

// ktDefaultRoute adds an IPv4 default route in ns via gw on link.
func ktDefaultRoute(t *testing.T, ns *sandbox.NetNS, link, gw string) {
	t.Helper()
	c, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(links, func(l rtnetlink.LinkMessage) bool { return l.Attributes != nil && l.Attributes.Name == link })
	if i < 0 {
		t.Fatalf("%s: no link %s", ns.Name, link)
	}
	err = c.Route.Add(&rtnetlink.RouteMessage{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN,
		Protocol: unix.RTPROT_BOOT, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.ParseIP(gw).To4(), OutIface: links[i].Index}})
	if err != nil {
		t.Fatalf("default route via %s %s in %s: %v", link, gw, ns.Name, err)
	}
}
