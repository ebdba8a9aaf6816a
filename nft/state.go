package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// State is the desired content of the table.
//
// Order and duplicates do not matter: both families may be mixed in each list and
// are split into the per-family sets. A prefix contained in another one is dropped,
// since the larger prefix already matches it. Invalid values are skipped (see
// SkippedError).
type State struct {
	ClusterCIDRs []netip.Prefix // every node's podCIDRs, IPv4 and IPv6 mixed
	NodeIPs      []netip.Addr   // every node's addresses, IPv4 and IPv6 mixed
	// LocalPodCIDRs are this node's own podCIDRs (a subset of ClusterCIDRs).
	// A NodePort client from them is one of this node's pods and keeps its
	// address; any other client, a pod of another node included, is
	// masqueraded (externalTrafficPolicy Cluster), since the endpoint's reply
	// would otherwise bypass this node's conntrack.
	LocalPodCIDRs []netip.Prefix

	// NodeName is this node's name: Local traffic policies keep the endpoints
	// whose NodeName equals it.
	NodeName string
	// LocalIPs are this node's own addresses (a subset of NodeIPs).
	LocalIPs []netip.Addr
	// Services are load-balanced by the table; see Service.
	Services []Service
	// HostPorts are the hostPort mappings of this node's pods; see HostPort.
	// Services take precedence: a mapping whose address and port a service
	// also serves (a NodePort, say) does not see that traffic.
	HostPorts []HostPort
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	c := State{
		ClusterCIDRs: slices.Clone(s.ClusterCIDRs), NodeIPs: slices.Clone(s.NodeIPs),
		LocalPodCIDRs: slices.Clone(s.LocalPodCIDRs),
		NodeName:      s.NodeName, LocalIPs: slices.Clone(s.LocalIPs), HostPorts: slices.Clone(s.HostPorts),
	}
	if s.Services != nil {
		c.Services = make([]Service, len(s.Services))
		for i, svc := range s.Services {
			c.Services[i] = svc.Clone()
		}
	}
	return c
}

// ErrInvalid is matched by errors.Is for every error that reports skipped invalid
// State values.
var ErrInvalid = errors.New("invalid value")

// SkippedError reports State values that Sync left out because they are invalid.
// It never means the sync failed: the valid rest of the State was applied (unless
// an error joined with this one says otherwise). Use errors.As to get it.
type SkippedError struct {
	// Problems has one line per skipped value, naming the field, the index, the
	// value and the reason, e.g. "ClusterCIDRs[1] 10.244.1.7/24: host bits set
	// (want 10.244.1.0/24)".
	Problems []string
}

// Error lists every skipped value.
func (e *SkippedError) Error() string {
	return fmt.Sprintf("nft: skipped %d invalid value(s): %s", len(e.Problems), strings.Join(e.Problems, "; "))
}

// Is reports whether target is ErrInvalid.
func (e *SkippedError) Is(target error) bool { return target == ErrInvalid }

// desired is a State checked and split into the contents of each set, sorted by
// address as nft lists them.
type desired struct {
	prefixes map[string][]netip.Prefix // interval sets, by set name
	addrs    map[string][]netip.Addr   // address sets, by set name
	// hostPorts are the elements of the hostPort sets, by set name.
	hostPorts map[string][]element
	svc       svcDesired // service sets and endpoint-count chains
}

// normalize validates s and returns the content of every set. The error, a
// *SkippedError, lists the values it left out; everything else is in desired.
func normalize(s State) (desired, error) {
	d, problems := normalizeBase(s)
	var svcProblems []string
	d.svc, svcProblems = normalizeServices(s)
	return d, skippedError(append(problems, svcProblems...))
}

// skippedError is a *SkippedError listing problems, or nil if there is none.
func skippedError(problems []string) error {
	if len(problems) > 0 {
		return &SkippedError{Problems: problems}
	}
	return nil
}

// normalizeBase validates the fields of s other than its services and returns
// the content of the sets they fill, with a line for each value left out.
func normalizeBase(s State) (desired, []string) {
	p4, p6, problems := splitPrefixes("ClusterCIDRs", s.ClusterCIDRs, nil)
	l4, l6, problems := splitPrefixes("LocalPodCIDRs", s.LocalPodCIDRs, problems)
	var a4, a6 []netip.Addr
	for i, a := range s.NodeIPs {
		switch {
		case !a.IsValid():
			problems = append(problems, fmt.Sprintf("NodeIPs[%d] %s: not a valid address", i, a))
		case a.Zone() != "":
			problems = append(problems, fmt.Sprintf("NodeIPs[%d] %s: has a zone", i, a))
		case a.Is4():
			a4 = append(a4, a)
		default:
			a6 = append(a6, a)
		}
	}
	hostPorts, hpProblems := normalizeHostPorts(s.HostPorts)
	d := desired{
		prefixes: map[string][]netip.Prefix{
			setClusterCIDRs4:  outermost(p4),
			setClusterCIDRs6:  outermost(p6),
			setLocalPodCIDRs4: outermost(l4),
			setLocalPodCIDRs6: outermost(l6),
		},
		addrs: map[string][]netip.Addr{
			setNodeIPs4: sortedUnique(a4),
			setNodeIPs6: sortedUnique(a6),
		},
		hostPorts: hostPorts,
	}
	return d, append(problems, hpProblems...)
}

// splitPrefixes splits the prefixes of the State field named field by family,
// appending a line to problems for each invalid one.
func splitPrefixes(field string, ps []netip.Prefix, problems []string) (p4, p6 []netip.Prefix, _ []string) {
	for i, p := range ps {
		switch {
		case !p.IsValid():
			problems = append(problems, fmt.Sprintf("%s[%d] %s: not a valid prefix", field, i, p))
		case p != p.Masked():
			problems = append(problems, fmt.Sprintf("%s[%d] %s: host bits set (want %s)", field, i, p, p.Masked()))
		case p.Addr().Is4():
			p4 = append(p4, p)
		default:
			p6 = append(p6, p)
		}
	}
	return p4, p6, problems
}

// outermost sorts prefixes of one family by address and drops duplicates and
// prefixes contained in another, so that no two intervals overlap (the kernel
// rejects overlapping intervals in a set without auto-merge).
func outermost(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, netip.Prefix.Compare) // by address, then shorter prefix first
	var out []netip.Prefix
	for _, p := range ps {
		// Sorted by start address, a prefix containing p is the last one kept.
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// sortedUnique returns the addresses sorted, without duplicates.
func sortedUnique(as []netip.Addr) []netip.Addr {
	as = slices.Clone(as)
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}
