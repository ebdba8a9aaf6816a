package nft

import (
	"fmt"
	"net/netip"
	"strings"
)

// The source NAT side of explain: chain postrouting.

// masqDecision is what postrouting does with the connection to one
// destination.
type masqDecision struct {
	rule, elem string
	what       func(dsts string) string
	masq       bool
}

// postrouting explains the source NAT of an accepted connection, for each
// destination it may have after the DNAT.
func (w *walker) postrouting() error {
	type dest struct {
		addr netip.Addr
		text string
	}
	var dests []dest
	if w.ex.Verdict == VerdictNone {
		dests = []dest{{w.p.Dst, w.p.dstText()}}
	}
	for _, b := range w.ex.Backends {
		dests = append(dests, dest{b.Addr(), b.String()})
	}
	type group struct {
		d     masqDecision
		dests []string
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, d := range dests {
		dec, kind, err := w.masquerade(d.addr)
		if err != nil {
			return err
		}
		k := dec.rule + "\x00" + dec.elem + "\x00" + kind
		g := byKey[k]
		if g == nil {
			g = &group{d: dec}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.dests = append(g.dests, d.text)
	}
	var reasons []string
	for _, g := range groups {
		what := g.d.what(strings.Join(g.dests, ", "))
		if len(groups) > 1 {
			what = "to " + strings.Join(g.dests, ", ") + ": " + what
		}
		w.ex.Masquerade = w.ex.Masquerade || g.d.masq
		reasons = append(reasons, what)
		w.step(chainPostrouting, g.d.rule, g.d.elem, what)
	}
	w.ex.MasqReason = strings.Join(reasons, "; ")
	return nil
}

// masquerade applies the postrouting rules to the connection to dst; kind
// tells apart decisions whose sentences differ.
func (w *walker) masquerade(dst netip.Addr) (masqDecision, string, error) {
	p := w.p
	cidr, err := w.inCIDRs()
	if err != nil {
		return masqDecision{}, "", err
	}
	dstCIDR, dstInCIDRs, err := w.get(setClusterCIDRs, newKey().addr(dst))
	if err != nil {
		return masqDecision{}, "", err
	}
	nodeIPs := setNodeIPs6
	if w.f.v4 {
		nodeIPs = setNodeIPs4
	}
	_, _, dstIsNode, err := w.src.get(nodeIPs, newKey().addr(dst).key)
	if err != nil {
		return masqDecision{}, "", err
	}
	for _, r := range postroutingRules {
		switch r.role {
		case "masquerade-ipv4", "masquerade-ipv6":
			if r.role != "masquerade-ip"+w.f.suffix || cidr == nil || dstInCIDRs || dstIsNode {
				continue
			}
			return masqDecision{rule: r.text, elem: cidr.text(), masq: true, what: func(dsts string) string {
				return fmt.Sprintf("the pod %s reaches %s, outside the cluster CIDRs and not a node: masqueraded to the node's address", p.Src, dsts)
			}}, "", nil
		case "masquerade-marked":
			if !w.marked {
				continue
			}
			return masqDecision{rule: r.text, masq: true, what: func(string) string {
				return fmt.Sprintf("marked 0x%08x in %s: masqueraded to the node's address", masqMark, chainServices)
			}}, "", nil
		case "hairpin-v4", "hairpin-v6", "hostport-hairpin-v4", "hostport-hairpin-v6":
			set, through := setHairpin, "the service"
			if w.ex.HostPort != "" {
				set, through = setHostPortHairpin, "its own hostPort"
			}
			if r.role != w.f.name(set) || w.ex.Verdict != VerdictDNAT {
				continue
			}
			e, ok, err := w.get(set, newKey().addr(p.Src).addr(dst))
			if err != nil {
				return masqDecision{}, "", err
			}
			if !ok {
				continue
			}
			return masqDecision{rule: r.text, elem: e.text(), masq: true, what: func(string) string {
				return fmt.Sprintf("the pod %s reached itself through %s: masqueraded, so that the reply comes from another address than its own", p.Src, through)
			}}, "", nil
		default:
			return masqDecision{}, "", fmt.Errorf("nft: explain: no walk for rule %s of chain %s", r.role, chainPostrouting)
		}
	}
	switch {
	case cidr != nil && dstInCIDRs:
		return masqDecision{what: func(dsts string) string {
			return fmt.Sprintf("the pod %s reaches %s, in the cluster CIDRs (%s): no rule matches, the client keeps its address", p.Src, dsts, dstCIDR.text())
		}}, "pod", nil
	case cidr != nil:
		return masqDecision{what: func(dsts string) string {
			return fmt.Sprintf("the pod %s reaches %s, a node (%s): no rule matches, the client keeps its address", p.Src, dsts, nodeIPs)
		}}, "node", nil
	}
	return masqDecision{what: func(string) string {
		return fmt.Sprintf("the client %s is not in the cluster CIDRs and was not marked: no rule matches, it keeps its address", p.Src)
	}}, "outside", nil
}
