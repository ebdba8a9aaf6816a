package routing

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"
)

// HostVethName derives the host-side veth name of an attachment: "pn" and 11 hex
// digits of a hash of container ID and interface name (13 bytes, under IFNAMSIZ).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "pn" + hex.EncodeToString(sum[:])[:11]
}

// dialPod opens the pod namespace at path and an rtnetlink connection inside
// it; the caller closes both. A missing namespace wraps ErrNetNSGone.
func dialPod(path string) (*rtnetlink.Conn, *os.File, error) {
	nsf, err := openNetNS(path)
	if err != nil {
		return nil, nil, err
	}
	c, err := dialNS(int(nsf.Fd()))
	if err != nil {
		nsf.Close()
		return nil, nil, err
	}
	return c, nsf, nil
}

func alias(containerID, ifName string) string {
	return AliasPrefix + containerID + "/" + ifName
}

// AddPod creates the pod's veth pair: the host end joins the bridge with hairpin
// mode on, the pod end is renamed IfName inside the pod's namespace with its
// addresses, MTU and a default route per gateway. It fails with ErrLinkExists if
// the pod already has IfName, and removes everything it created if a later step
// fails. A leftover host veth of the same attachment (a crashed earlier ADD) is
// replaced.
func (m *Manager) AddPod(p Pod) (links PodLinks, err error) {
	pc, nsf, err := dialPod(p.NetNS)
	if err != nil {
		return links, err
	}
	defer nsf.Close()
	defer pc.Close()
	if err := m.ifNameFree(pc, p); err != nil {
		return links, err
	}
	c, err := m.dial()
	if err != nil {
		return links, err
	}
	defer c.Close()
	br, ok, err := linkByName(c, p.Bridge)
	if err != nil {
		return links, err
	} else if !ok {
		return links, fmt.Errorf("bridge %s not found", p.Bridge)
	}
	if err := removeStaleHostVeth(c, p); err != nil {
		return links, err
	}
	if err := createVeth(c, p, int(nsf.Fd())); err != nil {
		return links, err
	}
	defer func() {
		if err != nil {
			if h, ok, _ := linkByName(c, p.HostVeth); ok {
				_ = c.Link.Delete(h.Index) // the peer goes with it
			}
		}
	}()
	host, err := setupHost(c, m.netnsFd, p, br.Index)
	if err != nil {
		return links, err
	}
	pod, err := setupPodSide(pc, int(nsf.Fd()), p)
	if err != nil {
		return links, err
	}
	return PodLinks{
		HostVeth: p.HostVeth, HostMAC: host.Attributes.Address.String(),
		PodMAC: pod.Attributes.Address.String(), PodIfName: p.IfName,
	}, nil
}

// ifNameFree fails with ErrLinkExists if the pod already has IfName. A retired
// pair waiting for the reaper (a DEL then ADD in the same namespace) is deleted
// first, so it does not block the new attachment.
func (m *Manager) ifNameFree(pc *rtnetlink.Conn, p Pod) error {
	for attempt := 0; ; attempt++ {
		_, ok, err := linkByName(pc, p.IfName)
		if err != nil || !ok {
			return err
		}
		if attempt > 0 {
			return fmt.Errorf("%w: %s in %s", ErrLinkExists, p.IfName, p.NetNS)
		}
		if err := m.Reap(); err != nil {
			return err
		}
	}
}

func removeStaleHostVeth(c *rtnetlink.Conn, p Pod) error {
	h, ok, err := linkByName(c, p.HostVeth)
	if err != nil || !ok {
		return err
	}
	if h.Attributes.Alias == nil || *h.Attributes.Alias != alias(p.ContainerID, p.IfName) {
		return fmt.Errorf("host link %s exists and belongs to another attachment", p.HostVeth)
	}
	if err := c.Link.Delete(h.Index); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove stale %s: %w", p.HostVeth, err)
	}
	return nil
}

func createVeth(c *rtnetlink.Conn, p Pod, podNSFd int) error {
	err := c.Link.New(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{
			Name: p.HostVeth, MTU: uint32(p.MTU),
			Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{
				PeerInfo: &rtnetlink.LinkMessage{
					Family: unix.AF_UNSPEC,
					Attributes: &rtnetlink.LinkAttributes{
						Name: p.IfName, MTU: uint32(p.MTU),
						NetNS: rtnetlink.NetNSForFD(uint32(podNSFd)),
					},
				},
			}},
		},
	})
	if err != nil {
		if isExist(err) {
			return fmt.Errorf("create veth %s: %w", p.HostVeth, ErrLinkExists)
		}
		return fmt.Errorf("create veth %s: %w", p.HostVeth, err)
	}
	return nil
}

// setupHost tags the host end with its owner, joins it to the bridge with
// hairpin on (a pod reaching itself through a service VIP) and sets it up.
func setupHost(c *rtnetlink.Conn, fd int, p Pod, bridge uint32) (rtnetlink.LinkMessage, error) {
	h, ok, err := linkByName(c, p.HostVeth)
	if err != nil || !ok {
		return h, fmt.Errorf("host veth %s missing after create: %v", p.HostVeth, err)
	}
	a := alias(p.ContainerID, p.IfName)
	if err := c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Type: h.Type, Index: h.Index, Flags: h.Flags,
		Attributes: &rtnetlink.LinkAttributes{Alias: &a},
	}); err != nil {
		return h, fmt.Errorf("set alias on %s: %w", p.HostVeth, err)
	}
	if err := c.Link.SetMaster(h.Index, bridge, nil); err != nil {
		return h, fmt.Errorf("attach %s to bridge: %w", p.HostVeth, err)
	}
	// Port options need the link to be a bridge port already.
	on := driver.BridgeEnableEnabled
	if err := c.Link.SetMaster(h.Index, bridge, &driver.BridgePort{Mode: &on}); err != nil {
		return h, fmt.Errorf("hairpin on %s: %w", p.HostVeth, err)
	}
	// A bridge port needs no IPv6 address of its own; without one the kernel
	// sends no solicitations that the bridge would flood to every pod.
	if err := noLinkLocal(fd, h.Index); err != nil {
		return h, fmt.Errorf("%s: %w", p.HostVeth, err)
	}
	if err := setUp(c, h); err != nil {
		return h, fmt.Errorf("set %s up: %w", p.HostVeth, err)
	}
	return h, nil
}

func setupPodSide(pc *rtnetlink.Conn, podFd int, p Pod) (rtnetlink.LinkMessage, error) {
	l, ok, err := linkByName(pc, p.IfName)
	if err != nil || !ok {
		return l, fmt.Errorf("pod link %s missing after create: %v", p.IfName, err)
	}
	for _, a := range p.Addrs {
		if err := pc.Address.New(addrMsg(l.Index, a)); err != nil && !isExist(err) {
			return l, fmt.Errorf("add %s to %s: %w", a, p.IfName, err)
		}
	}
	if !slices.ContainsFunc(p.Addrs, func(a netip.Prefix) bool { return a.Addr().Is6() }) {
		// IPv4-only pod: no IPv6 link-local, so no DAD, router or MLD
		// solicitations flooded over the bridge on every pod start.
		if err := noLinkLocal(podFd, l.Index); err != nil {
			return l, fmt.Errorf("%s: %w", p.IfName, err)
		}
	}
	if err := setUp(pc, l); err != nil {
		return l, fmt.Errorf("set %s up: %w", p.IfName, err)
	}
	for _, gw := range p.Gateways {
		if err := pc.Route.Replace(defaultRoute(l.Index, gw)); err != nil {
			return l, fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return l, nil
}

func defaultRoute(index uint32, gw netip.Addr) *rtnetlink.RouteMessage {
	return &rtnetlink.RouteMessage{
		Family: family(gw), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(gw.AsSlice()), OutIface: index},
	}
}

// DelPod takes the attachment's veth pair out of service at once (host end down,
// so the bridge stops forwarding to it) and leaves the deletion of the pair to
// the reaper (see PendingGroup). It succeeds when the pair or the pod's
// namespace is already gone (CNI DEL must be idempotent) and refuses to touch a
// host link that belongs to another attachment.
func (m *Manager) DelPod(p Pod) error {
	c, err := m.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	h, ok, err := linkByName(c, p.HostVeth)
	if err != nil {
		return err
	}
	if ok {
		if h.Attributes.Alias != nil && *h.Attributes.Alias != alias(p.ContainerID, p.IfName) {
			return fmt.Errorf("host link %s belongs to another attachment (%s)", p.HostVeth, *h.Attributes.Alias)
		}
		if err := m.retire(h.Index); err != nil && !isNotFound(err) {
			return fmt.Errorf("retire %s: %w", p.HostVeth, err)
		}
		m.scheduleReap()
		return nil
	}
	if p.NetNS == "" {
		return nil
	}
	// No host end: remove a lone pod-side link left by an interrupted ADD.
	pc, nsf, err := dialPod(p.NetNS)
	if errors.Is(err, ErrNetNSGone) {
		return nil
	} else if err != nil {
		return err
	}
	defer nsf.Close()
	defer pc.Close()
	l, ok, err := linkByName(pc, p.IfName)
	if err != nil || !ok || l.Attributes.Info == nil || l.Attributes.Info.Kind != "veth" {
		return err
	}
	if err := pc.Link.Delete(l.Index); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s in %s: %w", p.IfName, p.NetNS, err)
	}
	return nil
}

// ListHostLinks lists the host-side veths that carry a podnet alias and are in
// service (retired ones waiting for the reaper are left out).
func (m *Manager) ListHostLinks() ([]HostLink, error) {
	c, err := m.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []HostLink
	for _, l := range links {
		if l.Attributes == nil || l.Attributes.Alias == nil {
			continue
		}
		if g := l.Attributes.NetDevGroup; g != nil && *g == PendingGroup {
			continue // already retired; the reaper deletes it
		}
		rest, ok := strings.CutPrefix(*l.Attributes.Alias, AliasPrefix)
		i := strings.LastIndex(rest, "/")
		if !ok || i <= 0 {
			continue
		}
		out = append(out, HostLink{Name: l.Attributes.Name, ContainerID: rest[:i], IfName: rest[i+1:]})
	}
	return out, nil
}

// CheckPod verifies the attachment as CNI CHECK asks: the pod interface exists
// with its addresses and default routes, and the host end is up on the bridge.
func (m *Manager) CheckPod(p Pod) error {
	pc, nsf, err := dialPod(p.NetNS)
	if err != nil {
		return err
	}
	defer nsf.Close()
	defer pc.Close()
	l, ok, err := linkByName(pc, p.IfName)
	if err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("interface %s not found in %s", p.IfName, p.NetNS)
	}
	have, err := linkAddrs(pc, l.Index)
	if err != nil {
		return err
	}
	for _, a := range p.Addrs {
		if !slices.Contains(have, a) {
			return fmt.Errorf("%s lacks address %s (has %v)", p.IfName, a, have)
		}
	}
	if err := checkDefaultRoutes(pc, l.Index, p.Gateways); err != nil {
		return err
	}
	return m.checkHostEnd(p)
}

func checkDefaultRoutes(pc *rtnetlink.Conn, index uint32, gws []netip.Addr) error {
	for _, gw := range gws {
		msgs, err := pc.Route.ListMatch(&rtnetlink.RouteMessage{Family: family(gw), Table: unix.RT_TABLE_MAIN})
		if err != nil {
			return fmt.Errorf("list pod routes: %w", err)
		}
		found := false
		for _, r := range msgs {
			g, _ := netip.AddrFromSlice(r.Attributes.Gateway)
			if r.DstLength == 0 && r.Attributes.OutIface == index && g.Unmap() == gw {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no default route via %s", gw)
		}
	}
	return nil
}

func (m *Manager) checkHostEnd(p Pod) error {
	c, err := m.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	h, ok, err := linkByName(c, p.HostVeth)
	if err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("host veth %s not found", p.HostVeth)
	}
	br, ok, err := linkByName(c, p.Bridge)
	if err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("bridge %s not found", p.Bridge)
	}
	if h.Attributes.Master == nil || *h.Attributes.Master != br.Index {
		return fmt.Errorf("host veth %s is not attached to %s", p.HostVeth, p.Bridge)
	}
	if h.Flags&unix.IFF_UP == 0 {
		return fmt.Errorf("host veth %s is down", p.HostVeth)
	}
	return nil
}
