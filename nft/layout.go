package nft

import (
	"fmt"

	"github.com/google/nftables"
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
	layoutVersion = 1

	setClusterCIDRs4 = "cluster-cidrs-v4"
	setClusterCIDRs6 = "cluster-cidrs-v6"
	setNodeIPs4      = "node-ips-v4"
	setNodeIPs6      = "node-ips-v6"

	chainPostrouting = "postrouting"
)

// setSpec describes one named set of the table.
type setSpec struct {
	name     string
	keyType  nftables.SetDatatype
	interval bool // holds prefixes (desired.prefixes), else addresses (desired.addrs)
}

// setSpecs lists the sets in the order they are created, which is the order
// `nft list table` prints them.
var setSpecs = []setSpec{
	{name: setClusterCIDRs4, keyType: nftables.TypeIPAddr, interval: true},
	{name: setClusterCIDRs6, keyType: nftables.TypeIP6Addr, interval: true},
	{name: setNodeIPs4, keyType: nftables.TypeIPAddr},
	{name: setNodeIPs6, keyType: nftables.TypeIP6Addr},
}

// newSet returns the set for spec, to be added to table.
func (spec setSpec) newSet(table *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: table, Name: spec.name, KeyType: spec.keyType, Interval: spec.interval}
}

// chainSpec describes the one base chain: type nat hook postrouting priority
// srcnat; policy accept.
var chainSpec = nftables.Chain{
	Name:     chainPostrouting,
	Type:     nftables.ChainTypeNAT,
	Hooknum:  nftables.ChainHookPostrouting,
	Priority: nftables.ChainPriorityNATSource,
	Policy:   ptr(nftables.ChainPolicyAccept),
}

func ptr[T any](v T) *T { return &v }

// ruleSpec describes one rule of the postrouting chain.
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
