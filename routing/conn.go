package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Manager is the real Interface, acting on one network namespace: the process's
// own, or the one given to New (tests use that to stay in a sandbox namespace).
type Manager struct {
	netnsFd int // -1: the process's own namespace
	reaper  reaper
}

var _ Interface = (*Manager)(nil)

// New returns a Manager for the namespace open at netnsFd, or for the process's
// own namespace when netnsFd is negative. The caller keeps the fd open.
func New(netnsFd int) *Manager { return &Manager{netnsFd: netnsFd} }

// dial opens an rtnetlink connection in the node namespace.
func (m *Manager) dial() (*rtnetlink.Conn, error) {
	return dialNS(m.netnsFd)
}

// nsConfig is a netlink config bound to the namespace fd (fd < 0: the
// process's own).
func nsConfig(fd int) *netlink.Config {
	cfg := &netlink.Config{}
	if fd >= 0 {
		cfg.NetNS = fd
	}
	return cfg
}

func dialNS(fd int) (*rtnetlink.Conn, error) {
	cfg := nsConfig(fd)
	cfg.Strict = true
	c, err := rtnetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink dial: %w", err)
	}
	return c, nil
}

// openNetNS opens a pod namespace path; a missing one wraps ErrNetNSGone.
func openNetNS(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNetNSGone, path)
		}
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || (st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC) {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a network namespace", ErrNetNSGone, path)
	}
	return f, nil
}

// linkByName finds a link by name with one targeted RTM_GETLINK (no dump, so
// its cost does not grow with the number of pods); ok is false when there is none.
func linkByName(c *rtnetlink.Conn, name string) (rtnetlink.LinkMessage, bool, error) {
	msgs, err := c.Execute(&rtnetlink.LinkMessage{
		Family:     unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{Name: name},
	}, unix.RTM_GETLINK, netlink.Request)
	if err != nil {
		if isNotFound(err) {
			return rtnetlink.LinkMessage{}, false, nil
		}
		return rtnetlink.LinkMessage{}, false, fmt.Errorf("get link %s: %w", name, err)
	}
	for _, m := range msgs {
		if l, ok := m.(*rtnetlink.LinkMessage); ok && l.Attributes != nil && l.Attributes.Name == name {
			return *l, true, nil
		}
	}
	return rtnetlink.LinkMessage{}, false, nil
}

// setUp brings a link up.
func setUp(c *rtnetlink.Conn, l rtnetlink.LinkMessage) error {
	if l.Flags&unix.IFF_UP != 0 {
		return nil
	}
	return c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Type: l.Type, Index: l.Index,
		Flags: unix.IFF_UP, Change: unix.IFF_UP,
	})
}

// linkAddrs lists the global (non link-local) addresses on a link.
func linkAddrs(c *rtnetlink.Conn, index uint32) ([]netip.Prefix, error) {
	msgs, err := c.Address.List()
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range msgs {
		if a.Index != index || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.Attributes.Address)
		if !ok {
			continue
		}
		out = append(out, netip.PrefixFrom(ip.Unmap(), int(a.PrefixLength)))
	}
	return out, nil
}

func addrMsg(index uint32, p netip.Prefix) *rtnetlink.AddressMessage {
	ip := net.IP(p.Addr().AsSlice())
	m := &rtnetlink.AddressMessage{
		Family:       family(p.Addr()),
		PrefixLength: uint8(p.Bits()),
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        index,
		Attributes:   &rtnetlink.AddressAttributes{Address: ip, Local: ip},
	}
	if p.Addr().Is4() {
		m.Attributes.Broadcast = broadcast(p)
	} else {
		// No duplicate address detection: the address is ours by allocation, and
		// DAD would delay the pod's first packets by a second or more.
		m.Attributes.Flags = unix.IFA_F_NODAD
	}
	return m
}

func broadcast(p netip.Prefix) net.IP {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// isExist reports whether err is the kernel's EEXIST.
func isExist(err error) bool { return errors.Is(err, unix.EEXIST) }

// isNotFound reports whether err says the object is already gone.
func isNotFound(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EADDRNOTAVAIL)
}
