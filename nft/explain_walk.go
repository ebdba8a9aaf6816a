package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// walker follows one packet through the rules of layout.go and svclayout.go,
// in their order, asking src for every set lookup. Each rule is handled by
// its role, so a rule added to the layout without a case here fails every
// walk (and TestExplainKnowsEveryRule).
type walker struct {
	src    elementSource
	p      Packet
	f      fam
	ex     *Explanation
	marked bool // meta mark has masqMark

	// Memoised answers about the packet's addresses.
	srcSets           map[string]*element // by interval set: the element holding Src; nil: none
	srcLocal, dstNode *bool
}

// explain walks p through the table whose lookups src answers.
func explain(src elementSource, p Packet) (*Explanation, error) {
	w := &walker{src: src, p: p, f: famOf(families[1]), ex: &Explanation{}}
	if p.Dst.Is4() {
		w.f = famOf(families[0])
	}
	hook, what := chainPrerouting, "a new connection arriving at the node goes to the services chain"
	if p.Local {
		hook, what = chainOutput, "a new connection the node itself opens goes to the services chain"
	}
	w.enter(hook)
	w.step(hook, jumpServices(hook).text, "", what)
	w.enter(chainServices)
	done := false
	for _, r := range serviceRules(w.f) {
		var err error
		if done, err = w.serviceRule(r); err != nil {
			return nil, err
		}
		if done {
			break
		}
	}
	if !done {
		w.step(chainServices, "", "", fmt.Sprintf("no rule matches %s to %s: not for a service, the packet goes on to the hostports chain",
			p.protoText(), p.dstText()))
		w.step(hook, jumpHostPorts(hook).text, "", "a new connection no service took goes to the hostports chain")
		w.enter(chainHostPorts)
		var err error
		if done, err = w.hostPorts(); err != nil {
			return nil, err
		}
	}
	if !done {
		w.ex.Verdict = VerdictNone
		what := fmt.Sprintf("no hostPort maps %s to %s: the packet goes on without DNAT", p.protoText(), p.dstText())
		if p.Src.IsLoopback() {
			what = fmt.Sprintf("hostPorts never translate a loopback source (%s): the packet goes on without DNAT", p.Src)
		}
		w.step(chainHostPorts, "", "", what)
	}
	if v := w.ex.Verdict; v == VerdictDNAT || v == VerdictNone {
		if err := w.postrouting(); err != nil {
			return nil, err
		}
	}
	return w.ex, nil
}

func (w *walker) enter(chain string) { w.ex.Chains = append(w.ex.Chains, chain) }

func (w *walker) step(chain, rule, elem, what string) {
	w.ex.Steps = append(w.ex.Steps, ExplainStep{Chain: chain, Rule: rule, Element: elem, What: what})
}

func (w *walker) get(set string, key *keyBuilder) (element, bool, error) {
	e, _, ok, err := w.src.get(w.f.name(set), key.key)
	return e, ok, err
}

func (w *walker) vipKey() *keyBuilder {
	return newKey().addr(w.p.Dst).proto(w.p.Proto).port(w.p.DstPort)
}

func (w *walker) nodePortKey() *keyBuilder { return newKey().proto(w.p.Proto).port(w.p.DstPort) }

// inCIDRs returns the cluster-cidrs element holding Src, or nil.
func (w *walker) inCIDRs() (*element, error) { return w.srcIn(setClusterCIDRs) }

// inLocalPodCIDRs returns the local-pod-cidrs element holding Src, or nil.
func (w *walker) inLocalPodCIDRs() (*element, error) { return w.srcIn(setLocalPodCIDRs) }

// srcIn returns the element of the interval set set holding Src, or nil,
// asking src once per set.
func (w *walker) srcIn(set string) (*element, error) {
	if e, ok := w.srcSets[set]; ok {
		return e, nil
	}
	e, ok, err := w.get(set, newKey().addr(w.p.Src))
	if err != nil {
		return nil, err
	}
	var found *element
	if ok {
		found = &e
	}
	if w.srcSets == nil {
		w.srcSets = map[string]*element{}
	}
	w.srcSets[set] = found
	return found, nil
}

// fromNode is `fib saddr type local`.
func (w *walker) fromNode() (bool, error) {
	if w.srcLocal == nil {
		l, err := w.src.local(w.p.Src)
		if err != nil {
			return false, err
		}
		w.srcLocal = &l
	}
	return *w.srcLocal, nil
}

// toNodePort is `ip daddr != 127.0.0.0/8 fib daddr type local`.
func (w *walker) toNodePort() (bool, error) {
	if w.dstNode == nil {
		l := false
		if !w.p.Dst.IsLoopback() {
			var err error
			if l, err = w.src.local(w.p.Dst); err != nil {
				return false, err
			}
		}
		w.dstNode = &l
	}
	return *w.dstNode, nil
}

// serviceRule applies one rule of chain services; done says it decided the
// packet's fate.
func (w *walker) serviceRule(r ruleSpec) (done bool, err error) {
	p := w.p
	role := strings.TrimSuffix(r.role, "-"+w.f.suffix)
	switch role {
	case "lb-source-ranges":
		e, ok, err := w.get(setLBRestricted, w.vipKey())
		if err != nil || !ok {
			return false, err
		}
		rng, ok, err := w.get(setLBSourceRanges, w.vipKey().addr(p.Src))
		if err != nil {
			return false, err
		}
		if ok {
			w.step(chainServices, r.text, rng.text(), fmt.Sprintf("the client %s is in a loadBalancerSourceRange of %s: allowed", p.Src, e.text()))
			return false, nil
		}
		w.ex.Verdict, w.ex.Service = VerdictDrop, e.text()
		w.step(chainServices, r.text, e.text(), fmt.Sprintf("%s takes only clients in its loadBalancerSourceRanges and %s is in none: dropped", e.text(), p.Src))
		return true, nil

	case "cluster-vips-pods":
		cidr, err := w.inCIDRs()
		if err != nil || cidr == nil {
			return false, err
		}
		e, ok, err := w.get(setServiceIPsCluster, w.vipKey())
		if err != nil || !ok {
			return false, err
		}
		return w.vmap(r.text, e, fmt.Sprintf("the client %s is a pod (cluster CIDR %s), which externalTrafficPolicy Local does not apply to", p.Src, cidr.text()))

	case "cluster-nodeports-pods", "cluster-nodeports-remote-pods-mark", "cluster-nodeports-remote-pods":
		// This node's pods (local-pod-cidrs), then those of other nodes
		// (cluster-cidrs), marked for masquerade first.
		local := role == "cluster-nodeports-pods"
		set := setClusterCIDRs
		if local {
			set = setLocalPodCIDRs
		}
		cidr, err := w.srcIn(set)
		if err != nil || cidr == nil {
			return false, err
		}
		if ok, err := w.toNodePort(); err != nil || !ok {
			return false, err
		}
		e, ok, err := w.get(setNodePortsCluster, w.nodePortKey())
		if err != nil || !ok {
			return false, err
		}
		switch {
		case local:
			return w.vmap(r.text, e, fmt.Sprintf("the client %s is a pod of this node (podCIDR %s), which externalTrafficPolicy Local does not apply to", p.Src, cidr.text()))
		case strings.HasSuffix(role, "-mark"):
			w.marked = true
			w.step(chainServices, r.text, e.text(), fmt.Sprintf("the client %s is a pod of another node (cluster CIDR %s): marked 0x%08x for masquerade, so that the endpoint's reply comes back through this node", p.Src, cidr.text(), masqMark))
			return false, nil
		}
		return w.vmap(r.text, e, "a pod is not subject to externalTrafficPolicy Local")

	case "cluster-vips-node-mark", "cluster-vips-node", "cluster-nodeports-node-mark", "cluster-nodeports-node":
		if ok, err := w.fromNode(); err != nil || !ok {
			return false, err
		}
		set, key := setServiceIPsCluster, w.vipKey()
		if strings.HasPrefix(role, "cluster-nodeports") {
			if ok, err := w.toNodePort(); err != nil || !ok {
				return false, err
			}
			set, key = setNodePortsCluster, w.nodePortKey()
		}
		e, ok, err := w.get(set, key)
		if err != nil || !ok {
			return false, err
		}
		if strings.HasSuffix(role, "-mark") {
			w.marked = true
			w.step(chainServices, r.text, e.text(), fmt.Sprintf("the client %s is the node itself: marked 0x%08x for masquerade", p.Src, masqMark))
			return false, nil
		}
		return w.vmap(r.text, e, "the node itself is not subject to externalTrafficPolicy Local")

	case "masq-vips":
		if cidr, err := w.inCIDRs(); err != nil || cidr != nil {
			return false, err
		}
		e, ok, err := w.get(setMasqVIPs, w.vipKey())
		if err != nil || !ok {
			return false, err
		}
		w.marked = true
		w.step(chainServices, r.text, e.text(), fmt.Sprintf("the client %s is outside the cluster CIDRs: marked 0x%08x for masquerade", p.Src, masqMark))
		return false, nil

	case "masq-nodeports":
		if cidr, err := w.inLocalPodCIDRs(); err != nil || cidr != nil {
			return false, err
		}
		if ok, err := w.toNodePort(); err != nil || !ok {
			return false, err
		}
		e, ok, err := w.get(setMasqNodePorts, w.nodePortKey())
		if err != nil || !ok {
			return false, err
		}
		w.marked = true
		who := "outside the cluster CIDRs"
		if cidr, err := w.inCIDRs(); err != nil {
			return false, err
		} else if cidr != nil {
			who = fmt.Sprintf("a pod of another node (cluster CIDR %s), whose endpoint's reply must come back through this node", cidr.text())
		}
		w.step(chainServices, r.text, e.text(), fmt.Sprintf("the client %s is %s: marked 0x%08x for masquerade", p.Src, who, masqMark))
		return false, nil

	case "service-ips", "service-nodeports":
		set, key := setServiceIPs, w.vipKey()
		if role == "service-nodeports" {
			if ok, err := w.toNodePort(); err != nil || !ok {
				return false, err
			}
			set, key = setServiceNodePorts, w.nodePortKey()
		}
		e, ok, err := w.get(set, key)
		if err != nil || !ok {
			return false, err
		}
		return w.vmap(r.text, e, "")

	case "cluster-ips":
		e, ok, err := w.get(setClusterIPs, newKey().addr(p.Dst))
		if err != nil || !ok {
			return false, err
		}
		w.ex.Verdict = VerdictReject
		port := p.protoText()
		if p.hasPorts() {
			port += fmt.Sprintf(" port %d", p.DstPort)
		}
		w.step(chainServices, r.text, e.text(), fmt.Sprintf("%s is a ClusterIP and %s is not one of its service ports: rejected with port unreachable", p.Dst, port))
		return true, nil
	}
	return false, fmt.Errorf("nft: explain: no walk for rule %s of chain %s", r.role, chainServices)
}

// vmap follows the verdict of the service element e that rule matched; why,
// if not empty, starts the step's sentence.
func (w *walker) vmap(rule string, e element, why string) (bool, error) {
	if why != "" {
		why += "; "
	}
	key, _, _ := strings.Cut(e.text(), " : ")
	w.ex.Service = key
	v := expr.Verdict{Kind: -1}
	if e.verdict != nil {
		v = *e.verdict
	}
	c, isCount := parseCountChain(v.Chain)
	switch {
	case v.Kind == expr.VerdictDrop:
		w.ex.Verdict = VerdictDrop
		w.step(chainServices, rule, e.text(), why+"no endpoint of the service port runs on this node and its traffic policy is Local: dropped")
	case v.Kind == expr.VerdictGoto && v.Chain == chainNoEndpoints:
		w.ex.Verdict = VerdictReject
		w.step(chainServices, rule, e.text(), why+"the service port has no endpoints: goto "+chainNoEndpoints)
		w.enter(chainNoEndpoints)
		w.step(chainNoEndpoints, "reject", "", "rejected: the client gets port unreachable (connection refused)")
	case v.Kind == expr.VerdictGoto && isCount && c.fam == w.f.family:
		w.ex.Verdict = VerdictDNAT
		w.step(chainServices, rule, e.text(), fmt.Sprintf("%sthe service port has %s: goto %s", why, plural(c.n, "endpoint"), v.Chain))
		w.enter(v.Chain)
		return true, w.countChain(c)
	default:
		return false, fmt.Errorf("nft: explain: element %s has a verdict the layout never writes", e.text())
	}
	return true, nil
}

// countChain explains endpoint-count chain c: the endpoints it DNATs to,
// and with affinity whether the client is pinned to one.
func (w *walker) countChain(c countChain) error {
	base := w.vipKey
	if c.nodePort {
		base = w.nodePortKey
	}
	backends := make([]netip.AddrPort, c.n)
	elems := make([]string, c.n)
	var found []netip.AddrPort
	var foundElems, missing []string
	for k := range c.n {
		e, _, ok, err := w.src.get(c.backendsSet(), base().slot(uint32(k)).key)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, fmt.Sprint(k))
			continue
		}
		backends[k], elems[k] = decodeBackend(e.val()), e.text()
		found = append(found, backends[k])
		foundElems = append(foundElems, elems[k])
	}
	note := ""
	if len(missing) > 0 {
		note = fmt.Sprintf(" (%s has no element for slot %s: a pick of it finds no endpoint and the packet leaves %s without DNAT)",
			c.backendsSet(), strings.Join(missing, ", "), c.name())
	}
	if c.affinity > 0 {
		aff := w.f.name(setAffinity)
		for k := range c.n {
			if elems[k] == "" {
				continue
			}
			key := newKey().addr(w.p.Src).addr(w.p.Dst).proto(w.p.Proto).port(w.p.DstPort).slot(uint32(k))
			e, expires, ok, err := w.src.get(aff, key.key)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			w.ex.Backends = []netip.AddrPort{backends[k]}
			w.step(c.name(), affinityRule(c, k, false).text, e.text()+", "+elems[k], fmt.Sprintf(
				"the client %s is pinned to slot %d by %s (expires in %s): DNAT to %s, of the endpoints %s%s",
				w.p.Src, k, aff, expires.Round(time.Second), backends[k], addrPorts(found), note))
			return nil
		}
		w.ex.Backends = found
		w.step(c.name(), affinityRule(c, 0, true).text, strings.Join(foundElems, ", "), fmt.Sprintf(
			"no %s element pins the client %s: DNAT to %s, recorded in %s for %s%s",
			aff, w.p.Src, pickText(found), aff, timeoutText(c.affinity), note))
		return nil
	}
	w.ex.Backends = found
	w.step(c.name(), countChainRule(c).text, strings.Join(foundElems, ", "), "DNAT to "+pickText(found)+note)
	return nil
}

// hasPorts reports whether p's protocol has the ports the table's keys use
// (`th dport`).
func (p Packet) hasPorts() bool {
	return p.Proto == unix.IPPROTO_TCP || p.Proto == unix.IPPROTO_UDP || p.Proto == unix.IPPROTO_SCTP
}

func (p Packet) protoText() string {
	switch p.Proto {
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	if p.hasPorts() {
		return protoName(p.Proto)
	}
	return fmt.Sprintf("protocol %d", p.Proto)
}

// dstText is Dst with its port, for protocols with ports.
func (p Packet) dstText() string {
	if p.hasPorts() {
		return netip.AddrPortFrom(p.Dst, p.DstPort).String()
	}
	return p.Dst.String()
}

// decodeBackend reads a backends map value: address . port.
func decodeBackend(val []byte) netip.AddrPort {
	n := len(val) - 4
	a, _ := netip.AddrFromSlice(val[:n])
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(val[n:]))
}

func pickText(bs []netip.AddrPort) string {
	if len(bs) == 1 {
		return "the only endpoint " + bs[0].String()
	}
	return fmt.Sprintf("one of the %d endpoints, picked at random: %s", len(bs), addrPorts(bs))
}

func addrPorts(bs []netip.AddrPort) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.String()
	}
	return strings.Join(s, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
