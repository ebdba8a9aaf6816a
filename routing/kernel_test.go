package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/podnet/podnet/integration/sandbox"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { sandbox.Main(m) }

// nodeWithUplink makes a node namespace whose eth0 (a veth to a throwaway peer
// inside the same namespace) holds addr, so gateways in its subnet resolve.
func nodeWithUplink(t *testing.T, name string, addr netip.Prefix) (*sandbox.NetNS, *Manager) {
	t.Helper()
	ns := sandbox.TestNetNS(t, name)
	c, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: "eth0", Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{
			PeerInfo: &rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{Name: "peer0"}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"eth0", "peer0"} {
		if err := sandbox.SetLinkUp(ns.Fd(), n); err != nil {
			t.Fatal(err)
		}
	}
	l, _, _ := linkByName(c, "eth0")
	if err := c.Address.New(addrMsg(l.Index, addr)); err != nil {
		t.Fatal(err)
	}
	return ns, New(ns.Fd())
}

func TestBridgeCreatedAndRepaired(t *testing.T) {
	sandbox.Require(t)
	ns, m := nodeWithUplink(t, "br-node", netip.MustParsePrefix("192.0.2.11/24"))
	b := Bridge{Name: "podnet0", Gateways: []netip.Prefix{netip.MustParsePrefix("10.244.1.1/24")}, MTU: 1400}
	if err := m.EnsureBridge(b); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureBridge(b); err != nil {
		t.Fatalf("second EnsureBridge (idempotent): %v", err)
	}
	assertBridge(t, ns, b)

	// Someone removes the gateway, adds a stray address and sets the bridge down.
	c, _ := ns.Dial()
	defer c.Close()
	l, _, _ := linkByName(c, "podnet0")
	if err := c.Address.Delete(addrMsg(l.Index, b.Gateways[0])); err != nil {
		t.Fatal(err)
	}
	if err := c.Address.New(addrMsg(l.Index, netip.MustParsePrefix("10.9.9.9/24"))); err != nil {
		t.Fatal(err)
	}
	if err := c.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: l.Index, Change: unix.IFF_UP}); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureBridge(b); err != nil {
		t.Fatal(err)
	}
	assertBridge(t, ns, b)
}

func assertBridge(t *testing.T, ns *sandbox.NetNS, b Bridge) {
	t.Helper()
	c, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, ok, err := linkByName(c, b.Name)
	if err != nil || !ok {
		t.Fatalf("bridge %s: found=%v err=%v", b.Name, ok, err)
	}
	if l.Attributes.Info.Kind != "bridge" || l.Flags&unix.IFF_UP == 0 || l.Attributes.MTU != uint32(b.MTU) {
		t.Fatalf("bridge kind=%s up=%v mtu=%d", l.Attributes.Info.Kind, l.Flags&unix.IFF_UP != 0, l.Attributes.MTU)
	}
	addrs, _ := linkAddrs(c, l.Index)
	if !slices.Equal(addrs, b.Gateways) {
		t.Fatalf("bridge addresses = %v, want %v", addrs, b.Gateways)
	}
}

func TestRoutesReconciled(t *testing.T) {
	sandbox.Require(t)
	ns, m := nodeWithUplink(t, "rt-node", netip.MustParsePrefix("192.0.2.11/24"))
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	// A foreign route podnet must never touch, and one that conflicts with a peer.
	c, _ := ns.Dial()
	defer c.Close()
	for _, r := range []Route{{pfx("198.51.100.0/24"), addr("192.0.2.1")}, {pfx("10.244.9.0/24"), addr("192.0.2.1")}} {
		msg := routeMsg(r)
		msg.Protocol = unix.RTPROT_STATIC
		if err := c.Route.Add(msg); err != nil {
			t.Fatal(err)
		}
	}
	want := []Route{{pfx("10.244.2.0/24"), addr("192.0.2.12")}, {pfx("10.244.3.0/24"), addr("192.0.2.13")}, {pfx("10.244.9.0/24"), addr("192.0.2.19")}}
	ch, err := m.SyncRoutes(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Added) != 2 || len(ch.Conflicts) != 1 || ch.Conflicts[0].Dst != pfx("10.244.9.0/24") {
		t.Fatalf("first sync changes = %+v", ch)
	}
	assertRoutes(t, m, want[:2])

	// Someone deletes one of ours: the next sync restores it.
	if err := c.Route.Delete(routeMsg(want[0])); err != nil {
		t.Fatal(err)
	}
	if ch, err = m.SyncRoutes(want); err != nil || len(ch.Added) != 1 {
		t.Fatalf("restore: %+v %v", ch, err)
	}
	assertRoutes(t, m, want[:2])

	// A peer changes address; another leaves.
	moved := []Route{{pfx("10.244.2.0/24"), addr("192.0.2.22")}}
	if ch, err = m.SyncRoutes(moved); err != nil || len(ch.Replaced) != 1 || len(ch.Removed) != 1 {
		t.Fatalf("move+remove: %+v %v", ch, err)
	}
	assertRoutes(t, m, moved)

	// The foreign routes are untouched.
	all, err := listMain(c)
	if err != nil {
		t.Fatal(err)
	}
	foreign := 0
	for _, r := range all {
		if r.proto == unix.RTPROT_STATIC {
			foreign++
		}
	}
	if foreign != 2 {
		t.Fatalf("foreign routes left = %d, want 2: %+v", foreign, all)
	}
}

func assertRoutes(t *testing.T, m *Manager, want []Route) {
	t.Helper()
	got, err := m.ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	key := func(r Route) string { return r.Dst.String() + ">" + r.Via.String() }
	var g, w []string
	for _, r := range got {
		g = append(g, key(r))
	}
	for _, r := range want {
		w = append(w, key(r))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("podnet routes = %v, want %v", g, w)
	}
}

func TestPodAttachDetach(t *testing.T) {
	sandbox.Require(t)
	node, m := nodeWithUplink(t, "pod-node", netip.MustParsePrefix("192.0.2.11/24"))
	gw := netip.MustParsePrefix("10.244.1.1/24")
	if err := m.EnsureBridge(Bridge{Name: "podnet0", Gateways: []netip.Prefix{gw}, MTU: 1500}); err != nil {
		t.Fatal(err)
	}
	podNS := sandbox.TestNetNS(t, "pod-a")
	p := Pod{
		ContainerID: "ctr-a", NetNS: podNS.Path, IfName: "eth0", HostVeth: HostVethName("ctr-a", "eth0"),
		Bridge: "podnet0", MTU: 1500,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.2/24")}, Gateways: []netip.Addr{gw.Addr()},
	}
	links, err := m.AddPod(p)
	if err != nil {
		t.Fatal(err)
	}
	if links.HostVeth != p.HostVeth || len(links.PodMAC) != 17 {
		t.Fatalf("links = %+v", links)
	}
	if err := m.CheckPod(p); err != nil {
		t.Fatalf("check after add: %v", err)
	}
	if _, err := m.AddPod(p); !errors.Is(err, ErrLinkExists) {
		t.Fatalf("second ADD: err = %v, want ErrLinkExists", err)
	}
	assertHairpin(t, node, p.HostVeth)
	assertNoIPv6(t, podNS, "eth0")
	assertNoIPv6(t, node, p.HostVeth)
	// A real TCP connection from the pod to the node through the bridge.
	if got := tcpSource(t, node, podNS, "10.244.1.1:7001"); got != "10.244.1.2" {
		t.Fatalf("node saw client %s, want 10.244.1.2", got)
	}
	hl, err := m.ListHostLinks()
	if err != nil || len(hl) != 1 || hl[0].ContainerID != "ctr-a" || hl[0].IfName != "eth0" {
		t.Fatalf("host links = %+v, %v", hl, err)
	}
	if err := m.DelPod(p); err != nil {
		t.Fatal(err)
	}
	// DEL takes the pod off the bridge at once; the reaper deletes the pair.
	c, _ := node.Dial()
	h, ok, _ := linkByName(c, p.HostVeth)
	if ok && (h.Flags&unix.IFF_UP != 0 || h.Attributes.NetDevGroup == nil || *h.Attributes.NetDevGroup != PendingGroup) {
		t.Fatalf("after DEL host veth is up=%v group=%v, want down in PendingGroup", h.Flags&unix.IFF_UP != 0, h.Attributes.NetDevGroup)
	}
	if err := m.DelPod(p); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if err := m.Reap(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := linkByName(c, p.HostVeth); ok {
		t.Fatal("host veth still present after Reap")
	}
	c.Close()
	if err := m.CheckPod(p); err == nil {
		t.Fatal("check after delete passed")
	}
	podNS.Delete()
	p.NetNS = podNS.Path
	if err := m.DelPod(p); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if _, err := m.AddPod(p); !errors.Is(err, ErrNetNSGone) {
		t.Fatalf("ADD into missing netns: %v", err)
	}
	if hl, _ := m.ListHostLinks(); len(hl) != 0 {
		t.Fatalf("host links left: %+v", hl)
	}
}

func assertHairpin(t *testing.T, ns *sandbox.NetNS, veth string) {
	t.Helper()
	c, _ := ns.Dial()
	defer c.Close()
	l, _, _ := linkByName(c, veth)
	bp, ok := l.Attributes.Info.SlaveData.(*driver.BridgePort)
	if !ok || bp.Mode == nil || *bp.Mode != driver.BridgeEnableEnabled {
		t.Fatalf("%s hairpin not on: %+v", veth, l.Attributes.Info)
	}
}

// tcpSource listens on addr in srv, connects from cli, and returns the client
// address the server saw.
func tcpSource(t *testing.T, srv, cli *sandbox.NetNS, addr string) string {
	t.Helper()
	var ln net.Listener
	if err := srv.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		conn, err := ln.Accept()
		if err != nil {
			seen <- "accept: " + err.Error()
			return
		}
		conn.Close()
		seen <- conn.RemoteAddr().(*net.TCPAddr).IP.String()
	}()
	var conn net.Conn
	if err := cli.Do(func() (err error) { conn, err = net.DialTimeout("tcp", addr, 5*time.Second); return }); err != nil {
		t.Fatal(fmt.Errorf("dial %s: %w", addr, err))
	}
	conn.Close()
	return <-seen
}

// assertNoIPv6 checks an IPv4-only attachment got no IPv6 link-local address
// (addrgenmode none), so it sends no solicitations over the bridge.
func assertNoIPv6(t *testing.T, ns *sandbox.NetNS, name string) {
	t.Helper()
	c, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, ok, err := linkByName(c, name)
	if err != nil || !ok {
		t.Fatalf("%s: %v", name, err)
	}
	addrs, err := c.Address.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Index == l.Index && a.Family == unix.AF_INET6 {
			t.Fatalf("%s has IPv6 address %s", name, a.Attributes.Address)
		}
	}
}
