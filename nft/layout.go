package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The fixed part of the table: its name, sets, chain and rules. Rules never change
// at run time; what changes lives in the sets. Any change to this file must bump
// layoutVersion, so that Sync replaces tables written by older versions.
const (
	// TableName is the table podnet owns, in the inet family. podnet never
	// touches any other table.
	TableName = "podnet"

	// layoutVersion tags every rule (see ruleTag). Bump it whenever a set, the
	// chain or a rule changes.
	layoutVersion = 8

	setClusterCIDRs4 = "cluster-cidrs-v4"
	setClusterCIDRs6 = "cluster-cidrs-v6"
	setNodeIPs4      = "node-ips-v4"
	setNodeIPs6      = "node-ips-v6"
	// This node's own podCIDRs: a NodePort client from them is one of the
	// node's pods, whose replies come back through the node.
	setLocalPodCIDRs4 = "local-pod-cidrs-v4"
	setLocalPodCIDRs6 = "local-pod-cidrs-v6"

	chainPostrouting = "postrouting"
)

// setSpec describes one named set or map of the table.
type setSpec struct {
	name     string
	keyType  nftables.SetDatatype
	interval bool // holds prefixes (desired.prefixes), else addresses (desired.addrs)
	// Service sets: their elements come from svcDesired.
	svc bool
	// HostPort sets: their elements come from desired.hostPorts.
	hostPort bool
	dataType *nftables.SetDatatype // a map: its data type (TypeVerdict for a verdict map)
	typeText string                // the type line nft lists
	// dynamic: packets add the elements, with timeouts; Sync never lists or
	// changes them.
	dynamic bool
	size    uint32 // the set's maximum number of elements; 0: no limit
}

// setSpecs lists the sets in the order they are created, which is the order
// `nft list table` prints them.
var setSpecs = slices.Concat([]setSpec{
	{name: setClusterCIDRs4, keyType: nftables.TypeIPAddr, interval: true},
	{name: setClusterCIDRs6, keyType: nftables.TypeIP6Addr, interval: true},
	{name: setNodeIPs4, keyType: nftables.TypeIPAddr},
	{name: setNodeIPs6, keyType: nftables.TypeIP6Addr},
	{name: setLocalPodCIDRs4, keyType: nftables.TypeIPAddr, interval: true},
	{name: setLocalPodCIDRs6, keyType: nftables.TypeIP6Addr, interval: true},
}, svcSetSpecs(families[0]), svcSetSpecs(families[1]), hostPortSetSpecs(families[0]), hostPortSetSpecs(families[1]))

// typed reports whether the set is described by typeText (a concatenation or
// a map), rather than by its key type's name.
func (spec setSpec) typed() bool { return spec.svc || spec.hostPort }

// newSet returns the set for spec, to be added to table.
func (spec setSpec) newSet(table *nftables.Table) *nftables.Set {
	s := &nftables.Set{Table: table, Name: spec.name, KeyType: spec.keyType, Interval: spec.interval}
	if spec.typed() {
		// NFT_SET_CONCAT makes the kernel pick its pipapo backend, which an
		// interval of concatenations needs; for exact keys it would only cost
		// (pipapo copies its lookup tables at each transaction that changes
		// the set: milliseconds at 200k elements). Without it an exact
		// concatenated key goes to a hash table, as with nft.
		s.Concatenation = spec.interval && strings.Contains(spec.keyType.Name, " . ")
		if spec.dataType != nil {
			s.IsMap, s.DataType = true, *spec.dataType
		}
		s.Dynamic, s.HasTimeout, s.Size = spec.dynamic, spec.dynamic, spec.size
	}
	return s
}

// chainDef describes one chain of the fixed layout and its rules.
type chainDef struct {
	chain  nftables.Chain // Hooknum nil: a regular chain
	header string         // the base chain's "type … policy …;" line as nft lists it
	rules  func() []ruleSpec
}

// chainDefs lists the fixed chains in the order they are created and listed.
var chainDefs = []chainDef{
	{
		chain: nftables.Chain{Name: chainPrerouting, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityNATDest, Policy: ptr(nftables.ChainPolicyAccept)},
		header: "type nat hook prerouting priority dstnat; policy accept;",
		rules:  func() []ruleSpec { return []ruleSpec{jumpServices("prerouting"), jumpHostPorts("prerouting")} },
	},
	{
		chain: nftables.Chain{Name: chainOutput, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput,
			Priority: nftables.ChainPriorityNATDest, Policy: ptr(nftables.ChainPolicyAccept)},
		header: "type nat hook output priority -100; policy accept;",
		rules:  func() []ruleSpec { return []ruleSpec{jumpServices("output"), jumpHostPorts("output")} },
	},
	{
		chain: nftables.Chain{Name: chainPostrouting, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource, Policy: ptr(nftables.ChainPolicyAccept)},
		header: "type nat hook postrouting priority srcnat; policy accept;",
		rules:  func() []ruleSpec { return postroutingRules },
	},
	{
		chain: nftables.Chain{Name: chainServices},
		rules: func() []ruleSpec {
			return slices.Concat(serviceRules(famOf(families[0])), serviceRules(famOf(families[1])))
		},
	},
	{
		chain: nftables.Chain{Name: chainNoEndpoints},
		rules: func() []ruleSpec {
			return []ruleSpec{{role: "no-endpoints", text: "reject", exprs: func(map[string]*nftables.Set) []expr.Any {
				// reject
				return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}
			}}}
		},
	},
	{
		chain: nftables.Chain{Name: chainHostPorts},
		rules: func() []ruleSpec {
			return slices.Concat(hostPortRules(famOf(families[0])), hostPortRules(famOf(families[1])))
		},
	},
}

func jumpServices(from string) ruleSpec {
	return ruleSpec{role: from + "-services", text: "jump " + chainServices, exprs: func(map[string]*nftables.Set) []expr.Any {
		// jump services
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainServices}}
	}}
}

func ptr[T any](v T) *T { return &v }

// ctStatusDNAT is conntrack's IPS_DST_NAT status bit.
const ctStatusDNAT = 1 << 5

// ruleSpec describes one rule.
type ruleSpec struct {
	role  string                                         // names the rule in its tag
	text  string                                         // the rule as `nft list` prints it
	exprs func(sets map[string]*nftables.Set) []expr.Any // its expressions
}

// postroutingRules masquerade traffic from pods that leaves the cluster: pods
// reach every pod and every node with their own address.
var postroutingRules = []ruleSpec{
	{
		role: "masquerade-ipv4",
		text: "ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random",
		exprs: func(sets map[string]*nftables.Set) []expr.Any {
			cidrs, nodes := sets[setClusterCIDRs4], sets[setNodeIPs4]
			// ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: cidrs.Name, SetID: cidrs.ID},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: cidrs.Name, SetID: cidrs.ID, Invert: true},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID, Invert: true},
				&expr.Masq{FullyRandom: true},
			}
		},
	},
	{
		role: "masquerade-ipv6",
		text: "ip6 saddr @cluster-cidrs-v6 ip6 daddr != @cluster-cidrs-v6 ip6 daddr != @node-ips-v6 masquerade fully-random",
		exprs: func(sets map[string]*nftables.Set) []expr.Any {
			cidrs, nodes := sets[setClusterCIDRs6], sets[setNodeIPs6]
			// ip6 saddr @cluster-cidrs-v6 ip6 daddr != @cluster-cidrs-v6 ip6 daddr != @node-ips-v6 masquerade fully-random
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
				&expr.Lookup{SourceRegister: 1, SetName: cidrs.Name, SetID: cidrs.ID},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
				&expr.Lookup{SourceRegister: 1, SetName: cidrs.Name, SetID: cidrs.ID, Invert: true},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
				&expr.Lookup{SourceRegister: 1, SetName: nodes.Name, SetID: nodes.ID, Invert: true},
				&expr.Masq{FullyRandom: true},
			}
		},
	},
	{
		role: "masquerade-marked",
		text: fmt.Sprintf("meta mark & 0x%08x == 0x%08x masquerade fully-random", masqMark, masqMark),
		exprs: func(map[string]*nftables.Set) []expr.Any {
			// meta mark & 0x00004000 == 0x00004000 masquerade fully-random
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(masqMark), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(masqMark)},
				&expr.Masq{FullyRandom: true},
			}
		},
	},
	hairpinRule(famOf(families[0]), setHairpin),
	hairpinRule(famOf(families[1]), setHairpin),
	hairpinRule(famOf(families[0]), setHostPortHairpin),
	hairpinRule(famOf(families[1]), setHostPortHairpin),
}

// hairpinRule masquerades a pod that reached itself through a service (set
// hairpin) or through its own hostPort (set hostport-hairpin), so that it
// sees the reply come from another address than its own.
func hairpinRule(f fam, set string) ruleSpec {
	return ruleSpec{
		role: f.name(set),
		text: fmt.Sprintf("ct status dnat %s saddr . %s daddr @%s masquerade fully-random", f.ipText, f.ipText, f.name(set)),
		exprs: func(sets map[string]*nftables.Set) []expr.Any {
			r := regs(int(f.addrLen), int(f.addrLen))
			// ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random
			return concat([]expr.Any{
				&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(ctStatusDNAT), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
			}, f.isFamily(), []expr.Any{
				f.load(f.saddr, r[0]),
				f.load(f.daddr, r[1]),
				lookup(sets[f.name(set)], false),
				&expr.Masq{FullyRandom: true},
			})
		},
	}
}

// udataTypeTag is the userdata TLV type that carries podnet's rule tag. nft reads
// only the comment TLV (type 0) of a rule's userdata and skips other types, so the
// tag never shows in `nft list` (nftables src/netlink_delinearize.c,
// parse_rule_udata_cb); iptables-nft uses type 1. A type far above both avoids
// clashing with types nft may define later.
const udataTypeTag userdata.Type = 0xc0

// ruleTag returns the UserData of the rule with the given role: a TLV naming
// podnet, the role and layoutVersion. Sync keeps a table only if its rules carry
// exactly the tags this version writes.
func ruleTag(role string) []byte {
	return userdata.AppendString(nil, udataTypeTag, fmt.Sprintf("podnet %s v%d", role, layoutVersion))
}
