package routing

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Query asks the kernel's routing decision for one packet, as `ip route get
// DST [from SRC] [iif DEV]` does: with Iif, the decision for a packet that
// arrived on that interface (forwarded); without, for one the host sends.
type Query struct {
	Dst netip.Addr
	Src netip.Addr // zero: any
	Iif string     // input interface; empty: an output lookup
	// NetNS is the path of the network namespace to ask (a pod's); empty:
	// the Manager's.
	NetNS string
}

// Decision is the kernel's answer to a Query.
type Decision struct {
	// Type is the route type: unicast, local, broadcast, unreachable,
	// blackhole, prohibit, …
	Type string
	Dev  string     // output interface; "" for local delivery on lo
	Via  netip.Addr // next hop; zero when the destination is on-link
	// PrefSrc is the source address the host would pick.
	PrefSrc netip.Addr
	Table   uint32
}

// Looker answers routing queries; *Manager and *Fake implement it.
type Looker interface {
	RouteGet(q Query) (Decision, error)
}

var _ Looker = (*Manager)(nil)

// RouteGet asks the kernel for the routing decision of q with one
// RTM_GETROUTE. An unroutable destination is an error from the kernel
// (ENETUNREACH, EHOSTUNREACH), wrapped with the query.
func (m *Manager) RouteGet(q Query) (Decision, error) {
	fd := m.netnsFd
	if q.NetNS != "" {
		f, err := openNetNS(q.NetNS)
		if err != nil {
			return Decision{}, err
		}
		defer f.Close()
		fd = int(f.Fd())
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nsConfig(fd))
	if err != nil {
		return Decision{}, fmt.Errorf("rtnetlink dial: %w", err)
	}
	defer c.Close()
	req, err := routeGetRequest(c, q)
	if err != nil {
		return Decision{}, err
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return Decision{}, fmt.Errorf("route get %s: %w", describe(q), err)
	}
	if len(msgs) == 0 {
		return Decision{}, fmt.Errorf("route get %s: empty answer", describe(q))
	}
	return parseDecision(c, msgs[0].Data)
}

func describe(q Query) string {
	s := q.Dst.String()
	if q.Src.IsValid() {
		s += " from " + q.Src.String()
	}
	if q.Iif != "" {
		s += " iif " + q.Iif
	}
	if q.NetNS != "" {
		s += " in " + q.NetNS
	}
	return s
}

// routeGetRequest builds RTM_GETROUTE: struct rtmsg, then RTA_DST, RTA_SRC,
// RTA_IIF (include/uapi/linux/rtnetlink.h).
func routeGetRequest(c *netlink.Conn, q Query) (netlink.Message, error) {
	if !q.Dst.IsValid() || (q.Src.IsValid() && q.Src.Is4() != q.Dst.Is4()) {
		return netlink.Message{}, fmt.Errorf("route get: bad query %s", describe(q))
	}
	family, bits := byte(unix.AF_INET), byte(32)
	if !q.Dst.Is4() {
		family, bits = unix.AF_INET6, 128
	}
	hdr := []byte{family, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	// rtm_flags RTM_F_LOOKUP_TABLE: report the table the route came from.
	binary.NativeEndian.PutUint32(hdr[8:], unix.RTM_F_LOOKUP_TABLE)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, q.Dst.AsSlice())
	if q.Src.IsValid() {
		hdr[2] = bits
		ae.Bytes(unix.RTA_SRC, q.Src.AsSlice())
	}
	if q.Iif != "" {
		idx, err := ifIndex(c, q.Iif)
		if err != nil {
			return netlink.Message{}, err
		}
		ae.Uint32(unix.RTA_IIF, idx)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request},
		Data:   append(hdr, attrs...),
	}, nil
}

var routeTypes = map[byte]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw",
}

func parseDecision(c *netlink.Conn, b []byte) (Decision, error) {
	if len(b) < 12 {
		return Decision{}, fmt.Errorf("route get: short answer (%d bytes)", len(b))
	}
	d := Decision{Type: routeTypes[b[7]], Table: uint32(b[4])}
	if d.Type == "" {
		d.Type = fmt.Sprintf("type %d", b[7])
	}
	ad, err := netlink.NewAttributeDecoder(b[12:])
	if err != nil {
		return Decision{}, fmt.Errorf("route get: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_OIF:
			if name, err := ifName(c, ad.Uint32()); err == nil {
				d.Dev = name
			} else {
				d.Dev = fmt.Sprintf("if%d", ad.Uint32())
			}
		case unix.RTA_GATEWAY:
			d.Via, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_PREFSRC:
			d.PrefSrc, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_TABLE:
			d.Table = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return Decision{}, fmt.Errorf("route get: %w", err)
	}
	return d, nil
}

// ifIndex and ifName ask RTM_GETLINK on c's namespace.
func ifIndex(c *netlink.Conn, name string) (uint32, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data: append(make([]byte, unix.SizeofIfInfomsg), attrs...)})
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	if len(msgs) == 0 || len(msgs[0].Data) < unix.SizeofIfInfomsg {
		return 0, fmt.Errorf("interface %s: empty answer", name)
	}
	return binary.NativeEndian.Uint32(msgs[0].Data[4:8]), nil
}

func ifName(c *netlink.Conn, index uint32) (string, error) {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(hdr[4:8], index)
	msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request}, Data: hdr})
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 || len(msgs[0].Data) < unix.SizeofIfInfomsg {
		return "", os.ErrNotExist
	}
	ad, err := netlink.NewAttributeDecoder(msgs[0].Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return "", err
	}
	for ad.Next() {
		if ad.Type() == unix.IFLA_IFNAME {
			return ad.String(), nil
		}
	}
	return "", os.ErrNotExist
}
