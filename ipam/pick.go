package ipam

import (
	"fmt"
	"net/netip"
)

// pick finds a free address of one family in the first configured range of
// that family that has room. It fails with ErrExhausted naming the ranges of
// the family when all are full.
func (a *Allocator) pick(is4 bool) (netip.Prefix, netip.Addr, error) {
	var tried []netip.Prefix
	for _, r := range a.ranges {
		if r.Addr().Is4() != is4 {
			continue
		}
		tried = append(tried, r)
		if addr, ok := a.search(r); ok {
			return r, addr, nil
		}
	}
	return netip.Prefix{}, netip.Addr{}, fmt.Errorf("%w: %s", ErrExhausted, joinRanges(tried))
}

// search walks r round-robin from the address after its cursor and returns
// the first free address. The cursor is only a hint: one that is missing or
// not usable in r restarts the walk at the first usable address.
//
// The walk visits distinct usable addresses, of which only a.used[r] are
// taken, so it finds a free one within used+1 steps whenever used < size:
// the cost is O(used+1), independent of the size of r.
func (a *Allocator) search(r netip.Prefix) (netip.Addr, bool) {
	used := a.used[r]
	if uint64(used) >= rangeSize(r) {
		return netip.Addr{}, false
	}
	cur, ok := a.cursors[r]
	if !ok || !usable(r, cur) {
		cur = Gateway(r) // the walk starts after it, at the first usable address
	}
	for range used + 1 {
		cur = nextInRange(r, cur)
		if _, taken := a.byAddr[cur]; !taken {
			return cur, true
		}
	}
	return netip.Addr{}, false // unreachable while a.used is accurate
}
