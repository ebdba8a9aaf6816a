package conntrack

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Filter selects conntrack entries of one protocol. Each other field left at its
// zero value matches anything; an entry matches when every set field matches.
// The caller's three cases read:
//
//	// endpoint E of VIP:port removed or no longer serving
//	Filter{Proto: unix.IPPROTO_UDP, OrigDst: vip, OrigPort: port, ReplySrc: e}
//	// service VIP:port went from no endpoints to some
//	Filter{Proto: unix.IPPROTO_UDP, OrigDst: vip, OrigPort: port}
//	// the same for a NodePort, on every local address
//	Filter{Proto: unix.IPPROTO_UDP, OrigPort: nodePort}
//
// A Filter with neither OrigDst nor ReplySrc matches entries of both families.
type Filter struct {
	// Proto is the transport protocol number, e.g. unix.IPPROTO_UDP. Required.
	Proto uint8
	// OrigDst is the destination the client sent to (a service VIP), before
	// DNAT; the invalid zero Addr matches any.
	OrigDst netip.Addr
	// OrigPort is the destination port the client sent to (service port or
	// NodePort), before DNAT; 0 matches any.
	OrigPort uint16
	// ReplySrc is the source of the replies, that is the endpoint the entry
	// was DNATed to (without DNAT it equals OrigDst); the invalid zero Addr
	// matches any. Only the address is compared, not the port.
	ReplySrc netip.Addr
}

// Entry is the part of a conntrack entry that filters look at.
type Entry struct {
	Proto    uint8
	OrigSrc  netip.AddrPort // the client
	OrigDst  netip.AddrPort // where the client sent to, before DNAT
	ReplySrc netip.AddrPort // where replies come from: the endpoint after DNAT
}

// ErrInvalidFilter is matched by errors.Is for every error that reports an
// invalid Filter.
var ErrInvalidFilter = errors.New("invalid conntrack filter")

// Validate reports, wrapping ErrInvalidFilter, why f cannot be used: no
// protocol; nothing but a protocol (that would delete every entry of it);
// an address with a zone, or an IPv4-mapped IPv6 address (conntrack never
// holds one, so it is a family mix-up); or OrigDst and ReplySrc of different
// families (no entry could match).
func (f Filter) Validate() error {
	bad := func(reason string) error { return fmt.Errorf("%w %q: %s", ErrInvalidFilter, f, reason) }
	switch {
	case f.Proto == 0:
		return bad("no protocol")
	case !f.OrigDst.IsValid() && f.OrigPort == 0 && !f.ReplySrc.IsValid():
		return bad("matches every entry of the protocol")
	}
	for _, a := range []netip.Addr{f.OrigDst, f.ReplySrc} {
		switch {
		case a.Zone() != "":
			return bad(a.String() + " has a zone")
		case a.Is4In6():
			return bad(a.String() + " is IPv4-mapped IPv6: use " + a.Unmap().String())
		}
	}
	if f.OrigDst.IsValid() && f.ReplySrc.IsValid() && f.OrigDst.Is4() != f.ReplySrc.Is4() {
		return bad("OrigDst and ReplySrc are of different families")
	}
	return nil
}

// Matches reports whether e is selected by f. It does not validate f.
func (f Filter) Matches(e Entry) bool {
	return e.Proto == f.Proto &&
		(!f.OrigDst.IsValid() || e.OrigDst.Addr() == f.OrigDst) &&
		(f.OrigPort == 0 || e.OrigDst.Port() == f.OrigPort) &&
		(!f.ReplySrc.IsValid() || e.ReplySrc.Addr() == f.ReplySrc)
}

// String writes f as the arguments of the conntrack(8) command that deletes
// the same entries, e.g. "-p udp --orig-dst 10.96.0.10 --orig-port-dst 53
// --reply-src 10.244.1.5".
func (f Filter) String() string {
	parts := []string{"-p", protoName(f.Proto)}
	if f.OrigDst.IsValid() {
		parts = append(parts, "--orig-dst", f.OrigDst.String())
	}
	if f.OrigPort != 0 {
		parts = append(parts, "--orig-port-dst", strconv.Itoa(int(f.OrigPort)))
	}
	if f.ReplySrc.IsValid() {
		parts = append(parts, "--reply-src", f.ReplySrc.String())
	}
	return strings.Join(parts, " ")
}

// String writes e as "udp 10.244.1.7:40001 -> 10.96.0.10:53 reply-src
// 10.244.2.5:5353".
func (e Entry) String() string {
	return fmt.Sprintf("%s %s -> %s reply-src %s", protoName(e.Proto), e.OrigSrc, e.OrigDst, e.ReplySrc)
}

// matchAny reports whether any of filters matches e.
func matchAny(filters []Filter, e Entry) bool {
	for _, f := range filters {
		if f.Matches(e) {
			return true
		}
	}
	return false
}

// portIndex is filters grouped by OrigPort (0: any port), so that matching a
// large table against many filters compares each entry only with the filters
// for its port.
type portIndex map[uint16][]Filter

func indexByPort(filters []Filter) portIndex {
	idx := portIndex{}
	for _, f := range filters {
		idx[f.OrigPort] = append(idx[f.OrigPort], f)
	}
	return idx
}

// matches reports whether any of the indexed filters matches e.
func (idx portIndex) matches(e Entry) bool {
	if port := e.OrigDst.Port(); port != 0 && matchAny(idx[port], e) {
		return true
	}
	return matchAny(idx[0], e)
}

// validate checks every filter and joins the errors of the invalid ones.
func validate(filters []Filter) error {
	var errs []error
	for i, f := range filters {
		if err := f.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("filters[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	default:
		return strconv.Itoa(int(p))
	}
}
