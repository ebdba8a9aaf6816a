package routing

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"
)

// EnsureBridge makes the node bridge match b: it creates it if missing (with a
// fixed MAC, so the bridge address does not follow its ports), sets its MTU, adds
// the gateway addresses, removes any other global address, and brings it up. It is
// idempotent and repairs a bridge someone changed. A link of that name that is not
// a bridge is an error, and is left alone.
func (m *Manager) EnsureBridge(b Bridge) error {
	c, err := m.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := ensureBridgeLink(c, b)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	if err := syncAddrs(c, l.Index, b.Gateways); err != nil {
		return fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	if err := setUp(c, l); err != nil {
		return fmt.Errorf("bridge %s: set up: %w", b.Name, err)
	}
	return nil
}

func ensureBridgeLink(c *rtnetlink.Conn, b Bridge) (rtnetlink.LinkMessage, error) {
	l, ok, err := linkByName(c, b.Name)
	if err != nil {
		return l, err
	}
	if !ok {
		mac, err := randomMAC()
		if err != nil {
			return l, err
		}
		err = c.Link.New(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC,
			Attributes: &rtnetlink.LinkAttributes{
				Name: b.Name, MTU: uint32(b.MTU), Address: mac,
				Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &driver.Bridge{}},
			},
		})
		if err != nil && !isExist(err) { // EEXIST: a concurrent creator won the race
			return l, fmt.Errorf("create: %w", err)
		}
		if l, ok, err = linkByName(c, b.Name); err != nil || !ok {
			return l, fmt.Errorf("created but not found: %v", err)
		}
	}
	if l.Attributes.Info == nil || l.Attributes.Info.Kind != "bridge" {
		return l, fmt.Errorf("link exists and is not a bridge")
	}
	if b.MTU > 0 && l.Attributes.MTU != uint32(b.MTU) {
		err := c.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC, Type: l.Type, Index: l.Index, Flags: l.Flags,
			Attributes: &rtnetlink.LinkAttributes{MTU: uint32(b.MTU)},
		})
		if err != nil {
			return l, fmt.Errorf("set mtu %d: %w", b.MTU, err)
		}
	}
	return l, nil
}

// syncAddrs makes the link's global addresses exactly want.
func syncAddrs(c *rtnetlink.Conn, index uint32, want []netip.Prefix) error {
	have, err := linkAddrs(c, index)
	if err != nil {
		return err
	}
	for _, p := range have {
		if !slices.Contains(want, p) {
			if err := c.Address.Delete(addrMsg(index, p)); err != nil && !isNotFound(err) {
				return fmt.Errorf("remove address %s: %w", p, err)
			}
		}
	}
	for _, p := range want {
		if !slices.Contains(have, p) {
			if err := c.Address.New(addrMsg(index, p)); err != nil && !isExist(err) {
				return fmt.Errorf("add address %s: %w", p, err)
			}
		}
	}
	return nil
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random mac: %w", err)
	}
	mac[0] = mac[0]&0xfe | 0x02
	return mac, nil
}
