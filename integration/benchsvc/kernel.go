package benchsvc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
	"github.com/podnet/podnet/nft"
)

// backendsSet is the map of table inet podnet that holds, for each IPv4 VIP
// port, its endpoints by slot: ipv4_addr . inet_proto . inet_service . mark :
// ipv4_addr . inet_service (see docs/nftables.md).
const backendsSet = "backends-v4"

// kernel reads single elements of table inet podnet in one namespace with a
// non-dump NFT_MSG_GETSETELEM (what `nft get element` sends): the cost of a
// lookup does not grow with the map, so the benchmark can poll for an element
// every millisecond without loading the machine, even with 200k elements.
type kernel struct {
	conn *netlink.Conn
}

func dialKernel(ns *sandbox.NetNS) (*kernel, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink in %s: %w", ns.Name, err)
	}
	return &kernel{conn: c}, nil
}

func (k *kernel) Close() error { return k.conn.Close() }

// errNoElement is returned by backend when the key is not in the map, or the
// table or map does not exist (yet).
var errNoElement = errors.New("no such element")

// backend returns the endpoint the backends map holds for slot of TCP port
// port of vip.
func (k *kernel) backend(vip netip.Addr, port uint16, slot uint32) (netip.AddrPort, error) {
	// Key fields as nftables registers hold them, each padded to 4 bytes; the
	// slot (a mark) is in host byte order.
	key := vip.AsSlice()
	key = append(key, unix.IPPROTO_TCP, 0, 0, 0)
	key = binary.BigEndian.AppendUint16(key, port)
	key = append(key, 0, 0)
	key = binary.NativeEndian.AppendUint32(key, slot)

	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, nft.TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, backendsSet)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return netip.AddrPort{}, err
	}
	msg := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request,
		},
		// nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	replies, err := k.conn.Execute(msg)
	if errors.Is(err, unix.ENOENT) {
		return netip.AddrPort{}, errNoElement
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("get element of %s: %w", backendsSet, err)
	}
	for _, r := range replies {
		if data := elementData(r.Data); len(data) == 8 {
			addr, _ := netip.AddrFromSlice(data[:4])
			return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(data[4:6])), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("get element of %s: reply without data", backendsSet)
}

// elementData digs the value of the first element's data out of a
// NFT_MSG_NEWSETELEM payload (nfgenmsg, then the element list).
func elementData(b []byte) []byte {
	if len(b) < 4 {
		return nil
	}
	var out []byte
	walk := func(b []byte, typ uint16, fn func([]byte)) {
		ad, err := netlink.NewAttributeDecoder(b)
		if err != nil {
			return
		}
		for ad.Next() {
			if ad.Type() == typ {
				fn(ad.Bytes())
			}
		}
	}
	walk(b[4:], unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(b []byte) {
		walk(b, unix.NFTA_LIST_ELEM, func(b []byte) {
			walk(b, unix.NFTA_SET_ELEM_DATA, func(b []byte) {
				walk(b, unix.NFTA_DATA_VALUE, func(b []byte) {
					if out == nil {
						out = b
					}
				})
			})
		})
	})
	return out
}

// backendsMatch reports whether the kernel holds exactly svc's endpoints, by
// address in slots 0 to n-1, on TargetPort, and nothing in slot n.
func (k *kernel) backendsMatch(svc ServiceSpec) (bool, error) {
	want := svc.SortedEndpoints()
	for slot, a := range want {
		got, err := k.backend(svc.VIP, ServicePort, uint32(slot))
		if errors.Is(err, errNoElement) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if got != netip.AddrPortFrom(a, TargetPort) {
			return false, nil
		}
	}
	_, err := k.backend(svc.VIP, ServicePort, uint32(len(want)))
	if errors.Is(err, errNoElement) {
		return true, nil
	}
	return false, err
}

// countElements dumps every set of table inet podnet in ns and returns its
// element count by set name. It is slow with many services (a full dump): the
// benchmark calls it once per run, outside any timed part.
func countElements(ns *sandbox.NetNS) (map[string]int, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		return nil, err
	}
	table := &nftables.Table{Name: nft.TableName, Family: nftables.TableFamilyINet}
	sets, err := conn.GetSets(table)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	out := map[string]int{}
	for _, s := range sets {
		elems, err := conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", s.Name, err)
		}
		out[s.Name] = len(elems)
	}
	return out, nil
}
