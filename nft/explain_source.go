package nft

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// elementSource answers the lookups of the rules for explain.
type elementSource interface {
	// get returns the element of set that a packet with key matches: the
	// element with that key, or in an interval set the interval holding
	// key; ok is false if there is none. expires is the time a timed-out
	// element has left, 0 for others.
	get(set string, key []byte) (e element, expires time.Duration, ok bool, err error)
	// local reports whether a is a local address of the node, as `fib daddr
	// type local` and `fib saddr type local` decide.
	local(a netip.Addr) (bool, error)
}

// setFields returns the field kinds of the keys and values of the set named
// name, from the type nft lists for it; ok is false for an unknown set.
func setFields(name string) (key, val fieldKinds, ok bool) {
	i, ok := setIndex[name]
	if !ok {
		return key, val, false
	}
	spec := setSpecs[i]
	typ := spec.typeText
	if typ == "" {
		typ = spec.keyType.Name
	}
	k, v, _ := strings.Cut(typ, " : ")
	key = parseFieldKinds(k)
	if spec.interval {
		// The last field of an interval set's key is a range: a prefix.
		for j := len(key) - 1; j >= 0; j-- {
			if key[j] == fieldAddr {
				key[j] = fieldPrefix
				break
			}
		}
	}
	if v != "" && v != "verdict" {
		val = parseFieldKinds(v)
	}
	return key, val, true
}

func parseFieldKinds(typ string) fieldKinds {
	var out fieldKinds
	for i, t := range strings.Split(typ, " . ") {
		out[i] = map[string]fieldKind{
			"ipv4_addr": fieldAddr, "ipv6_addr": fieldAddr, "inet_proto": fieldProto,
			"inet_service": fieldPort, "mark": fieldSlot,
		}[t]
	}
	return out
}

// memSource answers from the elements of a State: what Sync would write.
type memSource struct {
	exact    map[string]map[string]element // by set, then key
	ranges   map[string][]element          // interval sets: inclusive key … keyEnd
	localIPs []netip.Addr
}

func newMemSource(s State) *memSource {
	d, _ := normalize(s)
	m := &memSource{exact: map[string]map[string]element{}, ranges: map[string][]element{}, localIPs: s.LocalIPs}
	for _, spec := range setSpecs {
		var es []element
		switch {
		case spec.dynamic:
		case spec.svc:
			es = d.svc.elems[spec.name]
		case spec.hostPort:
			es = d.hostPorts[spec.name]
		case spec.interval:
			for _, p := range d.prefixes[spec.name] {
				es = append(es, rangeElem(newKey(), p))
			}
		default:
			for _, a := range d.addrs[spec.name] {
				es = append(es, setElem(newKey().addr(a)))
			}
		}
		if spec.interval {
			m.ranges[spec.name] = es
			continue
		}
		byKey := make(map[string]element, len(es))
		for _, e := range es {
			byKey[string(e.key())] = e
		}
		m.exact[spec.name] = byKey
	}
	return m
}

func (m *memSource) get(set string, key []byte) (element, time.Duration, bool, error) {
	if _, _, ok := setFields(set); !ok {
		return element{}, 0, false, fmt.Errorf("nft: no set %s", set)
	}
	if rs, ok := m.ranges[set]; ok {
		// Every field but the last is a single value, so key lies between
		// start and end bytewise exactly when it matches the element.
		for _, e := range rs {
			if bytes.Compare(e.key(), key) <= 0 && bytes.Compare(key, e.keyEnd()) <= 0 {
				return e, 0, true, nil
			}
		}
		return element{}, 0, false, nil
	}
	e, ok := m.exact[set][string(key)]
	return e, 0, ok, nil
}

func (m *memSource) local(a netip.Addr) (bool, error) {
	return a.IsLoopback() || slices.Contains(m.localIPs, a), nil
}

// kernelSource answers from the kernel's table and routes.
type kernelSource struct {
	netnsFd int
	nft     *nftConn
	rt      *rtnetlink.Conn         // dialled on first use
	dumps   map[string][]kernelElem // by set: see intervalEnd
}

func newKernelSource(netnsFd int) (*kernelSource, error) {
	c, err := dialNft(netnsFd)
	if err != nil {
		return nil, err
	}
	return &kernelSource{netnsFd: netnsFd, nft: c}, nil
}

func (k *kernelSource) Close() error {
	err := k.nft.Close()
	if k.rt != nil {
		err = errors.Join(err, k.rt.Close())
	}
	return err
}

func (k *kernelSource) get(set string, key []byte) (element, time.Duration, bool, error) {
	kf, vf, ok := setFields(set)
	if !ok {
		return element{}, 0, false, fmt.Errorf("nft: no set %s", set)
	}
	ke, ok, err := k.nft.getElement(set, key, 0)
	if err != nil || !ok {
		return element{}, 0, false, err
	}
	keyEnd := ke.keyEnd
	if kf[0] == fieldPrefix && keyEnd == nil {
		if keyEnd, err = k.intervalEnd(set, ke.key); err != nil {
			return element{}, 0, false, err
		}
	}
	e := newElement(ke.key, keyEnd, ke.data)
	e.keyFields, e.valFields = kf, vf
	if ke.verdict != nil {
		e.verdict = internVerdict(*ke.verdict)
	}
	return e, ke.expires, true, nil
}

// intervalEnd returns the last address of the interval of the plain interval
// set (rbtree) that starts at start. The kernel's GET gives only the start
// element of the interval holding a key; the end element, the first address
// after the interval, is the set's next interval end after start, read from
// a dump of the set (one per set and Explain: such sets hold a prefix per
// node). The GET with NFT_SET_ELEM_INTERVAL_END that `nft get element` sends
// would give it directly, but on Linux 6.18, for a key in an interval open to
// the top of the address space (no end element), the kernel sends no answer
// at all.
func (k *kernelSource) intervalEnd(set string, start []byte) ([]byte, error) {
	if k.dumps == nil {
		k.dumps = map[string][]kernelElem{}
	}
	es, ok := k.dumps[set]
	if !ok {
		var err error
		if es, err = k.nft.dumpElements(set); err != nil {
			return nil, err
		}
		k.dumps[set] = es
	}
	var end []byte // the least end element after start
	for _, e := range es {
		if e.flags&unix.NFT_SET_ELEM_INTERVAL_END != 0 && bytes.Compare(e.key, start) > 0 &&
			(end == nil || bytes.Compare(e.key, end) < 0) {
			end = e.key
		}
	}
	last := lastAddr(netip.PrefixFrom(addrFrom(start), 0)) // open to the top
	if end != nil {
		last = addrFrom(end).Prev()
	}
	return last.AsSlice(), nil
}

func addrFrom(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

// local asks the namespace's routing for the route to a: what `fib daddr type
// local` reads is the type of that route.
func (k *kernelSource) local(a netip.Addr) (bool, error) {
	if k.rt == nil {
		c, err := rtnetlink.Dial(&netlink.Config{NetNS: k.netnsFd})
		if err != nil {
			return false, fmt.Errorf("nft: open rtnetlink: %w", err)
		}
		k.rt = c
	}
	family, bits := uint8(unix.AF_INET), uint8(32)
	if !a.Is4() {
		family, bits = unix.AF_INET6, 128
	}
	routes, err := k.rt.Route.Get(&rtnetlink.RouteMessage{
		Family: family, DstLength: bits,
		Attributes: rtnetlink.RouteAttributes{Dst: net.IP(a.AsSlice())},
	})
	switch {
	case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EHOSTUNREACH):
		return false, nil // no route: not local either
	case err != nil:
		return false, fmt.Errorf("nft: route to %s: %w", a, err)
	}
	return len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL, nil
}
