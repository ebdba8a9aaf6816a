package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/podnet/podnet/integration/sandbox"
)

func deltaTexts(m map[string][]element, set string) []string {
	var out []string
	for _, e := range m[set] {
		out = append(out, e.text())
	}
	slices.Sort(out)
	return out
}

// Two services share endpoint 10.244.1.5: its hairpin element stays while one
// of them still uses it, and an update with nothing changed changes nothing.
func TestSvcIndexCountsSharedElements(t *testing.T) {
	ep := Endpoint{Address: netip.MustParseAddr("10.244.1.5"), Ports: map[string]uint16{"": 8080}, NodeName: "node1", Ready: true}
	a := Service{Namespace: "ns", Name: "a", ClusterIPs: addrs("10.96.0.1"), Ports: []ServicePort{{Protocol: TCP, Port: 80}}, Endpoints: []Endpoint{ep}}
	b := a.Clone()
	b.Name, b.ClusterIPs = "b", addrs("10.96.0.2")
	x := newSvcIndex()
	both := State{NodeName: "node1", Services: []Service{a, b}}
	d, problems := x.update(both)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if got := deltaTexts(d.add, "hairpin-v4"); !slices.Equal(got, []string{"10.244.1.5 . 10.244.1.5"}) {
		t.Errorf("first update adds hairpin %v", got)
	}
	if got := len(d.addChains); got != 1 {
		t.Errorf("first update adds %d chains, want 1 (lb-v4-1)", got)
	}
	if d, _ := x.update(both.Clone()); !d.empty() {
		t.Errorf("same state again: delta %+v, want empty", d)
	}
	d, _ = x.update(State{NodeName: "node1", Services: []Service{b}})
	if len(d.del["hairpin-v4"]) > 0 || len(d.delChains) > 0 {
		t.Errorf("removing a: deletes hairpin %v and chains %v still used by b", deltaTexts(d.del, "hairpin-v4"), d.delChains)
	}
	if got := deltaTexts(d.del, "service-ips-v4"); !slices.Equal(got, []string{"10.96.0.1 . tcp . 80 : goto lb-v4-1"}) {
		t.Errorf("removing a deletes service-ips %v", got)
	}
	d, _ = x.update(State{NodeName: "node1"})
	if got := deltaTexts(d.del, "hairpin-v4"); len(got) != 1 || len(d.delChains) != 1 {
		t.Errorf("removing b: deletes hairpin %v and chains %v, want both gone", got, d.delChains)
	}
	if len(x.shared)+len(x.chains)+len(x.entries) != 0 {
		t.Errorf("empty index still counts %d shared elements, %d chains, %d services", len(x.shared), len(x.chains), len(x.entries))
	}
}

// A changed endpoint swaps exactly its elements; a changed node name
// recomputes Local policies.
func TestSvcIndexRecomputesChanged(t *testing.T) {
	x := newSvcIndex()
	s := svcState.Clone()
	if _, problems := x.update(s); len(problems) > 0 {
		t.Fatal(problems)
	}
	s2 := s.Clone()
	s2.Services[2].Endpoints[0].Address = netip.MustParseAddr("10.244.2.8")
	d, _ := x.update(s2)
	if got, want := deltaTexts(d.del, "backends-v4"), []string{"198.51.100.1 . tcp . 443 . 0x00000000 : 10.244.2.7 . 8443", "10.96.0.12 . tcp . 443 . 0x00000000 : 10.244.2.7 . 8443"}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("deleted backends %v, want %v", got, want)
	}
	if len(d.addChains)+len(d.delChains) != 0 {
		t.Errorf("same endpoint count: chains added %v deleted %v", d.addChains, d.delChains)
	}
	s3 := s2.Clone()
	s3.NodeName = "node2" // np-local's endpoint is on node2: the NodePort now has a local endpoint
	d, _ = x.update(s3)
	if got := deltaTexts(d.add, "service-nodeports-v4"); !slices.Contains(got, "sctp . 30090 : goto np-v4-1") {
		t.Errorf("node name change: nodeports added %v", got)
	}
	if got, want := x.union(), mustNormalize(t, s3).svc; !sameUnion(got, want) {
		t.Errorf("index after updates differs from a fresh computation")
	}
}

func mustNormalize(t *testing.T, s State) desired {
	t.Helper()
	d, _ := normalize(s)
	return d
}

func sameUnion(a, b svcDesired) bool {
	if len(a.chains) != len(b.chains) {
		return false
	}
	for name := range a.chains {
		if _, ok := b.chains[name]; !ok {
			return false
		}
	}
	for _, spec := range setSpecs {
		if !slices.EqualFunc(a.elems[spec.name], b.elems[spec.name], func(x, y element) bool { return x.text() == y.text() }) {
			return false
		}
	}
	return true
}

// A batch committed by another process (here nft deleting an element) moves
// the ruleset generation: the next Sync reads the table back and repairs it
// instead of sending only its own difference.
func TestTableSyncRepairsOutsideChange(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-outside")
	tbl := newTable(t, ns)
	if err := tbl.Sync(svcState); err != nil {
		t.Fatal(err)
	}
	nft(t, ns, "delete", "element", "inet", TableName, "service-ips-v4", "{ 10.96.0.10 . tcp . 80 }")
	nft(t, ns, "delete", "element", "inet", TableName, "hairpin-v4", "{ 10.244.1.5 . 10.244.1.5 }")
	if err := tbl.Sync(svcState); err != nil {
		t.Fatal(err)
	}
	checkSynced(t, ns, svcState)
	// And an element change of our own after that goes through the fast path
	// and still lands.
	s := svcState.Clone()
	s.Services[0].Endpoints = s.Services[0].Endpoints[1:]
	if err := tbl.Sync(s); err != nil {
		t.Fatal(err)
	}
	checkSynced(t, ns, s)
}

// Element text is derived from the bytes: check the forms that mix families.
func TestElementText(t *testing.T) {
	ep6 := netip.MustParseAddr("fd00::5")
	for _, c := range []struct {
		e    element
		want string
	}{
		{mapElem(newKey().proto(6).port(30080).slot(2), newKey().addr(ep6).port(8080)), "tcp . 30080 . 0x00000002 : fd00::5 . 8080"},
		{mapElem(newKey().proto(17).port(53).slot(0), newKey().addr(netip.MustParseAddr("10.1.2.3")).port(5353)), "udp . 53 . 0x00000000 : 10.1.2.3 . 5353"},
		{rangeElem(newKey().addr(netip.MustParseAddr("2001:db8::1")).proto(6).port(443), netip.MustParsePrefix("2001:db8:1::/48")), "2001:db8::1 . tcp . 443 . 2001:db8:1::/48"},
		{rangeElem(newKey().addr(netip.MustParseAddr("198.51.100.1")).proto(6).port(443), netip.MustParsePrefix("192.0.2.7/32")), "198.51.100.1 . tcp . 443 . 192.0.2.7"},
		{setElem(newKey().addr(ep6).addr(ep6)), "fd00::5 . fd00::5"},
	} {
		if got := c.e.text(); got != c.want {
			t.Errorf("text %q, want %q", got, c.want)
		}
	}
}

func TestParseCountChain(t *testing.T) {
	for _, c := range []countChain{
		{fam: families[0], n: 3}, {fam: families[1], nodePort: true, n: 12},
		{fam: families[0], n: 2, affinity: 10800}, {fam: families[1], nodePort: true, n: 1, affinity: 1},
		{fam: families[0], cluster: true, n: 4}, {fam: families[1], nodePort: true, cluster: true, n: 2, affinity: 60},
	} {
		got, ok := parseCountChain(c.name())
		if !ok || got != c {
			t.Errorf("parseCountChain(%q) = %+v, %t; want %+v", c.name(), got, ok, c)
		}
	}
	for _, name := range []string{"lb-v4-0", "lb-v5-3", "lba-v4-3", "lb-v4-3-600", "lba-v4-3-0", "lba-v4-3-86401", "np-v6-03", "services", "lb-v4-x", "lbx-v4-3", "lbcc-v4-3", "npca-v4-2"} {
		if c, ok := parseCountChain(name); ok {
			t.Errorf("parseCountChain(%q) = %+v, want not a count chain", name, c)
		}
	}
}

// A series of States through one index gives, after each, what a fresh
// computation gives: the in-place path (same services in the same places) and
// the full one agree.
func TestSvcIndexSeries(t *testing.T) {
	base := svcState.Clone()
	for i := range base.Services {
		base.Services[i].Revision = fmt.Sprintf("r%d", i)
	}
	step := func(name string, change func(s *State)) (string, State) {
		s := base.Clone()
		change(&s)
		return name, s
	}
	var states []State
	var names []string
	for _, st := range []func() (string, State){
		func() (string, State) { return step("base", func(*State) {}) },
		func() (string, State) {
			return step("endpoint changed, new revision", func(s *State) {
				s.Services[2].Endpoints[0].Address = netip.MustParseAddr("10.244.2.99")
				s.Services[2].Revision = "r2b"
			})
		},
		func() (string, State) {
			return step("endpoint changed, no revision", func(s *State) {
				s.Services[0].Endpoints[1].Ready = false
				s.Services[0].Revision = ""
			})
		},
		func() (string, State) {
			return step("VIP taken by an earlier service", func(s *State) {
				s.Services[2].ClusterIPs = addrs("10.96.0.11")
				s.Services[2].Ports[0].Protocol, s.Services[2].Ports[0].Port = SCTP, 9000
				s.Services[2].Revision = "r2c"
			})
		},
		func() (string, State) {
			return step("same revision but fields changed is the caller's bug; a new revision", func(s *State) {
				s.Services[1].Endpoints = nil
				s.Services[1].Revision = "r1b"
			})
		},
		func() (string, State) { return step("base again", func(*State) {}) },
		func() (string, State) {
			return step("a service removed", func(s *State) { s.Services = s.Services[1:] })
		},
	} {
		n, s := st()
		names, states = append(names, n), append(states, s)
	}
	x := newSvcIndex()
	kernel := map[string]map[string]bool{} // set → element texts, kept by applying the deltas
	for i, s := range states {
		d, problems := x.update(s)
		for set, es := range d.del {
			for _, e := range es {
				if !kernel[set][e.text()] {
					t.Errorf("%s: delta deletes %s from %s, which does not hold it", names[i], e.text(), set)
				}
				delete(kernel[set], e.text())
			}
		}
		for set, es := range d.add {
			for _, e := range es {
				if kernel[set] == nil {
					kernel[set] = map[string]bool{}
				}
				kernel[set][e.text()] = true
			}
		}
		want, wantErr := normalize(s)
		if !sameUnion(x.union(), want.svc) {
			t.Errorf("%s: index differs from a fresh computation", names[i])
		}
		for _, spec := range setSpecs {
			var got, exp []string
			for e := range kernel[spec.name] {
				got = append(got, e)
			}
			for _, e := range want.svc.elems[spec.name] {
				exp = append(exp, e.text())
			}
			slices.Sort(got)
			slices.Sort(exp)
			if !slices.Equal(got, exp) {
				t.Errorf("%s: %s after the deltas %q, want %q", names[i], spec.name, got, exp)
			}
		}
		var wantProblems []string
		if se, ok := wantErr.(*SkippedError); ok {
			wantProblems = se.Problems
		}
		if !slices.Equal(problems, wantProblems) {
			t.Errorf("%s: problems %q, want %q", names[i], problems, wantProblems)
		}
	}
}
