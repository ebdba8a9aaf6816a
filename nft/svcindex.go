package nft

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// svcIndex computes the service part of the table incrementally. It remembers,
// for each service, the value it was computed from with the elements and
// endpoint-count chains that value contributes, and counts how many applied
// services contribute each element and chain (two services share a hairpin
// element when they share an endpoint). An update recomputes only the services
// whose value changed, so that with 50k services a change of one endpoint costs
// one service's work plus a pass that compares each service with its last value.
type svcIndex struct {
	node     string
	localIPs []netip.Addr
	entries  map[string]*svcEntry // every service of the last update, by namespace/name
	applied  map[string]*svcEntry // those that were valid and claimed nothing taken
	elems    map[string]map[string]*counted
	chains   map[string]*countedChain
}

// svcEntry is one service and what it contributes to the table.
type svcEntry struct {
	svc    Service
	keys   []svcKey // the VIP ports and NodePorts it claims
	err    error    // why the service cannot be programmed
	elems  []setElement
	chains []countChain
}

// setElement is an element with the set it belongs to and its identity.
type setElement struct {
	set string
	id  string
	e   element
}

type counted struct {
	e  element
	id string
	n  int
}

type countedChain struct {
	c countChain
	n int
}

// svcDelta is what an update changed in the union of the applied services:
// elements and chains that appeared or disappeared, by set name.
type svcDelta struct {
	add, del             map[string][]element
	addChains, delChains []countChain
}

func (d svcDelta) empty() bool {
	return len(d.add) == 0 && len(d.del) == 0 && len(d.addChains) == 0 && len(d.delChains) == 0
}

func newSvcIndex() *svcIndex {
	return &svcIndex{entries: map[string]*svcEntry{}, applied: map[string]*svcEntry{},
		elems: map[string]map[string]*counted{}, chains: map[string]*countedChain{}}
}

// update makes the index hold the services of s and returns what changed in
// the union, and a problem line for each service left out. A service with an
// invalid field, or claiming a VIP port or NodePort that a service before it in
// s claimed, is left out whole, as is a second service with the same
// namespace/name.
func (x *svcIndex) update(s State) (svcDelta, []string) {
	reuse := s.NodeName == x.node && slices.Equal(s.LocalIPs, x.localIPs)
	x.node, x.localIPs = s.NodeName, slices.Clone(s.LocalIPs)
	entries := make(map[string]*svcEntry, len(s.Services))
	applied := make(map[string]*svcEntry, len(s.Services))
	claimed := make(map[svcKey]string, len(s.Services))
	var problems []string
	for i, svc := range s.Services {
		id := svc.Namespace + "/" + svc.Name
		if _, dup := entries[id]; dup {
			problems = append(problems, fmt.Sprintf("Services[%d] %s: listed twice", i, id))
			continue
		}
		e := x.entries[id]
		if !reuse || e == nil || !e.svc.equal(svc) {
			e = newSvcEntry(svc, s.NodeName, s.LocalIPs)
		}
		entries[id] = e
		err := e.err
		if err == nil {
			for _, k := range e.keys {
				if other, ok := claimed[k]; ok {
					err = fmt.Errorf("%s %d/%s already used by service %s", vipOrNodePort(k), k.port, protoName(k.proto), other)
					break
				}
			}
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("Services[%d] %s: %v", i, id, err))
			continue
		}
		for _, k := range e.keys {
			claimed[k] = id
		}
		applied[id] = e
	}
	t := x.newTally()
	for id, old := range x.applied {
		if applied[id] != old {
			t.count(old, -1)
		}
	}
	for id, e := range applied {
		if x.applied[id] != e {
			t.count(e, +1)
		}
	}
	x.entries, x.applied = entries, applied
	return t.delta(), problems
}

func newSvcEntry(svc Service, node string, localIPs []netip.Addr) *svcEntry {
	e := &svcEntry{svc: svc.Clone()}
	e.keys, e.err = checkService(svc)
	if e.err != nil {
		return e
	}
	frag := svcDesired{elems: map[string][]element{}, chains: map[string]countChain{}}
	frag.add(svc, node, localIPs)
	for _, set := range slices.Sorted(maps.Keys(frag.elems)) {
		for _, el := range frag.elems[set] {
			e.elems = append(e.elems, setElement{set: set, id: el.id(), e: el})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(frag.chains)) {
		e.chains = append(e.chains, frag.chains[name])
	}
	return e
}

// tally counts contributions in and out of the index and remembers, for each
// element and chain it touched, whether it was in the union before.
type tally struct {
	x           *svcIndex
	elemBefore  map[*counted]bool
	elemSet     map[*counted]string
	elemOrder   []*counted
	chainBefore map[*countedChain]bool
	chainOrder  []*countedChain
}

func (x *svcIndex) newTally() *tally {
	return &tally{x: x, elemBefore: map[*counted]bool{}, elemSet: map[*counted]string{}, chainBefore: map[*countedChain]bool{}}
}

func (t *tally) count(e *svcEntry, n int) {
	for _, se := range e.elems {
		m := t.x.elems[se.set]
		if m == nil {
			m = map[string]*counted{}
			t.x.elems[se.set] = m
		}
		c := m[se.id]
		if c == nil {
			c = &counted{e: se.e, id: se.id}
			m[se.id] = c
		}
		if _, ok := t.elemBefore[c]; !ok {
			t.elemBefore[c] = c.n > 0
			t.elemSet[c] = se.set
			t.elemOrder = append(t.elemOrder, c)
		}
		c.n += n
	}
	for _, ch := range e.chains {
		c := t.x.chains[ch.name()]
		if c == nil {
			c = &countedChain{c: ch}
			t.x.chains[ch.name()] = c
		}
		if _, ok := t.chainBefore[c]; !ok {
			t.chainBefore[c] = c.n > 0
			t.chainOrder = append(t.chainOrder, c)
		}
		c.n += n
	}
}

// delta returns the elements and chains whose presence in the union changed,
// and drops those no service contributes any more.
func (t *tally) delta() svcDelta {
	d := svcDelta{add: map[string][]element{}, del: map[string][]element{}}
	for _, c := range t.elemOrder {
		set, before, after := t.elemSet[c], t.elemBefore[c], c.n > 0
		switch {
		case before && !after:
			d.del[set] = append(d.del[set], c.e)
		case !before && after:
			d.add[set] = append(d.add[set], c.e)
		}
		if !after {
			delete(t.x.elems[set], c.id)
		}
	}
	for _, c := range t.chainOrder {
		before, after := t.chainBefore[c], c.n > 0
		switch {
		case before && !after:
			d.delChains = append(d.delChains, c.c)
		case !before && after:
			d.addChains = append(d.addChains, c.c)
		}
		if !after {
			delete(t.x.chains, c.c.name())
		}
	}
	for _, m := range []map[string][]element{d.add, d.del} {
		for set := range m {
			if len(m[set]) == 0 {
				delete(m, set)
			}
		}
	}
	return d
}

// union returns every element and chain of the applied services, elements
// sorted as nft lists them.
func (x *svcIndex) union() svcDesired {
	d := svcDesired{elems: make(map[string][]element, len(x.elems)), chains: make(map[string]countChain, len(x.chains))}
	for set, m := range x.elems {
		es := make([]element, 0, len(m))
		for _, c := range m {
			es = append(es, c.e)
		}
		sortElements(es)
		d.elems[set] = es
	}
	for name, c := range x.chains {
		d.chains[name] = c.c
	}
	return d
}
