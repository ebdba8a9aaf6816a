package ipam

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// Largest prefix lengths accepted: smaller ranges leave no address to hand
// out once the network, gateway and (IPv4) broadcast are reserved.
const (
	maxBits4 = 30
	maxBits6 = 126
)

// Gateway returns the gateway address of a pod range: the first address
// after the network address (10.244.1.0/24 -> 10.244.1.1). It returns the
// zero Addr if r is not valid. Host bits of r are ignored.
func Gateway(r netip.Prefix) netip.Addr {
	if !r.IsValid() {
		return netip.Addr{}
	}
	return r.Masked().Addr().Next()
}

// validateRanges checks that every range is canonical, leaves at least one
// usable address, and overlaps no other range.
func validateRanges(ranges []netip.Prefix) error {
	for i, r := range ranges {
		if err := validateRange(r); err != nil {
			return err
		}
		for _, prev := range ranges[:i] {
			if prev.Overlaps(r) {
				return fmt.Errorf("%w: %s overlaps %s", ErrInvalidRange, r, prev)
			}
		}
	}
	return nil
}

func validateRange(r netip.Prefix) error {
	switch {
	case !r.IsValid():
		return fmt.Errorf("%w: %q is not a valid prefix", ErrInvalidRange, r)
	case r.Addr().Zone() != "" || r.Addr().Is4In6():
		return fmt.Errorf("%w: %s: zoned and IPv4-mapped addresses are not allowed", ErrInvalidRange, r)
	case r != r.Masked():
		return fmt.Errorf("%w: %s has host bits set, want %s", ErrInvalidRange, r, r.Masked())
	case r.Addr().Is4() && r.Bits() > maxBits4:
		return fmt.Errorf("%w: %s: IPv4 prefix length must be at most /%d", ErrInvalidRange, r, maxBits4)
	case r.Addr().Is6() && r.Bits() > maxBits6:
		return fmt.Errorf("%w: %s: IPv6 prefix length must be at most /%d", ErrInvalidRange, r, maxBits6)
	}
	return nil
}

// lastAddr returns the highest address of r (the IPv4 broadcast address).
func lastAddr(r netip.Prefix) netip.Addr {
	a := r.Addr().As16()
	bits := r.Bits()
	if r.Addr().Is4() {
		bits += 96
	}
	for i := range a {
		switch lo := 8 * i; {
		case bits <= lo:
			a[i] = 0xff
		case bits < lo+8:
			a[i] |= 0xff >> (bits - lo)
		}
	}
	last := netip.AddrFrom16(a)
	if r.Addr().Is4() {
		return last.Unmap()
	}
	return last
}

// usable reports whether a may be handed out from r: inside r, and neither
// the network address, the gateway, nor the IPv4 broadcast address.
func usable(r netip.Prefix, a netip.Addr) bool {
	if !r.Contains(a) || a == r.Addr() || a == Gateway(r) {
		return false
	}
	return !a.Is4() || a != lastAddr(r)
}

// firstUsable returns the lowest address r hands out.
func firstUsable(r netip.Prefix) netip.Addr {
	return Gateway(r).Next()
}

// nextInRange returns the usable address after a in r, wrapping around to
// the first usable address past the end of r.
func nextInRange(r netip.Prefix, a netip.Addr) netip.Addr {
	if n := a.Next(); n.IsValid() && usable(r, n) {
		return n
	}
	return firstUsable(r)
}

// rangeSize returns how many addresses r hands out, capped at MaxUint64.
func rangeSize(r netip.Prefix) uint64 {
	reserved := uint64(2) // network, gateway
	if r.Addr().Is4() {
		reserved = 3 // and broadcast
	}
	switch host := r.Addr().BitLen() - r.Bits(); {
	case host > 64:
		return math.MaxUint64
	case host == 64:
		return math.MaxUint64 - (reserved - 1) // 2^64 - reserved
	default:
		return 1<<host - reserved
	}
}

// families returns the IP families present in ranges, IPv4 first.
func families(ranges []netip.Prefix) []bool {
	var has4, has6 bool
	for _, r := range ranges {
		has4 = has4 || r.Addr().Is4()
		has6 = has6 || r.Addr().Is6()
	}
	var out []bool
	if has4 {
		out = append(out, true)
	}
	if has6 {
		out = append(out, false)
	}
	return out
}

// joinRanges formats ranges as "a, b" for error messages.
func joinRanges(ranges []netip.Prefix) string {
	s := make([]string, len(ranges))
	for i, r := range ranges {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}
