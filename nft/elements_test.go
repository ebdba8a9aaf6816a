package nft

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
)

// kernelElements returns what the kernel holds after a Sync of s: the elements
// of every set, by set name.
func kernelElements(s State) map[string][]nftables.SetElement {
	d, _ := normalize(s)
	have := map[string][]nftables.SetElement{}
	for _, spec := range setSpecs {
		have[spec.name] = spec.elements(d)
	}
	return have
}

func TestElementChanges(t *testing.T) {
	elem := func(s string, end bool) nftables.SetElement {
		return nftables.SetElement{Key: netip.MustParseAddr(s).AsSlice(), IntervalEnd: end}
	}
	tests := []struct {
		name     string
		from, to State
		want     []setChange
	}{{
		name: "nothing changes",
		from: dualStack,
		to:   dualStack,
	}, {
		name: "from empty",
		to:   v4Only,
		want: []setChange{
			{spec: setSpecs[0], flush: true, add: []nftables.SetElement{
				elem("10.244.1.0", false), elem("10.244.2.0", true),
				elem("10.244.2.0", false), elem("10.244.3.0", true),
			}},
			{spec: setSpecs[2], add: []nftables.SetElement{elem("192.168.1.11", false), elem("192.168.1.12", false)}},
		},
	}, {
		name: "a CIDR and a node IP replaced",
		from: v4Only,
		to: State{
			ClusterCIDRs: prefixes("10.244.1.0/24", "10.244.3.0/24"),
			NodeIPs:      addrs("192.168.1.11", "192.168.1.13"),
		},
		want: []setChange{
			{spec: setSpecs[0], flush: true, add: []nftables.SetElement{
				elem("10.244.1.0", false), elem("10.244.2.0", true),
				elem("10.244.3.0", false), elem("10.244.4.0", true),
			}},
			{spec: setSpecs[2], add: []nftables.SetElement{elem("192.168.1.13", false)}, del: []nftables.SetElement{elem("192.168.1.12", false)}},
		},
	}, {
		name: "everything removed",
		from: State{ClusterCIDRs: prefixes("::/0"), NodeIPs: addrs("::1")},
		to:   State{},
		want: []setChange{
			{spec: setSpecs[1], flush: true, add: []nftables.SetElement{}},
			{spec: setSpecs[3], del: []nftables.SetElement{elem("::1", false)}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := normalize(tt.to)
			got := elementChanges(kernelElements(tt.from), d)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(setChange{}, setSpec{}, nftables.SetDatatype{})); diff != "" {
				t.Errorf("elementChanges (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIntervalElementsOpenAtTop(t *testing.T) {
	got := intervalElements(prefixes("255.255.255.0/24", "10.0.0.1/32"))
	want := []nftables.SetElement{
		{Key: []byte{255, 255, 255, 0}},
		{Key: []byte{10, 0, 0, 1}}, {Key: []byte{10, 0, 0, 2}, IntervalEnd: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("intervalElements (-want +got):\n%s", diff)
	}
}
