package nft

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/podnet/podnet/integration/sandbox"
	"golang.org/x/sys/unix"
)

// Helpers that wire test namespaces together with rtnetlink handles bound to
// each namespace; no goroutine switches namespace here.

// dial opens an rtnetlink connection to ns, closed when the test ends.
func dial(t *testing.T, ns *sandbox.NetNS) *rtnetlink.Conn {
	t.Helper()
	c, err := ns.Dial()
	if err != nil {
		t.Fatalf("rtnetlink %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// veth creates a veth pair: aName in a and its peer bName in b, both up.
func veth(t *testing.T, a *sandbox.NetNS, aName string, b *sandbox.NetNS, bName string) {
	t.Helper()
	peer := &rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{
			Name:  bName,
			NetNS: rtnetlink.NetNSForFD(uint32(b.Fd())),
		},
	}
	err := dial(t, a).Link.New(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{
			Name: aName,
			Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{PeerInfo: peer}},
		},
	})
	if err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.Name, aName, b.Name, bName, err)
	}
	for _, end := range []struct {
		ns   *sandbox.NetNS
		name string
	}{{a, aName}, {b, bName}} {
		if err := sandbox.SetLinkUp(end.ns.Fd(), end.name); err != nil {
			t.Fatalf("set %s/%s up: %v", end.ns.Name, end.name, err)
		}
	}
}

// linkIndex returns the index of the named link in the namespace c is bound to.
func linkIndex(c *rtnetlink.Conn, name string) (uint32, error) {
	links, err := c.Link.List()
	if err != nil {
		return 0, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l.Index, nil
		}
	}
	return 0, fmt.Errorf("link %q not found", name)
}

// addAddr adds the IPv4 address p (e.g. 10.0.0.1/24) to the named link in ns.
func addAddr(t *testing.T, ns *sandbox.NetNS, link string, p netip.Prefix) {
	t.Helper()
	c := dial(t, ns)
	idx, err := linkIndex(c, link)
	if err != nil {
		t.Fatalf("%s: %v", ns.Name, err)
	}
	ip := net.IP(p.Addr().AsSlice())
	err = c.Address.New(&rtnetlink.AddressMessage{
		Family:       unix.AF_INET,
		PrefixLength: uint8(p.Bits()),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        idx,
		Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip},
	})
	if err != nil {
		t.Fatalf("add %s to %s/%s: %v", p, ns.Name, link, err)
	}
}

// addDefaultRoute adds an IPv4 default route via gw on the named link in ns.
func addDefaultRoute(t *testing.T, ns *sandbox.NetNS, link string, gw netip.Addr) {
	t.Helper()
	c := dial(t, ns)
	idx, err := linkIndex(c, link)
	if err != nil {
		t.Fatalf("%s: %v", ns.Name, err)
	}
	err = c.Route.Add(&rtnetlink.RouteMessage{
		Family:     unix.AF_INET,
		Table:      unix.RT_TABLE_MAIN,
		Protocol:   unix.RTPROT_BOOT,
		Scope:      unix.RT_SCOPE_UNIVERSE,
		Type:       unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: idx},
	})
	if err != nil {
		t.Fatalf("default route via %s in %s: %v", gw, ns.Name, err)
	}
}
