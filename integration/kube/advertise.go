package kube

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// AdvertiseLink carries the API server's advertise address in the sandbox's own
// network namespace when no interface has it. It is lo, not a dummy link: kernels
// built without CONFIG_DUMMY (this project's VMs) have no dummy driver, and a
// non-loopback /32 on lo is as local, and as routable from other namespaces.
const AdvertiseLink = "lo"

// ensureAddress makes sure addr is assigned to an interface of this process's
// network namespace. When none has it, it adds it (as a /32 or /128) to
// AdvertiseLink. It refuses to change a namespace that is not a sandbox's: the
// machine's own network is never touched.
func ensureAddress(addr netip.Addr) error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	addrs, err := c.Address.List()
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Attributes == nil {
			continue
		}
		if got, ok := netip.AddrFromSlice(a.Attributes.Address); ok && got.Unmap() == addr {
			return nil
		}
	}
	if !sandbox.Inside() {
		return fmt.Errorf("advertise address %s is on no interface, and adding it is only done inside a sandbox (call sandbox.Main from TestMain)", addr)
	}
	iface, err := net.InterfaceByName(AdvertiseLink)
	if err != nil {
		return fmt.Errorf("advertise address: %w", err)
	}
	fam, bits := uint8(unix.AF_INET), uint8(32)
	if addr.Is6() {
		fam, bits = unix.AF_INET6, 128
	}
	ip := net.IP(addr.AsSlice())
	err = c.Address.New(&rtnetlink.AddressMessage{
		Family: fam, PrefixLength: bits, Index: uint32(iface.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD},
	})
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", addr, AdvertiseLink, err)
	}
	return nil
}
