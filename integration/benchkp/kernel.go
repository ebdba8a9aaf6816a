package benchkp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// table names an nftables table by family and name.
type table struct {
	family byte // NFPROTO_*
	name   string
}

func (t table) String() string {
	fam := map[byte]string{unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6", unix.NFPROTO_INET: "inet"}[t.family]
	return fam + " " + t.name
}

// kernel reads nftables objects of one network namespace through
// nfnetlink, one question at a time: a single element by key (what `nft get
// element` sends), the rules of one chain, the elements of one (small) set.
// None of these walks the whole table, so polling every millisecond costs
// the same with 30k services as with 1, and never waits for the `nft` tool.
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

// errNotFound is returned when the table, chain, set or element does not
// exist (yet).
var errNotFound = errors.New("not found")

// request sends one nftables request and returns the replies' payloads
// after the nfgenmsg header. ENOENT becomes errNotFound.
func (k *kernel) request(msgType uint16, t table, flags netlink.HeaderFlags, attrs func(*netlink.AttributeEncoder)) ([][]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msg := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType), Flags: netlink.Request | flags},
		// nfgenmsg: family, version, resource id.
		Data: append([]byte{t.family, unix.NFNETLINK_V0, 0, 0}, b...),
	}
	replies, err := k.conn.Execute(msg)
	if errors.Is(err, unix.ENOENT) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(replies))
	for _, r := range replies {
		if len(r.Data) >= 4 {
			out = append(out, r.Data[4:])
		}
	}
	return out, nil
}

// element is one set or map element: its key and, for a map, its data
// (nil for a verdict).
type element struct {
	Key, Data []byte
}

// getElement reads the element of set with key, with a non-dump
// NFT_MSG_GETSETELEM; errNotFound when it is not there.
func (k *kernel) getElement(t table, set string, key []byte) (element, error) {
	replies, err := k.request(unix.NFT_MSG_GETSETELEM, t, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, t.name)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
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
	})
	if err != nil {
		if !errors.Is(err, errNotFound) {
			err = fmt.Errorf("get element of %s %s: %w", t, set, err)
		}
		return element{}, err
	}
	for _, r := range replies {
		if es := decodeElements(r); len(es) > 0 {
			return es[0], nil
		}
	}
	return element{}, errNotFound
}

// elements dumps every element of set. It is for small sets (an anonymous
// map of a rule) and for the one count after a cold start.
func (k *kernel) elements(t table, set string) ([]element, error) {
	replies, err := k.request(unix.NFT_MSG_GETSETELEM, t, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, t.name)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	})
	if err != nil {
		if !errors.Is(err, errNotFound) {
			err = fmt.Errorf("list elements of %s %s: %w", t, set, err)
		}
		return nil, err
	}
	var out []element
	for _, r := range replies {
		out = append(out, decodeElements(r)...)
	}
	return out, nil
}

// chainLookups returns, for each rule of chain in order, the sets its
// lookup expressions name (an anonymous map such as "__map12" for a rule
// written with an inline `map { … }`). The kernel filters the rule dump by
// table and chain, so this reads one chain, not the table.
func (k *kernel) chainLookups(t table, chain string) ([][]string, error) {
	replies, err := k.request(unix.NFT_MSG_GETRULE, t, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, t.name)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
	})
	if err != nil {
		if !errors.Is(err, errNotFound) {
			err = fmt.Errorf("list rules of %s %s: %w", t, chain, err)
		}
		return nil, err
	}
	var out [][]string
	for _, r := range replies {
		var sets []string
		walk(r, unix.NFTA_RULE_EXPRESSIONS, func(b []byte) {
			walk(b, unix.NFTA_LIST_ELEM, func(b []byte) {
				if attrString(b, unix.NFTA_EXPR_NAME) != "lookup" {
					return
				}
				walk(b, unix.NFTA_EXPR_DATA, func(b []byte) {
					if s := attrString(b, unix.NFTA_LOOKUP_SET); s != "" {
						sets = append(sets, s)
					}
				})
			})
		})
		out = append(out, sets)
	}
	return out, nil
}

// decodeElements reads the elements of a NFT_MSG_NEWSETELEM payload (after
// nfgenmsg).
func decodeElements(b []byte) []element {
	var out []element
	walk(b, unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(b []byte) {
		walk(b, unix.NFTA_LIST_ELEM, func(b []byte) {
			var e element
			walk(b, unix.NFTA_SET_ELEM_KEY, func(b []byte) {
				walk(b, unix.NFTA_DATA_VALUE, func(b []byte) { e.Key = b })
			})
			walk(b, unix.NFTA_SET_ELEM_DATA, func(b []byte) {
				walk(b, unix.NFTA_DATA_VALUE, func(b []byte) { e.Data = b })
			})
			out = append(out, e)
		})
	})
	return out
}

// walk calls fn with the payload of each attribute of type typ in b (the
// nested flag ignored).
func walk(b []byte, typ uint16, fn func([]byte)) {
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

// attrString returns the string attribute typ of b, "" if absent.
func attrString(b []byte, typ uint16) string {
	var s string
	walk(b, typ, func(v []byte) {
		for len(v) > 0 && v[len(v)-1] == 0 {
			v = v[:len(v)-1]
		}
		s = string(v)
	})
	return s
}

// concatKey lays out the fields of an nftables concatenation as the kernel
// holds it: each field in its own 4-byte registers, padded with zeros.
func concatKey(fields ...[]byte) []byte {
	var out []byte
	for _, f := range fields {
		out = append(out, f...)
		if pad := len(f) % 4; pad != 0 {
			out = append(out, make([]byte, 4-pad)...)
		}
	}
	return out
}

// serviceKey is the key `ipv4_addr . inet_proto . inet_service` of a TCP
// service port.
func serviceKey(vip netip.Addr, port uint16) []byte {
	return concatKey(vip.AsSlice(), []byte{unix.IPPROTO_TCP}, binary.BigEndian.AppendUint16(nil, port))
}

// addrPort decodes map data `ipv4_addr . inet_service`; ok is false for
// other shapes.
func addrPort(data []byte) (netip.AddrPort, bool) {
	if len(data) != 8 {
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(data[:4])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(data[4:6])), true
}
