package conntrack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/podnet/podnet/integration/sandbox"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// The lab: a client namespace and a node namespace joined by a veth (eth0 on
// both sides). The node DNATs the client's flows, chosen by source port, to
// endpoint addresses of its own, where echo servers answer; its conntrack
// table is the one under test. All traffic stays between the two namespaces.

// family holds one address family's lab addresses.
type family struct {
	client, node netip.Addr // the two ends of the veth
	bits         int        // their prefix length
	vip          netip.Addr // routed by the client to the node
	ep1, ep2     netip.Addr // endpoint addresses on the node's eth0
}

var (
	lab4 = family{
		client: addr("10.0.0.1"), node: addr("10.0.0.2"), bits: 24,
		vip: addr("10.96.0.10"), ep1: addr("10.0.0.11"), ep2: addr("10.0.0.12"),
	}
	lab6 = family{
		client: addr("fd00::1"), node: addr("fd00::2"), bits: 64,
		vip: addr("fd00:96::10"), ep1: addr("fd00::11"), ep2: addr("fd00::12"),
	}
)

const (
	epPort    = 5353  // every endpoint's port
	nodePort  = 30053 // a NodePort on the node's own address
	ioTimeout = time.Second
)

// flow is one connection from the client, DNATed by the node to ep:epPort.
type flow struct {
	proto uint8
	sport uint16
	dst   netip.AddrPort
	ep    netip.Addr
}

// flows returns the lab's flows in family f: to the VIP's port 53 via both
// endpoints, to its port 54, TCP to port 53, and to the NodePort via both.
func flows(f family) []flow {
	udp, tcp := uint8(unix.IPPROTO_UDP), uint8(unix.IPPROTO_TCP)
	vip := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(f.vip, port) }
	np := netip.AddrPortFrom(f.node, nodePort)
	return []flow{
		{udp, 40001, vip(53), f.ep1},
		{udp, 40002, vip(53), f.ep2},
		{udp, 40003, vip(54), f.ep1},
		{tcp, 40004, vip(53), f.ep1},
		{udp, 40005, np, f.ep1},
		{udp, 40006, np, f.ep2},
	}
}

// entry is the conntrack entry fl makes on the node.
func (fl flow) entry() Entry {
	client := lab4.client
	if fl.dst.Addr().Is6() {
		client = lab6.client
	}
	return Entry{
		Proto:    fl.proto,
		OrigSrc:  netip.AddrPortFrom(client, fl.sport),
		OrigDst:  fl.dst,
		ReplySrc: netip.AddrPortFrom(fl.ep, epPort),
	}
}

// dnatRule is fl's rule in nft syntax.
func (fl flow) dnatRule() string {
	fam, ep := "ip", fl.ep.String()
	if fl.ep.Is6() {
		fam, ep = "ip6", "["+ep+"]"
	}
	p := protoName(fl.proto)
	return fmt.Sprintf("%s daddr %s %s dport %d %s sport %d dnat %s to %s:%d",
		fam, fl.dst.Addr(), p, fl.dst.Port(), p, fl.sport, fam, ep, epPort)
}

// newLab builds the lab, starts the node's servers, installs the DNAT rules
// and runs every flow of both families once. It returns the node namespace.
func newLab(t *testing.T) *sandbox.NetNS {
	t.Helper()
	client := sandbox.TestNetNS(t, "ct-client")
	node := sandbox.TestNetNS(t, "ct-node")
	veth(t, client, node)
	all := append(flows(lab4), flows(lab6)...)
	for _, f := range []family{lab4, lab6} {
		for _, a := range []struct {
			ns   *sandbox.NetNS
			addr netip.Addr
		}{{client, f.client}, {node, f.node}, {node, f.ep1}, {node, f.ep2}} {
			if err := sandbox.AddAddr(a.ns, "eth0", netip.PrefixFrom(a.addr, f.bits)); err != nil {
				t.Fatal(err)
			}
		}
		addDefaultRoute(t, client, f.node)
		serveUDP(t, node, f.ep1, f.ep2)
		serveTCP(t, node, f.ep1)
	}
	var rules []string
	for _, fl := range all {
		rules = append(rules, "\t\t"+fl.dnatRule())
	}
	ruleset := "table inet conntrack-test {\n\tchain prerouting {\n" +
		"\t\ttype nat hook prerouting priority dstnat; policy accept;\n" +
		strings.Join(rules, "\n") + "\n\t}\n}\n"
	if err := runNft(node, ruleset, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	for _, fl := range all {
		if err := fl.run(t, client); err != nil {
			t.Fatalf("flow %s: %v", fl.entry(), err)
		}
	}
	return node
}

// veth joins eth0 in a to eth0 in b, both up.
func veth(t *testing.T, a, b *sandbox.NetNS) {
	t.Helper()
	c, err := a.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := &rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: "eth0", NetNS: rtnetlink.NetNSForFD(uint32(b.Fd())),
	}}
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: "eth0", Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: peer}},
	}})
	if err != nil {
		t.Fatalf("veth %s - %s: %v", a.Name, b.Name, err)
	}
}

// addDefaultRoute adds a default route via gw on eth0 in ns.
func addDefaultRoute(t *testing.T, ns *sandbox.NetNS, gw netip.Addr) {
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
	i := slices.IndexFunc(links, func(l rtnetlink.LinkMessage) bool {
		return l.Attributes != nil && l.Attributes.Name == "eth0"
	})
	if i < 0 {
		t.Fatalf("%s: no eth0", ns.Name)
	}
	fam := uint8(unix.AF_INET)
	if gw.Is6() {
		fam = unix.AF_INET6
	}
	err = c.Route.Add(&rtnetlink.RouteMessage{
		Family: fam, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: links[i].Index},
	})
	if err != nil {
		t.Fatalf("default route via %s in %s: %v", gw, ns.Name, err)
	}
}

// runNft runs the nft binary inside ns with stdin.
func runNft(ns *sandbox.NetNS, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/nft", args...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stderr = strings.NewReader(stdin), &stderr
	if err := ns.Start(cmd); err != nil {
		return fmt.Errorf("start nft %v: %w", args, err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("nft %v: %w: %s\n%s", args, err, stderr.String(), stdin)
	}
	return nil
}

// serveUDP starts a UDP echo server on each addr:epPort in ns, stopped when the
// test ends. Binding the address makes replies leave from it, as DNAT expects.
func serveUDP(t *testing.T, ns *sandbox.NetNS, addrs ...netip.Addr) {
	t.Helper()
	var wg sync.WaitGroup
	var conns []*net.UDPConn
	t.Cleanup(func() {
		for _, pc := range conns {
			pc.Close()
		}
		wg.Wait()
	})
	for _, a := range addrs {
		var pc *net.UDPConn
		err := ns.Do(func() (err error) {
			pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, epPort)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, pc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				n, from, err := pc.ReadFromUDPAddrPort(buf)
				if err != nil {
					return // closed
				}
				pc.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
	}
}

// serveTCP accepts TCP connections on addr:epPort in ns and holds them open
// until the test ends.
func serveTCP(t *testing.T, ns *sandbox.NetNS, a netip.Addr) {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(a, epPort).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
}

// run sends fl from the client: a UDP datagram that must come back echoed
// from the original destination (so DNAT and its reverse both worked), at most
// three tries; or a TCP connection, held open until the test ends.
func (fl flow) run(t *testing.T, client *sandbox.NetNS) error {
	e := fl.entry()
	laddr, raddr := e.OrigSrc, e.OrigDst
	if fl.proto == unix.IPPROTO_TCP {
		var c net.Conn
		err := client.Do(func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(laddr), Timeout: 3 * ioTimeout}
			c, err = d.Dial("tcp", raddr.String())
			return err
		})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	}
	var c *net.UDPConn
	err := client.Do(func() (err error) {
		// Connected: only replies from raddr, the VIP or NodePort, are read.
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(laddr), net.UDPAddrFromAddrPort(raddr))
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for try := 0; try < 3; try++ {
		if _, err = c.Write([]byte("ping")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		var n int
		if n, err = c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ECONNREFUSED) && !isTimeout(err) {
			return err
		}
	}
	return fmt.Errorf("no echo after 3 tries: %v", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// listFlows dumps the conntrack table of ns with ti-mo/conntrack directly.
func listFlows(t *testing.T, ns *sandbox.NetNS) []ct.Flow {
	t.Helper()
	c, err := ct.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fs, err := c.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// listEntries returns the lab client's entries in the conntrack table of ns,
// as sorted text.
func listEntries(t *testing.T, ns *sandbox.NetNS) []string {
	t.Helper()
	var out []string
	for _, f := range listFlows(t, ns) {
		e := entryOf(f)
		if a := e.OrigSrc.Addr(); a == lab4.client || a == lab6.client {
			out = append(out, e.String())
		}
	}
	slices.Sort(out)
	return out
}
