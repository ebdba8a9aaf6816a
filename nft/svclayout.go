package nft

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Service load balancing. Every service, port and endpoint is an element of the
// sets and maps below; the rules never change with the services:
//
//	chain services (from the nat prerouting and output hooks):
//	  drop LoadBalancer traffic from outside loadBalancerSourceRanges;
//	  mark for masquerade traffic from outside the cluster CIDRs to a VIP port,
//	  and traffic from anywhere but this node's own pods to a NodePort (a pod of
//	  another node included: the endpoint's reply must come back through this
//	  node to be un-DNATed), except externalTrafficPolicy Local VIPs and NodePorts
//	  (whose clients inside the cluster still reach every endpoint: pods of
//	  another node and the node itself masqueraded, this node's pods not);
//	  VIP . proto . port vmap @service-ips → goto lb-<n> | goto no-endpoints | drop;
//	  any other port of a ClusterIP → reject;
//	  local address (not loopback) proto . port vmap @service-nodeports → goto np-<n> | …
//	chain lb-v4-<n>: dnat to VIP . proto . port . (numgen random mod n) map @backends
//
// There is one lb and one np chain per endpoint count in use, whatever the number
// of services, so a change of endpoints is an element diff: a service going from
// 3 to 4 endpoints swaps its vmap element from lb-v4-3 to lb-v4-4 and adds a
// backend element, in one batch.
const (
	setClusterCIDRs     = "cluster-cidrs"     // the -v4/-v6 interval sets of the masquerade
	setLocalPodCIDRs    = "local-pod-cidrs"   // this node's podCIDRs: NodePort clients that keep their address
	setServiceIPs       = "service-ips"       // VIP . proto . port : verdict
	setServiceNodePorts = "service-nodeports" // proto . port : verdict
	setClusterIPs       = "cluster-ips"       // ClusterIPs: unknown ports are rejected
	setBackends         = "backends"          // VIP . proto . port . slot : endpoint . port
	setNPBackends       = "nodeport-backends" // proto . nodePort . slot : endpoint . port
	// For externalTrafficPolicy Local VIP ports and NodePorts, the verdicts
	// and endpoints of clients inside the cluster, who get every endpoint.
	setServiceIPsCluster = "service-ips-cluster"       // VIP . proto . port : verdict
	setNodePortsCluster  = "service-nodeports-cluster" // proto . port : verdict
	setMasqVIPs          = "masq-vips"                 // VIP ports whose outside clients are masqueraded
	setMasqNodePorts     = "masq-nodeports"            // NodePorts whose outside clients are masqueraded
	setLBRestricted      = "lb-restricted"             // LoadBalancer VIP ports with source ranges
	setLBSourceRanges    = "lb-source-ranges"          // LB VIP . proto . port . allowed client prefix
	setHairpin           = "hairpin"                   // endpoint . endpoint: a pod reaching itself
	setAffinity          = "affinity"                  // client . VIP . proto . port . slot, added by packets

	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainServices    = "services"
	chainNoEndpoints = "no-endpoints"

	// affinitySize bounds the affinity sets: clients × affinity VIP ports
	// remembered at once, per family (the kernel's default for a dynamic set
	// is 65535). A full set only costs affinity: see countChainRules.
	affinitySize = 1 << 18

	// masqMark is the packet mark bit that asks postrouting to masquerade: the
	// same bit kube-proxy uses for the same purpose.
	masqMark = 0x00004000
)

// svcSetSpecs returns the service sets of family f.
func svcSetSpecs(f family) []setSpec {
	ip, ipName := nftables.TypeIPAddr, "ipv4_addr"
	if !f.v4 {
		ip, ipName = nftables.TypeIP6Addr, "ipv6_addr"
	}
	vipPort := nftables.MustConcatSetType(ip, nftables.TypeInetProto, nftables.TypeInetService)
	protoPort := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	endpoint := nftables.MustConcatSetType(ip, nftables.TypeInetService)
	return []setSpec{
		{name: f.name(setServiceIPs), keyType: vipPort, dataType: &nftables.TypeVerdict, svc: true,
			typeText: ipName + " . inet_proto . inet_service : verdict"},
		{name: f.name(setServiceNodePorts), keyType: protoPort, dataType: &nftables.TypeVerdict, svc: true,
			typeText: "inet_proto . inet_service : verdict"},
		{name: f.name(setClusterIPs), keyType: ip, svc: true, typeText: ipName},
		{name: f.name(setBackends), keyType: nftables.MustConcatSetType(ip, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			dataType: &endpoint, svc: true,
			typeText: ipName + " . inet_proto . inet_service . mark : " + ipName + " . inet_service"},
		{name: f.name(setNPBackends), keyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			dataType: &endpoint, svc: true,
			typeText: "inet_proto . inet_service . mark : " + ipName + " . inet_service"},
		{name: f.name(setServiceIPsCluster), keyType: vipPort, dataType: &nftables.TypeVerdict, svc: true,
			typeText: ipName + " . inet_proto . inet_service : verdict"},
		{name: f.name(setNodePortsCluster), keyType: protoPort, dataType: &nftables.TypeVerdict, svc: true,
			typeText: "inet_proto . inet_service : verdict"},
		{name: f.name(setBackends + "-cluster"), keyType: nftables.MustConcatSetType(ip, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			dataType: &endpoint, svc: true,
			typeText: ipName + " . inet_proto . inet_service . mark : " + ipName + " . inet_service"},
		{name: f.name(setNPBackends + "-cluster"), keyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			dataType: &endpoint, svc: true,
			typeText: "inet_proto . inet_service . mark : " + ipName + " . inet_service"},
		{name: f.name(setMasqVIPs), keyType: vipPort, svc: true, typeText: ipName + " . inet_proto . inet_service"},
		{name: f.name(setMasqNodePorts), keyType: protoPort, svc: true, typeText: "inet_proto . inet_service"},
		{name: f.name(setLBRestricted), keyType: vipPort, svc: true, typeText: ipName + " . inet_proto . inet_service"},
		{name: f.name(setLBSourceRanges), keyType: nftables.MustConcatSetType(ip, nftables.TypeInetProto, nftables.TypeInetService, ip),
			interval: true, svc: true, typeText: ipName + " . inet_proto . inet_service . " + ipName},
		{name: f.name(setHairpin), keyType: nftables.MustConcatSetType(ip, ip), svc: true, typeText: ipName + " . " + ipName},
		{name: f.name(setAffinity), keyType: nftables.MustConcatSetType(ip, ip, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			svc: true, dynamic: true, size: affinitySize, typeText: ipName + " . " + ipName + " . inet_proto . inet_service . mark"},
	}
}

// Registers: nft numbers the first 16-byte register 1 and the 4-byte registers
// that follow it 9, 10, …; a value of n bytes takes ceil(n/4) of them.
const reg1 = 1

// regs lays out a concatenation starting at register 1: it returns the register
// of each field, given their sizes in bytes.
func regs(sizes ...int) []uint32 {
	out := make([]uint32, len(sizes))
	unit := 0 // 4-byte units used so far
	for i, n := range sizes {
		if unit == 0 {
			out[i] = reg1
		} else {
			out[i] = uint32(8 + unit)
		}
		unit += (n + 3) / 4
	}
	return out
}

// fam holds the payload offsets and sizes of one family's network header.
type fam struct {
	family
	nfproto        byte
	addrLen        uint32
	saddr, daddr   uint32
	ipText         string // "ip" or "ip6"
	loopback       []byte // the loopback prefix's first bytes…
	loopbackText   string
	rejectType     uint32
	rejectCode     uint8
	rejectCodeText string
}

func famOf(f family) fam {
	if f.v4 {
		return fam{family: f, nfproto: unix.NFPROTO_IPV4, addrLen: 4, saddr: 12, daddr: 16, ipText: "ip",
			loopback: []byte{127}, loopbackText: "127.0.0.0/8",
			rejectType: unix.NFT_REJECT_ICMP_UNREACH, rejectCode: 3, rejectCodeText: "icmp port-unreachable"}
	}
	return fam{family: f, nfproto: unix.NFPROTO_IPV6, addrLen: 16, saddr: 8, daddr: 24, ipText: "ip6",
		loopback: append(make([]byte, 15), 1), loopbackText: "::1",
		rejectType: unix.NFT_REJECT_ICMP_UNREACH, rejectCode: 4, rejectCodeText: "icmpv6 port-unreachable"}
}

func (f fam) isFamily() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto}},
	}
}

func (f fam) load(off uint32, reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen}
}

// vipPortKey loads daddr . meta l4proto . th dport from register 1 on.
func (f fam) vipPortKey() []expr.Any {
	r := regs(int(f.addrLen), 1, 2)
	return []expr.Any{
		f.load(f.daddr, r[0]),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[1]},
		&expr.Payload{DestRegister: r[2], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

func lookup(set *nftables.Set, invert bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID, Invert: invert}
}

func vmap(set *nftables.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: set.Name, SetID: set.ID}
}

// setMasqMark is `meta mark set meta mark | 0x00004000`.
func setMasqMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(masqMark)), Xor: binaryutil.NativeEndian.PutUint32(masqMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// notLoopbackLocal is `ip daddr != 127.0.0.0/8 fib daddr type local`.
func (f fam) notLoopbackLocal() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: uint32(len(f.loopback))},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: f.loopback},
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// localSource is `fib saddr type local`: the node itself sent the packet.
func localSource() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// protoPortKey loads meta l4proto . th dport from register 1 on.
func protoPortKey() []expr.Any {
	r := regs(1, 2)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[0]},
		&expr.Payload{DestRegister: r[1], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// serviceRules are the rules of chain services for family f.
func serviceRules(f fam) []ruleSpec {
	ip := f.ipText
	vipPort := ip + " daddr . meta l4proto . th dport"
	return []ruleSpec{
		{
			role: "lb-source-ranges-" + f.suffix,
			text: fmt.Sprintf("%s @%s %s . %s saddr != @%s drop", vipPort, f.name(setLBRestricted), vipPort, ip, f.name(setLBSourceRanges)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				r := regs(int(f.addrLen), 1, 2, int(f.addrLen))
				// ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
				return concat(f.isFamily(), f.vipPortKey(), []expr.Any{
					lookup(sets[f.name(setLBRestricted)], false),
					f.load(f.daddr, r[0]),
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[1]},
					&expr.Byteorder{SourceRegister: r[1], DestRegister: r[1], Op: expr.ByteorderHton, Len: 1, Size: 2},
					&expr.Payload{DestRegister: r[2], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					f.load(f.saddr, r[3]),
					lookup(sets[f.name(setLBSourceRanges)], true),
					&expr.Verdict{Kind: expr.VerdictDrop},
				})
			},
		},
		{
			role: "cluster-vips-pods-" + f.suffix,
			text: fmt.Sprintf("%s saddr @%s %s vmap @%s", ip, f.name(setClusterCIDRs), vipPort, f.name(setServiceIPsCluster)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr @cluster-cidrs-v4 ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setClusterCIDRs)], false)},
					f.vipPortKey(), []expr.Any{vmap(sets[f.name(setServiceIPsCluster)])})
			},
		},
		{
			role: "cluster-vips-node-mark-" + f.suffix,
			text: fmt.Sprintf("fib saddr type local %s @%s meta mark set meta mark | 0x%08x", vipPort, f.name(setServiceIPsCluster), masqMark),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// fib saddr type local ip daddr . meta l4proto . th dport @service-ips-cluster-v4 meta mark set meta mark | 0x00004000
				return concat(f.isFamily(), localSource(), f.vipPortKey(), []expr.Any{lookup(sets[f.name(setServiceIPsCluster)], false)}, setMasqMark())
			},
		},
		{
			role: "cluster-vips-node-" + f.suffix,
			text: fmt.Sprintf("fib saddr type local %s vmap @%s", vipPort, f.name(setServiceIPsCluster)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// fib saddr type local ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
				return concat(f.isFamily(), localSource(), f.vipPortKey(), []expr.Any{vmap(sets[f.name(setServiceIPsCluster)])})
			},
		},
		{
			role: "masq-vips-" + f.suffix,
			text: fmt.Sprintf("%s saddr != @%s %s @%s meta mark set meta mark | 0x%08x", ip, f.name(setClusterCIDRs), vipPort, f.name(setMasqVIPs), masqMark),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setClusterCIDRs)], true)},
					f.vipPortKey(), []expr.Any{lookup(sets[f.name(setMasqVIPs)], false)}, setMasqMark())
			},
		},
		{
			role: "service-ips-" + f.suffix,
			text: fmt.Sprintf("%s vmap @%s", vipPort, f.name(setServiceIPs)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip daddr . meta l4proto . th dport vmap @service-ips-v4
				return concat(f.isFamily(), f.vipPortKey(), []expr.Any{vmap(sets[f.name(setServiceIPs)])})
			},
		},
		{
			role: "cluster-ips-" + f.suffix,
			text: fmt.Sprintf("%s daddr @%s reject with %s", ip, f.name(setClusterIPs), f.rejectCodeText),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip daddr @cluster-ips-v4 reject with icmp port-unreachable
				return concat(f.isFamily(), []expr.Any{f.load(f.daddr, reg1), lookup(sets[f.name(setClusterIPs)], false),
					&expr.Reject{Type: f.rejectType, Code: f.rejectCode}})
			},
		},
		{
			role: "cluster-nodeports-pods-" + f.suffix,
			text: fmt.Sprintf("%s saddr @%s %s daddr != %s fib daddr type local meta l4proto . th dport vmap @%s",
				ip, f.name(setLocalPodCIDRs), ip, f.loopbackText, f.name(setNodePortsCluster)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setLocalPodCIDRs)], false)},
					f.notLoopbackLocal(), protoPortKey(), []expr.Any{vmap(sets[f.name(setNodePortsCluster)])})
			},
		},
		{
			role: "cluster-nodeports-remote-pods-mark-" + f.suffix,
			text: fmt.Sprintf("%s saddr @%s %s daddr != %s fib daddr type local meta l4proto . th dport @%s meta mark set meta mark | 0x%08x",
				ip, f.name(setClusterCIDRs), ip, f.loopbackText, f.name(setNodePortsCluster), masqMark),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setClusterCIDRs)], false)},
					f.notLoopbackLocal(), protoPortKey(), []expr.Any{lookup(sets[f.name(setNodePortsCluster)], false)}, setMasqMark())
			},
		},
		{
			role: "cluster-nodeports-remote-pods-" + f.suffix,
			text: fmt.Sprintf("%s saddr @%s %s daddr != %s fib daddr type local meta l4proto . th dport vmap @%s",
				ip, f.name(setClusterCIDRs), ip, f.loopbackText, f.name(setNodePortsCluster)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setClusterCIDRs)], false)},
					f.notLoopbackLocal(), protoPortKey(), []expr.Any{vmap(sets[f.name(setNodePortsCluster)])})
			},
		},
		{
			role: "cluster-nodeports-node-mark-" + f.suffix,
			text: fmt.Sprintf("fib saddr type local %s daddr != %s fib daddr type local meta l4proto . th dport @%s meta mark set meta mark | 0x%08x",
				ip, f.loopbackText, f.name(setNodePortsCluster), masqMark),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
				return concat(f.isFamily(), localSource(), f.notLoopbackLocal(), protoPortKey(),
					[]expr.Any{lookup(sets[f.name(setNodePortsCluster)], false)}, setMasqMark())
			},
		},
		{
			role: "cluster-nodeports-node-" + f.suffix,
			text: fmt.Sprintf("fib saddr type local %s daddr != %s fib daddr type local meta l4proto . th dport vmap @%s",
				ip, f.loopbackText, f.name(setNodePortsCluster)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
				return concat(f.isFamily(), localSource(), f.notLoopbackLocal(), protoPortKey(), []expr.Any{vmap(sets[f.name(setNodePortsCluster)])})
			},
		},
		{
			role: "masq-nodeports-" + f.suffix,
			text: fmt.Sprintf("%s saddr != @%s %s daddr != %s fib daddr type local meta l4proto . th dport @%s meta mark set meta mark | 0x%08x",
				ip, f.name(setLocalPodCIDRs), ip, f.loopbackText, f.name(setMasqNodePorts), masqMark),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip saddr != @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @masq-nodeports-v4 meta mark set meta mark | 0x00004000
				return concat(f.isFamily(), []expr.Any{f.load(f.saddr, reg1), lookup(sets[f.name(setLocalPodCIDRs)], true)},
					f.notLoopbackLocal(), protoPortKey(), []expr.Any{lookup(sets[f.name(setMasqNodePorts)], false)}, setMasqMark())
			},
		},
		{
			role: "service-nodeports-" + f.suffix,
			text: fmt.Sprintf("%s daddr != %s fib daddr type local meta l4proto . th dport vmap @%s", ip, f.loopbackText, f.name(setServiceNodePorts)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				// ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
				return concat(f.isFamily(), f.notLoopbackLocal(), protoPortKey(), []expr.Any{vmap(sets[f.name(setServiceNodePorts)])})
			},
		},
	}
}

// countChainRules are the rules of an endpoint-count chain. Without affinity,
// one rule picks a slot at random and DNATs to its endpoint. With affinity,
// for each slot k a rule looks up client . VIP . proto . port . k in the
// affinity set and, if a new connection of the client picked slot k less than
// the timeout ago, refreshes the element and DNATs to slot k; then, as
// iptables' statistic cascades do, the rule for slot k picks it with
// probability 1/(n-k) (the last one always), records it and DNATs to it.
//
// Keeping slots, not endpoints, lets every expression be one that nft can
// list: a set lookup whose key is loaded from the packet, with the constant k
// written as `numgen inc mod 1 offset k` (always k). nft 1.0.6 cannot list a
// rule that feeds a map lookup's result into another lookup or a set update;
// `nft list` aborts on one. The price: a client whose slot now holds another
// endpoint (the endpoint list changed) moves with its slot, and a slot past the
// endpoint count is never looked up, so the client picks again.
//
// Registers: the affinity key fills them from register 1 on, with the slot
// last; the backends key (VIP . proto . port . slot, or proto . port . slot) is
// a tail of it.
func countChainRules(c countChain) []ruleSpec {
	if c.affinity == 0 {
		return []ruleSpec{countChainRule(c)}
	}
	var rules []ruleSpec
	for k := range c.n {
		rules = append(rules, affinityRule(c, k, false))
	}
	for k := range c.n {
		rules = append(rules, affinityRule(c, k, true))
	}
	// If the affinity set is full, the updates fail and so do the rules
	// above: the connection is still balanced, without affinity.
	return append(rules, countChainRule(c))
}

// affinityRule is the rule of affinity chain c for slot k that finds a
// client's earlier choice, or with pick, makes a new one.
func affinityRule(c countChain, k int, pick bool) ruleSpec {
	f := famOf(c.fam)
	a := f.addrLen / 4 // registers per address
	r := regs(int(f.addrLen), int(f.addrLen), 1, 2, 4)
	slot := "numgen inc mod 1" // nft leaves out offset 0
	if k > 0 {
		slot += fmt.Sprintf(" offset %d", k)
	}
	key := fmt.Sprintf("%s saddr . %s daddr . meta l4proto . th dport . %s", f.ipText, f.ipText, slot)
	aff := f.name(setAffinity)
	backendsReg, backends, backendsKey := 8+a, c.backendsSet(), fmt.Sprintf("%s daddr . meta l4proto . th dport", f.ipText)
	if c.nodePort {
		backendsReg, backendsKey = 8+2*a, "meta l4proto . th dport"
	}
	action := fmt.Sprintf("update @%s { %s timeout %s } dnat %s to %s . %s map @%s",
		aff, key, timeoutText(c.affinity), f.ipText, backendsKey, slot, backends)
	role, cond := fmt.Sprintf("%s/%d", c.name(), k), key+" @"+aff+" "
	if pick {
		role, cond = fmt.Sprintf("%s/pick-%d", c.name(), k), fmt.Sprintf("numgen random mod %d 0 ", c.n-k)
		if k == c.n-1 {
			cond = ""
		}
	}
	return ruleSpec{
		role: role,
		text: cond + action,
		exprs: func(sets map[string]*nftables.Set) []expr.Any {
			var out []expr.Any
			if pick && k < c.n-1 {
				// numgen random mod <n-k> 0
				out = []expr.Any{
					&expr.Numgen{Register: reg1, Modulus: uint32(c.n - k), Type: unix.NFT_NG_RANDOM},
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: make([]byte, 4)},
				}
			}
			// ip saddr . ip daddr . meta l4proto . th dport . numgen inc mod 1 offset <k>
			out = append(out, f.isFamily()...)
			out = append(out,
				f.load(f.saddr, r[0]),
				f.load(f.daddr, r[1]),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[2]},
				&expr.Payload{DestRegister: r[3], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Numgen{Register: r[4], Modulus: 1, Offset: uint32(k), Type: unix.NFT_NG_INCREMENTAL},
			)
			set := sets[aff]
			if !pick {
				out = append(out, &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID})
			}
			// update @affinity-v4 { <key> timeout <t> } dnat ip to <backends key> . <slot> map @backends-v4
			return append(out,
				&expr.Dynset{SrcRegKey: reg1, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: time.Duration(c.affinity) * time.Second,
					SetName: set.Name, SetID: set.ID},
				&expr.Lookup{SourceRegister: backendsReg, DestRegister: reg1, IsDestRegSet: true, SetName: backends, SetID: sets[backends].ID},
				dnat(f),
			)
		},
	}
}

// timeoutText prints a timeout in seconds as nft does: 3h, 1h30m, 10s.
func timeoutText(secs uint32) string {
	var b strings.Builder
	for _, u := range []struct {
		n    uint32
		unit string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if secs >= u.n {
			fmt.Fprintf(&b, "%d%s", secs/u.n, u.unit)
			secs %= u.n
		}
	}
	return b.String()
}

// countChainRule is the rule that picks one of the chain's endpoints at random.
func countChainRule(c countChain) ruleSpec {
	f := famOf(c.fam)
	if c.nodePort {
		return ruleSpec{
			role: c.name(),
			text: fmt.Sprintf("dnat %s to meta l4proto . th dport . numgen random mod %d map @%s", f.ipText, c.n, c.backendsSet()),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				r := regs(1, 2, 4)
				// dnat ip to meta l4proto . th dport . numgen random mod 3 map @nodeport-backends-v4
				return []expr.Any{
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[0]},
					&expr.Payload{DestRegister: r[1], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Numgen{Register: r[2], Modulus: uint32(c.n), Type: unix.NFT_NG_RANDOM},
					&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: c.backendsSet(), SetID: sets[c.backendsSet()].ID},
					dnat(f),
				}
			},
		}
	}
	return ruleSpec{
		role: c.name(),
		text: fmt.Sprintf("dnat %s to %s daddr . meta l4proto . th dport . numgen random mod %d map @%s", f.ipText, f.ipText, c.n, c.backendsSet()),
		exprs: func(sets map[string]*nftables.Set) []expr.Any {
			r := regs(int(f.addrLen), 1, 2, 4)
			// dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3 map @backends-v4
			return concat(f.isFamily(), []expr.Any{
				f.load(f.daddr, r[0]),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r[1]},
				&expr.Payload{DestRegister: r[2], Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Numgen{Register: r[3], Modulus: uint32(c.n), Type: unix.NFT_NG_RANDOM},
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: c.backendsSet(), SetID: sets[c.backendsSet()].ID},
				dnat(f),
			})
		},
	}
}

// dnat is `dnat ip to <address in register 1> : <port in the register after it>`.
func dnat(f fam) expr.Any {
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto), RegAddrMin: reg1, RegProtoMin: regs(int(f.addrLen), 2)[1]}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
