package nft

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// elements returns the kernel elements of the set spec for d.
func (spec setSpec) elements(d desired) []nftables.SetElement {
	if spec.dynamic {
		return nil
	}
	if spec.typed() {
		es := d.svc.elems[spec.name]
		if spec.hostPort {
			es = d.hostPorts[spec.name]
		}
		elems := make([]nftables.SetElement, len(es))
		for i, e := range es {
			elems[i] = e.setElement()
		}
		return elems
	}
	if spec.interval {
		return intervalElements(d.prefixes[spec.name])
	}
	as := d.addrs[spec.name]
	elems := make([]nftables.SetElement, 0, len(as))
	for _, a := range as {
		elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
	}
	return elems
}

// matches reports whether the kernel set s has the definition of spec.
func (spec setSpec) matches(s *nftables.Set) bool {
	want := spec.newSet(nil)
	if s.IsMap != want.IsMap || s.Interval != want.Interval || s.Concatenation != want.Concatenation ||
		s.Anonymous || s.Constant || s.HasTimeout != want.HasTimeout || s.Dynamic != want.Dynamic {
		return false
	}
	if want.IsMap && want.DataType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic() {
		// google/nftables v0.3.0 decodes a verdict map's key type as "verdict"
		// and drops it, so only the flags above can be compared.
		return true
	}
	if want.IsMap && s.DataType.GetNFTMagic() != want.DataType.GetNFTMagic() {
		return false
	}
	return s.KeyType.GetNFTMagic() == spec.keyType.GetNFTMagic()
}

// intervalElements encodes prefixes for an interval set. The kernel stores an
// interval as two elements: its first address, and the first address after it
// flagged as interval end. A prefix reaching the top of the address space has no
// end element: the interval is open to the end. google/nftables does not add the
// end elements itself.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	elems := make([]nftables.SetElement, 0, 2*len(ps))
	for _, p := range ps {
		elems = append(elems, nftables.SetElement{Key: p.Addr().AsSlice()})
		if end := lastAddr(p).Next(); end.IsValid() {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return elems
}

// lastAddr returns the last address of the masked prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// setChange is what Sync changes in one set.
type setChange struct {
	spec     setSpec
	flush    bool                  // delete every element first
	add, del []nftables.SetElement // then delete del and add add
}

// elementChanges returns the changes that turn the sets' elements have (by set
// name) into d, for the sets that differ. An address set gets the elements to add
// and delete. An interval set whose content differs is flushed and gets all its
// elements again, rather than pairing up interval starts and ends in a diff; the
// batch keeps the replacement atomic.
func elementChanges(have map[string][]nftables.SetElement, d desired) []setChange {
	var changes []setChange
	for _, spec := range setSpecs {
		if spec.dynamic {
			continue
		}
		cur, want := have[spec.name], spec.elements(d)
		switch {
		case spec.interval && !sameElements(cur, want):
			changes = append(changes, setChange{spec: spec, flush: true, add: want})
		case spec.svc || !spec.interval:
			if add, del := diffElements(cur, want); len(add)+len(del) > 0 {
				changes = append(changes, setChange{spec: spec, add: add, del: del})
			}
		}
	}
	return changes
}

// elementKey identifies an element of a set without data: its key and whether it
// ends an interval.
func elementKey(e nftables.SetElement) string {
	id := elementID(e.Key, e.KeyEnd, e.Val, e.VerdictData)
	if e.IntervalEnd {
		return id + "/end"
	}
	return id
}

// sameElements reports whether two element lists hold the same elements, in any
// order.
func sameElements(a, b []nftables.SetElement) bool {
	if len(a) != len(b) {
		return false
	}
	ka, kb := keys(a), keys(b)
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

func keys(elems []nftables.SetElement) []string {
	ks := make([]string, len(elems))
	for i, e := range elems {
		ks[i] = elementKey(e)
	}
	return ks
}

// diffElements returns the elements of want missing from have (to add) and those
// of have missing from want (to delete).
func diffElements(have, want []nftables.SetElement) (add, del []nftables.SetElement) {
	inHave := make(map[string]bool, len(have))
	for _, e := range have {
		inHave[elementKey(e)] = true
	}
	inWant := make(map[string]bool, len(want))
	for _, e := range want {
		inWant[elementKey(e)] = true
		if !inHave[elementKey(e)] {
			add = append(add, e)
		}
	}
	for _, e := range have {
		if !inWant[elementKey(e)] {
			del = append(del, nftables.SetElement{Key: e.Key, KeyEnd: e.KeyEnd})
		}
	}
	return add, del
}
