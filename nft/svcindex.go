package nft

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
)

// svcIndex computes the service part of the table incrementally. It remembers,
// for each service, a fingerprint of the value it was computed from and the
// elements and endpoint-count chains that value contributes. An update
// recomputes only the services whose fingerprint changed, so that with 50k
// services a change of one endpoint costs one service's work plus a pass that
// hashes each service and checks its claims.
//
// Most elements belong to exactly one service: their keys start with a VIP
// port or NodePort, which one service claims. Only cluster-ips elements (two
// services may share a ClusterIP on different ports) and hairpin elements (two
// services may share an endpoint), and the chains, are counted.
type svcIndex struct {
	seed     maphash.Seed
	node     string
	localIPs []netip.Addr
	epoch    uint64
	entries  map[svcID]*svcEntry
	order    []*svcEntry // the entries by their place in the last State (nil: left out as listed twice)
	problems []string    // the problems of the last State
	buf      []byte      // fingerprint's scratch buffer
	claimed  map[svcKey]svcID
	shared   map[string]int // set index and key of a counted element → services using it
	chains   map[string]*countedChain
}

type svcID struct{ namespace, name string }

// svcEntry is one service and what it contributes to the table.
type svcEntry struct {
	id       svcID
	sum      uint64   // fingerprint of the Service
	revision string   // its Revision, if any
	keys     []svcKey // the VIP ports and NodePorts it claims
	err      error    // why the service cannot be programmed
	elems    []setElement
	chains   []countChain
	epoch    uint64 // the update that last saw the service
	applied  bool   // programmed by the last update that saw it
}

// setElement is an element with the index in setSpecs of its set.
type setElement struct {
	set int
	e   element
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
	return &svcIndex{seed: maphash.MakeSeed(), entries: map[svcID]*svcEntry{}, shared: map[string]int{}, chains: map[string]*countedChain{}}
}

// setIndex maps set names to their index in setSpecs.
var setIndex = func() map[string]int {
	m := map[string]int{}
	for i, spec := range setSpecs {
		m[spec.name] = i
	}
	return m
}()

// sharedSet reports whether elements of set i may come from several services.
func sharedSet(i int) bool {
	n := setSpecs[i].name
	return n == "cluster-ips-v4" || n == "cluster-ips-v6" || n == "hairpin-v4" || n == "hairpin-v6"
}

// update makes the index hold the services of s and returns what changed in
// the union, and a problem line for each service left out. A service with an
// invalid field, or claiming a VIP port or NodePort that a service before it in
// s claimed, is left out whole, as is a second service with the same
// namespace/name.
func (x *svcIndex) update(s State) (svcDelta, []string) {
	if d, ok := x.updateInPlace(s); ok {
		return d, x.problems
	}
	reuse := s.NodeName == x.node && slices.Equal(s.LocalIPs, x.localIPs)
	x.node, x.localIPs = s.NodeName, slices.Clone(s.LocalIPs)
	x.epoch++
	if x.claimed == nil {
		x.claimed = make(map[svcKey]svcID, len(s.Services))
	}
	claimed := x.claimed
	clear(claimed) // keeps its buckets: no 50k-entry map to allocate per update
	t := &tally{x: x, add: map[string][]element{}, del: map[string][]element{}, sharedBefore: map[string]bool{}, chainBefore: map[*countedChain]bool{}}
	var problems []string
	seen := 0 // services of s in entries
	order := make([]*svcEntry, len(s.Services))
	for i, svc := range s.Services {
		id := svcID{svc.Namespace, svc.Name}
		old := x.entries[id]
		if old != nil && old.epoch == x.epoch {
			problems = append(problems, fmt.Sprintf("Services[%d] %s/%s: listed twice", i, id.namespace, id.name))
			continue
		}
		e := old
		if !reuse || e == nil || svc.Revision == "" || svc.Revision != e.revision {
			if sum := x.fingerprint(svc); !reuse || e == nil || e.sum != sum {
				e = newSvcEntry(svc, sum, s.NodeName, s.LocalIPs)
				e.id = id
				x.entries[id] = e
			}
			e.revision = svc.Revision
		}
		e.epoch = x.epoch
		seen++
		order[i] = e
		err := e.err
		if err == nil {
			for _, k := range e.keys {
				if other, ok := claimed[k]; ok {
					err = fmt.Errorf("%s %d/%s already used by service %s/%s", vipOrNodePort(k), k.port, protoName(k.proto), other.namespace, other.name)
					break
				}
			}
		}
		wasApplied := old != nil && old.applied
		e.applied = err == nil
		if err != nil {
			problems = append(problems, fmt.Sprintf("Services[%d] %s/%s: %v", i, id.namespace, id.name, err))
		} else {
			for _, k := range e.keys {
				claimed[k] = id
			}
		}
		var from *svcEntry
		if wasApplied {
			from = old
		}
		var to *svcEntry
		if e.applied {
			to = e
		}
		if from != to {
			t.change(from, to)
		}
	}
	for id, e := range x.entries {
		if seen == len(x.entries) {
			break // nothing removed
		}
		if e.epoch != x.epoch {
			if e.applied {
				t.change(e, nil)
			}
			delete(x.entries, id)
		}
	}
	x.order, x.problems = order, problems
	return t.delta(), problems
}

// updateInPlace is update's fast path, for a State with the same services in
// the same places as the last one (less changes that keep each changed
// service valid and claiming the same VIP ports and NodePorts, such as an
// endpoint change), and the same node: then no claim and no problem can have
// changed, and only the changed services are looked at beyond their Revision.
// It reports false, having changed nothing, for any other State.
func (x *svcIndex) updateInPlace(s State) (svcDelta, bool) {
	if len(s.Services) != len(x.order) || s.NodeName != x.node || !slices.Equal(s.LocalIPs, x.localIPs) {
		return svcDelta{}, false
	}
	type change struct {
		i        int
		old, new *svcEntry
	}
	var changes []change
	for i, svc := range s.Services {
		old := x.order[i]
		if old == nil || svc.Name != old.id.name || svc.Namespace != old.id.namespace {
			return svcDelta{}, false
		}
		if svc.Revision != "" && svc.Revision == old.revision {
			continue
		}
		sum := x.fingerprint(svc)
		if sum == old.sum {
			changes = append(changes, change{i, old, old}) // only the Revision moved
			continue
		}
		e := newSvcEntry(svc, sum, s.NodeName, s.LocalIPs)
		if !old.applied || e.err != nil || !slices.Equal(e.keys, old.keys) {
			return svcDelta{}, false
		}
		changes = append(changes, change{i, old, e})
	}
	t := &tally{x: x, add: map[string][]element{}, del: map[string][]element{}, sharedBefore: map[string]bool{}, chainBefore: map[*countedChain]bool{}}
	for _, c := range changes {
		c.new.revision = s.Services[c.i].Revision
		if c.new == c.old {
			continue
		}
		c.new.id, c.new.epoch, c.new.applied = c.old.id, c.old.epoch, true
		x.entries[c.old.id], x.order[c.i] = c.new, c.new
		t.change(c.old, c.new)
	}
	return t.delta(), true
}

// fingerprint hashes what of svc the table depends on: every field, lists in
// order, and of each endpoint's port map the ports of the service's port names
// (other names select nothing).
func (x *svcIndex) fingerprint(svc Service) uint64 {
	w := fpWriter{b: x.buf[:0]}
	w.str(svc.Namespace)
	w.str(svc.Name)
	w.addrs(svc.ClusterIPs)
	w.addrs(svc.ExternalIPs)
	w.addrs(svc.LoadBalancerIPs)
	w.num(uint64(len(svc.LoadBalancerSourceRanges)))
	for _, p := range svc.LoadBalancerSourceRanges {
		w.addr(p.Addr())
		w.num(uint64(p.Bits() + 1))
	}
	w.num(uint64(len(svc.Ports)))
	for _, p := range svc.Ports {
		w.str(p.Name)
		w.str(string(p.Protocol))
		w.num(uint64(p.Port)<<16 | uint64(p.NodePort))
	}
	w.str(string(svc.InternalTrafficPolicy))
	w.str(string(svc.ExternalTrafficPolicy))
	w.num(uint64(svc.AffinityTimeout))
	w.num(uint64(len(svc.Endpoints)))
	for _, ep := range svc.Endpoints {
		w.addr(ep.Address)
		w.str(ep.NodeName)
		var flags uint64
		if ep.Ready {
			flags |= 1
		}
		if ep.Serving {
			flags |= 2
		}
		if ep.Terminating {
			flags |= 4
		}
		for i, p := range svc.Ports {
			if port, ok := ep.Ports[p.Name]; ok {
				flags |= (uint64(port) | 1<<16) << (8 + 17*(i%3))
			}
			if i%3 == 2 || i == len(svc.Ports)-1 {
				w.num(flags)
				flags = 0
			}
		}
		w.num(flags)
	}
	x.buf = w.b
	return maphash.Bytes(x.seed, w.b)
}

// fpWriter appends the fields fingerprint hashes, each self-delimiting.
type fpWriter struct{ b []byte }

func (w *fpWriter) str(s string) {
	w.b = append(binary.LittleEndian.AppendUint32(w.b, uint32(len(s))), s...)
}

func (w *fpWriter) num(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }

func (w *fpWriter) addr(a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		w.b = append(append(w.b, 4), b[:]...)
		return
	}
	b := a.As16()
	w.b = append(append(append(w.b, 16), b[:]...), a.Zone()...)
	w.b = append(w.b, 0)
}

func (w *fpWriter) addrs(as []netip.Addr) {
	w.num(uint64(len(as)))
	for _, a := range as {
		w.addr(a)
	}
}

func newSvcEntry(svc Service, sum uint64, node string, localIPs []netip.Addr) *svcEntry {
	e := &svcEntry{sum: sum}
	e.keys, e.err = checkService(svc)
	if e.err != nil {
		return e
	}
	frag := svcDesired{elems: map[string][]element{}, chains: map[string]countChain{}}
	frag.add(svc, node, localIPs)
	n := 0
	for _, es := range frag.elems {
		n += len(es)
	}
	e.elems = make([]setElement, 0, n)
	for _, set := range slices.Sorted(maps.Keys(frag.elems)) {
		seen := map[string]bool{} // a service may list a value twice (two equal source ranges)
		for _, el := range frag.elems[set] {
			if id := el.id(); !seen[id] {
				seen[id] = true
				e.elems = append(e.elems, setElement{set: setIndex[set], e: el})
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(frag.chains)) {
		e.chains = append(e.chains, frag.chains[name])
	}
	return e
}

// tally collects the changes of one update.
type tally struct {
	x            *svcIndex
	add, del     map[string][]element
	sharedBefore map[string]bool
	sharedElems  map[string]setElement
	sharedOrder  []string
	chainBefore  map[*countedChain]bool
	chainOrder   []*countedChain
}

// change records a service's contribution going from from to to (either nil:
// none).
func (t *tally) change(from, to *svcEntry) {
	var oldElems, newElems []setElement
	if from != nil {
		oldElems = from.elems
		t.countChains(from.chains, -1)
	}
	if to != nil {
		newElems = to.elems
		t.countChains(to.chains, +1)
	}
	// Elements of one service: a diff of its two small lists, by set and
	// element (sets such as lb-restricted and masq-vips hold the same bytes).
	type setID struct {
		set int
		id  string
	}
	ids := make(map[setID]bool, len(oldElems))
	for _, se := range oldElems {
		if !sharedSet(se.set) {
			ids[setID{se.set, se.e.id()}] = true
		}
	}
	for _, se := range newElems {
		if sharedSet(se.set) {
			continue
		}
		if k := (setID{se.set, se.e.id()}); ids[k] {
			delete(ids, k) // unchanged
		} else {
			name := setSpecs[se.set].name
			t.add[name] = append(t.add[name], se.e)
		}
	}
	for _, se := range oldElems {
		if k := (setID{se.set, se.e.id()}); !sharedSet(se.set) && ids[k] {
			delete(ids, k)
			name := setSpecs[se.set].name
			t.del[name] = append(t.del[name], se.e)
		}
	}
	for _, se := range oldElems {
		t.countShared(se, -1)
	}
	for _, se := range newElems {
		t.countShared(se, +1)
	}
}

func (t *tally) countShared(se setElement, n int) {
	if !sharedSet(se.set) {
		return
	}
	k := string(rune(se.set)) + string(se.e.key())
	if _, ok := t.sharedBefore[k]; !ok {
		t.sharedBefore[k] = t.x.shared[k] > 0
		if t.sharedElems == nil {
			t.sharedElems = map[string]setElement{}
		}
		t.sharedElems[k] = se
		t.sharedOrder = append(t.sharedOrder, k)
	}
	t.x.shared[k] += n
}

func (t *tally) countChains(cs []countChain, n int) {
	for _, ch := range cs {
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
// and forgets the counted ones no service uses any more.
func (t *tally) delta() svcDelta {
	d := svcDelta{add: t.add, del: t.del}
	for _, k := range t.sharedOrder {
		se, before, after := t.sharedElems[k], t.sharedBefore[k], t.x.shared[k] > 0
		name := setSpecs[se.set].name
		switch {
		case before && !after:
			d.del[name] = append(d.del[name], se.e)
		case !before && after:
			d.add[name] = append(d.add[name], se.e)
		}
		if !after {
			delete(t.x.shared, k)
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
	return d
}

// union returns every element and chain of the applied services, elements
// sorted as nft lists them.
func (x *svcIndex) union() svcDesired {
	d := svcDesired{elems: map[string][]element{}, chains: make(map[string]countChain, len(x.chains))}
	seen := map[string]bool{}
	for _, e := range x.entries {
		if !e.applied {
			continue
		}
		for _, se := range e.elems {
			if sharedSet(se.set) {
				k := string(rune(se.set)) + string(se.e.key())
				if seen[k] {
					continue
				}
				seen[k] = true
			}
			name := setSpecs[se.set].name
			d.elems[name] = append(d.elems[name], se.e)
		}
	}
	for name := range d.elems {
		sortElements(d.elems[name])
	}
	for name, c := range x.chains {
		d.chains[name] = c.c
	}
	return d
}
