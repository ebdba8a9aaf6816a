package kubesource

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
)

// Node is a Kubernetes Node as podnet routes to it.
type Node struct {
	Name string
	// Addresses are the node's InternalIP addresses, in the Node's order.
	Addresses []netip.Addr
	// PodCIDRs are spec.podCIDRs (or spec.podCIDR), empty until the node
	// IPAM controller assigns them.
	PodCIDRs []netip.Prefix
}

// nodeEntry is one Node's translation; created orders the nodes whose
// podCIDRs overlap (the older keeps them).
type nodeEntry struct {
	node    Node
	created time.Time
	// rejected is why the whole node is left out; skipped are addresses
	// left out of a node that stays.
	rejected *Problem
	skipped  []*Problem
}

// translateNode reads a Node. An InternalIP that is not a usable address is
// skipped; a bad podCIDR, or podCIDRs without an InternalIP to route them
// to, leaves the node out.
func translateNode(n *v1.Node) *nodeEntry {
	e := &nodeEntry{node: Node{Name: n.Name}, created: n.CreationTimestamp.Time}
	for i, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		field := fmt.Sprintf("status.addresses[%d].address", i)
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
			e.skipped = append(e.skipped, bad(field, a.Address, "not an IP address").problem(KindNode, "", n.Name))
		case ip.Zone() != "" || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.Is4In6():
			e.skipped = append(e.skipped, bad(field, a.Address, "not a usable node address").problem(KindNode, "", n.Name))
		case !slices.Contains(e.node.Addresses, ip):
			e.node.Addresses = append(e.node.Addresses, ip)
		}
	}
	cidrs, field := n.Spec.PodCIDRs, "spec.podCIDRs"
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs, field = []string{n.Spec.PodCIDR}, "spec.podCIDR"
	}
	for i, s := range cidrs {
		f := fmt.Sprintf("%s[%d]", field, i)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			e.rejected = bad(f, s, "not a CIDR").problem(KindNode, "", n.Name)
		case p != p.Masked() || p.Addr().Is4In6():
			e.rejected = bad(f, s, "not a network prefix (e.g. 10.244.1.0/24)").problem(KindNode, "", n.Name)
		case p.Addr().Is4() && p.Bits() > 30 || p.Addr().Is6() && p.Bits() > 126:
			e.rejected = bad(f, s, "too small for pods").problem(KindNode, "", n.Name)
		case slices.ContainsFunc(e.node.PodCIDRs, func(q netip.Prefix) bool { return q.Addr().Is4() == p.Addr().Is4() }):
			e.rejected = bad(f, s, "a second podCIDR of its family").problem(KindNode, "", n.Name)
		}
		if e.rejected != nil {
			return e
		}
		e.node.PodCIDRs = append(e.node.PodCIDRs, p)
	}
	if len(e.node.PodCIDRs) > 0 && len(e.node.Addresses) == 0 {
		e.rejected = &Problem{Kind: KindNode, Name: n.Name, Field: "status.addresses",
			Reason: "no usable InternalIP address to route its podCIDRs to"}
	}
	return e
}

// span is a podCIDR as an interval of addresses, with its node.
type span struct {
	first, last netip.Addr
	node        string
}

// assembleNodes returns the nodes of entries, sorted by name, less those
// rejected, and less those with a podCIDR that overlaps one of an older node
// (created earlier, or with a smaller name); it returns those, each with its
// problem, apart.
func assembleNodes(entries map[string]*nodeEntry) ([]Node, []*Problem) {
	order := make([]*nodeEntry, 0, len(entries))
	for _, e := range entries {
		order = append(order, e)
	}
	slices.SortFunc(order, func(a, b *nodeEntry) int {
		return cmp.Or(a.created.Compare(b.created), cmp.Compare(a.node.Name, b.node.Name))
	})
	var nodes []Node
	var problems []*Problem
	var taken []span // disjoint, sorted by first address
	for _, e := range order {
		problems = append(problems, e.skipped...)
		if e.rejected != nil {
			problems = append(problems, e.rejected)
			continue
		}
		var spans []span
		var clash *Problem
		for i, p := range e.node.PodCIDRs {
			s := span{first: p.Addr(), last: lastAddr(p), node: e.node.Name}
			if other, ok := overlap(taken, s); ok {
				clash = &Problem{Kind: KindNode, Name: e.node.Name, Field: fmt.Sprintf("spec.podCIDRs[%d]", i),
					Value: `"` + p.String() + `"`, Reason: "overlaps a podCIDR of node " + other}
				break
			}
			spans = append(spans, s)
		}
		if clash != nil {
			problems = append(problems, clash)
			continue
		}
		for _, s := range spans {
			i, _ := slices.BinarySearchFunc(taken, s, func(a, b span) int { return a.first.Compare(b.first) })
			taken = slices.Insert(taken, i, s)
		}
		nodes = append(nodes, e.node)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	return nodes, problems
}

// overlap returns the node of a span of taken (disjoint, sorted) that
// overlaps s: only the spans next to where s would go can.
func overlap(taken []span, s span) (string, bool) {
	i, _ := slices.BinarySearchFunc(taken, s, func(a, b span) int { return a.first.Compare(b.first) })
	if i > 0 && taken[i-1].last.Compare(s.first) >= 0 {
		return taken[i-1].node, true
	}
	if i < len(taken) && taken[i].first.Compare(s.last) <= 0 {
		return taken[i].node, true
	}
	return "", false
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
