package nft

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// HostPorts: a pod's CNI portMappings (Kubernetes hostPort), each an element
// of a map, the rules fixed:
//
//	chain hostports (from prerouting and output, after services):
//	  loopback source → nothing (see below);
//	  local address . proto . port map @hostports → DNAT to pod . port;
//	  local address, proto . port map @hostports-any → DNAT to pod . port
//	chain postrouting:
//	  ct status dnat pod . pod @hostport-hairpin → masquerade (a pod reaching
//	  its own hostPort)
//
// As the reference portmap plugin (containernetworking/plugins,
// plugins/meta/portmap) does, the mapping answers on local destinations only
// (`fib daddr type local`), for traffic arriving at the node and traffic the
// node sends, and only the hairpin is masqueraded: every other client keeps
// its address, since the pod's reply goes back through this node anyway. A
// connection from a loopback source is not translated: after the DNAT its
// packets would leave the node with source 127.0.0.1 (or ::1), which the
// kernel drops unless route_localnet is set on the bridge, and podnet does
// not set it (it would let pods reach the node's loopback services,
// CVE-2020-8558). A client on the node that uses a loopback HostIP binds a
// node address as source (as Kubernetes' hostPort conformance test does with
// `curl --interface`).
const (
	setHostPorts       = "hostports"        // hostIP . proto . port : pod . port
	setHostPortsAny    = "hostports-any"    // proto . port : pod . port (any local address)
	setHostPortHairpin = "hostport-hairpin" // pod . pod: a pod reaching its own hostPort

	chainHostPorts = "hostports"
)

// HostPort is one hostPort mapping of a pod on this node: new connections to
// HostIP, Protocol and Port go to PodIP and PodPort. An invalid or
// unspecified HostIP (0.0.0.0, ::) means any local address of PodIP's family.
// Sync skips, and reports in its *SkippedError, a mapping with an invalid
// PodIP, a HostIP of another family, a port 0 or an unknown protocol, and a
// mapping whose HostIP (or any address), protocol and port an earlier one
// already maps.
type HostPort struct {
	HostIP   netip.Addr
	Protocol Protocol
	Port     uint16
	PodIP    netip.Addr
	PodPort  uint16
}

// Any reports whether h maps every local address of its family.
func (h HostPort) Any() bool { return !h.HostIP.IsValid() || h.HostIP.IsUnspecified() }

// String prints h as "192.0.2.1:8080/TCP → 10.244.1.5:80" ("*:8080/TCP" for
// any address).
func (h HostPort) String() string {
	host := "*"
	if !h.Any() {
		host = formatAddr(h.HostIP)
		if h.HostIP.Is6() {
			host = "[" + host + "]"
		}
	}
	return fmt.Sprintf("%s:%d/%s → %s", host, h.Port, h.Protocol, netip.AddrPortFrom(h.PodIP, h.PodPort))
}

// hostPortSetSpecs returns the hostPort sets of family f.
func hostPortSetSpecs(f family) []setSpec {
	ip, ipName := nftables.TypeIPAddr, "ipv4_addr"
	if !f.v4 {
		ip, ipName = nftables.TypeIP6Addr, "ipv6_addr"
	}
	pod := nftables.MustConcatSetType(ip, nftables.TypeInetService)
	return []setSpec{
		{name: f.name(setHostPorts), keyType: nftables.MustConcatSetType(ip, nftables.TypeInetProto, nftables.TypeInetService),
			dataType: &pod, hostPort: true, typeText: ipName + " . inet_proto . inet_service : " + ipName + " . inet_service"},
		{name: f.name(setHostPortsAny), keyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			dataType: &pod, hostPort: true, typeText: "inet_proto . inet_service : " + ipName + " . inet_service"},
		{name: f.name(setHostPortHairpin), keyType: nftables.MustConcatSetType(ip, ip), hostPort: true,
			typeText: ipName + " . " + ipName},
	}
}

// hostPortRules are the rules of chain hostports for family f.
func hostPortRules(f fam) []ruleSpec {
	notLoopback := fmt.Sprintf("%s saddr != %s fib daddr type local", f.ipText, f.loopbackText)
	return []ruleSpec{
		{
			role: "hostports-" + f.suffix,
			text: fmt.Sprintf("%s dnat %s to %s daddr . meta l4proto . th dport map @%s", notLoopback, f.ipText, f.ipText, f.name(setHostPorts)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				set := sets[f.name(setHostPorts)]
				// ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports-v4
				return concat(f.isFamily(), f.notLoopbackSource(), localDest(), f.vipPortKey(), []expr.Any{
					&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
					dnat(f),
				})
			},
		},
		{
			role: "hostports-any-" + f.suffix,
			text: fmt.Sprintf("%s dnat %s to meta l4proto . th dport map @%s", notLoopback, f.ipText, f.name(setHostPortsAny)),
			exprs: func(sets map[string]*nftables.Set) []expr.Any {
				set := sets[f.name(setHostPortsAny)]
				// ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-any-v4
				return concat(f.isFamily(), f.notLoopbackSource(), localDest(), protoPortKey(), []expr.Any{
					&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
					dnat(f),
				})
			},
		},
	}
}

// notLoopbackSource is `ip saddr != 127.0.0.0/8` (`ip6 saddr != ::1`).
func (f fam) notLoopbackSource() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: uint32(len(f.loopback))},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: f.loopback},
	}
}

// localDest is `fib daddr type local`.
func localDest() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func jumpHostPorts(from string) ruleSpec {
	return ruleSpec{role: from + "-hostports", text: "jump " + chainHostPorts, exprs: func(map[string]*nftables.Set) []expr.Any {
		// jump hostports
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainHostPorts}}
	}}
}

// normalizeHostPorts checks hps and returns the elements of the hostPort
// sets, by set name and sorted as nft lists them, with a line for each
// mapping left out.
func normalizeHostPorts(hps []HostPort) (map[string][]element, []string) {
	var problems []string
	out := map[string][]element{}
	taken := map[string]int{} // set and key → index of the mapping holding it
	hairpin := map[string]bool{}
	for i, h := range hps {
		proto, ok := protocols[h.Protocol]
		var why string
		switch {
		case !h.PodIP.IsValid() || h.PodIP.Zone() != "" || h.PodIP.Is4In6():
			why = "PodIP: not a plain IP address"
		case !ok:
			why = fmt.Sprintf("Protocol %q: want TCP, UDP or SCTP", h.Protocol)
		case h.Port == 0 || h.PodPort == 0:
			why = "port 0"
		case h.HostIP.IsValid() && (h.HostIP.Is4() != h.PodIP.Is4() || h.HostIP.Zone() != ""):
			why = fmt.Sprintf("HostIP %s: not of the family of PodIP %s", h.HostIP, h.PodIP)
		}
		if why != "" {
			problems = append(problems, fmt.Sprintf("HostPorts[%d] %s: %s", i, h, why))
			continue
		}
		f := families[1]
		if h.PodIP.Is4() {
			f = families[0]
		}
		set, key := f.name(setHostPortsAny), newKey().proto(proto).port(h.Port)
		if !h.Any() {
			set, key = f.name(setHostPorts), newKey().addr(h.HostIP).proto(proto).port(h.Port)
		}
		id := set + "\x00" + string(key.key)
		if j, dup := taken[id]; dup {
			problems = append(problems, fmt.Sprintf("HostPorts[%d] %s: already mapped by HostPorts[%d] %s", i, h, j, hps[j]))
			continue
		}
		taken[id] = i
		out[set] = append(out[set], mapElem(key, newKey().addr(h.PodIP).port(h.PodPort)))
		hp := f.name(setHostPortHairpin)
		if pair := newKey().addr(h.PodIP).addr(h.PodIP); !hairpin[hp+string(pair.key)] {
			hairpin[hp+string(pair.key)] = true
			out[hp] = append(out[hp], setElem(pair))
		}
	}
	for _, es := range out {
		sortElements(es)
	}
	return out, problems
}
