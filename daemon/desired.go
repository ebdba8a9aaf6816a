package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// desiredRoutes is a host-gw route to every peer node's podCIDR via that node's
// first address of the same family. A peer podCIDR with no address of its family
// is returned in skipped rather than failing the others.
func desiredRoutes(c *Cluster, self string) (routes []routing.Route, skipped []error) {
	for _, n := range c.Nodes {
		if n.Name == self {
			continue
		}
		for _, p := range n.PodCIDRs {
			via, ok := addrOfFamily(n.Addresses, p.Addr().Is4())
			if !ok {
				skipped = append(skipped, fmt.Errorf("node %s: no address of the family of podCIDR %s", n.Name, p))
				continue
			}
			routes = append(routes, routing.Route{Dst: p, Via: via})
		}
	}
	return routes, skipped
}

func addrOfFamily(addrs []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// desiredNFT is the table's state on node self: every podCIDR and node address
// of the cluster (masquerade), self's addresses and podCIDRs, and the cluster's services,
// copied into buf's storage when it is large enough (at 50k services a new
// slice would be 12 MB of garbage per sync).
func desiredNFT(c *Cluster, self string, buf []nft.Service) nft.State {
	svcs := buf[:0]
	for _, svc := range c.Services {
		svcs = append(svcs, *svc)
	}
	s := nft.State{NodeName: self, Services: svcs}
	for _, n := range c.Nodes {
		s.ClusterCIDRs = append(s.ClusterCIDRs, n.PodCIDRs...)
		s.NodeIPs = append(s.NodeIPs, n.Addresses...)
		if n.Name == self {
			s.LocalIPs = slices.Clone(n.Addresses)
			s.LocalPodCIDRs = slices.Clone(n.PodCIDRs)
		}
	}
	return s
}

// gateways are the bridge addresses for the node's podCIDRs: the gateway of each
// range with the range's prefix length.
func gateways(cidrs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range cidrs {
		out = append(out, netip.PrefixFrom(ipam.Gateway(p), p.Bits()))
	}
	return out
}
