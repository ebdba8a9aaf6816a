package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TraceEvent is one step of a traced packet through nftables, as the kernel
// reports it on the NFNLGRP_NFTRACE netlink group (what `nft monitor trace`
// prints). The kernel sends an event for every rule that matched (with its
// verdict), for the end of a regular chain ("return") and for the policy of a
// base chain. Decoded from the NFTA_TRACE_* attributes of
// include/uapi/linux/netfilter/nf_tables.h.
type TraceEvent struct {
	// ID names the packet: events with one ID belong to one packet (the
	// kernel hashes the packet's buffer address, flow hash and input
	// interface). Shown in the byte order `nft monitor trace` prints.
	ID uint32
	// Family is the table's family: ip, ip6, inet, bridge, netdev or arp.
	Family string
	Table  string
	Chain  string
	// Hook is the hook of the base chain the packet was traversing
	// (prerouting, input, forward, output, postrouting, ingress, egress), or
	// "" if unknown. The kernel does not send it: Tracer looks up the base
	// chains of the namespace and carries the hook over to the regular
	// chains the base chain jumped to.
	Hook string
	// RuleHandle is the handle of the rule (`nft -a list`), 0 for a policy
	// and for the implicit return at the end of a chain.
	RuleHandle uint64
	// Type is rule (a rule matched), return (the end of a chain, with
	// verdict continue and no rule handle, or an explicit return) or policy
	// (a base chain's policy, after its end).
	Type string
	// Verdict is accept, drop, continue (the rule matched and the packet
	// goes on: counters, marks, meta nftrace set, …), return, "jump X",
	// "goto X", queue, stolen or repeat. For a policy event, the policy.
	// NAT rules (dnat, masquerade) accept.
	Verdict string
	// The interfaces, resolved to names in the traced namespace; an index
	// the namespace does not know (any more) is kept as its number. Empty if
	// the event carries none.
	Iif, Oif           string
	IifIndex, OifIndex uint32
	// Mark is the packet mark, 0 if none.
	Mark uint32

	// The packet's headers, as the packet is at this point (after any NAT
	// of earlier chains). The kernel includes them only in the first event
	// of each base chain the packet traverses; other events leave them
	// zero.
	Src, Dst netip.Addr
	Proto    uint8 // IP protocol (unix.IPPROTO_TCP, …); 0 if unknown
	// SrcPort and DstPort are set for TCP, UDP, UDP-Lite and SCTP.
	SrcPort, DstPort uint16
}

// HasPacket reports whether the event carries the packet's headers.
func (e TraceEvent) HasPacket() bool { return e.Src.IsValid() }

// String formats the event on one line, close to `nft monitor trace`:
//
//	id 5b1f0a3c inet podnet services (prerouting) rule handle 12 goto lb-v4-1
//	id 5b1f0a3c inet podnet postrouting (postrouting) policy accept oif to-a tcp 10.244.1.2:40404 > 10.244.2.2:8080
func (e TraceEvent) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "id %08x %s %s %s", e.ID, e.Family, e.Table, e.Chain)
	if e.Hook != "" {
		fmt.Fprintf(&b, " (%s)", e.Hook)
	}
	b.WriteString(" " + e.Type)
	if e.RuleHandle != 0 {
		fmt.Fprintf(&b, " handle %d", e.RuleHandle)
	}
	b.WriteString(" " + e.Verdict)
	if e.Iif != "" {
		b.WriteString(" iif " + e.Iif)
	}
	if e.Oif != "" {
		b.WriteString(" oif " + e.Oif)
	}
	if e.Mark != 0 {
		fmt.Fprintf(&b, " mark 0x%08x", e.Mark)
	}
	if e.HasPacket() {
		fmt.Fprintf(&b, " %s %s > %s", traceProtoName(e.Proto), hostPort(e.Src, e.SrcPort), hostPort(e.Dst, e.DstPort))
	}
	return b.String()
}

func hostPort(a netip.Addr, port uint16) string {
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, port).String()
}

func traceProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_UDPLITE:
		return "udplite"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	}
	return "proto " + strconv.Itoa(int(p))
}

// Netfilter verdict codes (include/uapi/linux/netfilter.h; x/sys/unix has only
// the nf_tables ones, NFT_CONTINUE … NFT_RETURN). A positive code carries extra
// bits above NF_VERDICT_MASK (a queue number, a drop errno).
const (
	nfDrop        = 0
	nfAccept      = 1
	nfStolen      = 2
	nfQueue       = 3
	nfRepeat      = 4
	nfVerdictMask = 0xff
)

// traceMsgType is the netlink message type of a trace event.
const traceMsgType = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_TRACE)

// errNotTrace reports a message on the trace group that is not a trace event.
var errNotTrace = errors.New("not an nftables trace message")

// decodeTraceEvent decodes one NFT_MSG_TRACE message. Interface names and Hook
// are left for the caller. It never panics: a short or garbled message gives an
// error (and the fields decoded before the damage).
func decodeTraceEvent(m netlink.Message) (TraceEvent, error) {
	var e TraceEvent
	if m.Header.Type != traceMsgType {
		return e, fmt.Errorf("%w: type %#x", errNotTrace, uint16(m.Header.Type))
	}
	if len(m.Data) < 4 { // struct nfgenmsg
		return e, fmt.Errorf("nft: trace message of %d bytes: no nfgenmsg header", len(m.Data))
	}
	e.Family = familyName(m.Data[0])
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return e, fmt.Errorf("nft: trace message: %w", err)
	}
	ad.ByteOrder = binary.BigEndian // every NFTA_TRACE_* number is big-endian
	var (
		typ, policy      uint32
		havePolicy       bool
		network, transpt []byte
		verdict          string
	)
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_ID:
			// The kernel puts it in host order (nla_put_u32 of a hash);
			// nft reads it big-endian: so do we, to show the same IDs.
			e.ID = ad.Uint32()
		case unix.NFTA_TRACE_TABLE:
			e.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			e.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			e.RuleHandle = ad.Uint64()
		case unix.NFTA_TRACE_TYPE:
			typ = ad.Uint32()
		case unix.NFTA_TRACE_VERDICT:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				verdict = decodeVerdict(nad) // Nested checks nad's errors
				return nil
			})
		case unix.NFTA_TRACE_POLICY:
			policy, havePolicy = ad.Uint32(), true
		case unix.NFTA_TRACE_IIF:
			e.IifIndex = ad.Uint32()
		case unix.NFTA_TRACE_OIF:
			e.OifIndex = ad.Uint32()
		case unix.NFTA_TRACE_MARK:
			e.Mark = ad.Uint32()
		case unix.NFTA_TRACE_NETWORK_HEADER:
			network = ad.Bytes()
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			transpt = ad.Bytes()
		}
	}
	e.Type = traceTypeName(typ)
	e.Verdict = verdict
	if e.Type == "rule" && e.RuleHandle == 0 && verdict == "continue" {
		// The end of a chain (no rule matched, or none was left): Linux
		// 6.18 reports it as a rule event without a handle, the sources
		// of older kernels as a return event.
		e.Type = "return"
	}
	if havePolicy {
		e.Verdict = verdictName(int32(policy), "")
	}
	parsePacket(&e, network, transpt)
	if err := ad.Err(); err != nil {
		return e, fmt.Errorf("nft: trace message: %w", err)
	}
	return e, nil
}

// decodeVerdict reads the NFTA_VERDICT_* attributes of a nested verdict.
func decodeVerdict(ad *netlink.AttributeDecoder) string {
	var (
		code  int32
		chain string
	)
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	return verdictName(code, chain)
}

func verdictName(code int32, chain string) string {
	switch code {
	case unix.NFT_CONTINUE:
		return "continue"
	case unix.NFT_BREAK:
		return "break"
	case unix.NFT_JUMP:
		return "jump " + chain
	case unix.NFT_GOTO:
		return "goto " + chain
	case unix.NFT_RETURN:
		return "return"
	}
	if code < 0 {
		return "verdict " + strconv.Itoa(int(code))
	}
	switch code & nfVerdictMask {
	case nfDrop:
		return "drop"
	case nfAccept:
		return "accept"
	case nfStolen:
		return "stolen"
	case nfQueue:
		return "queue"
	case nfRepeat:
		return "repeat"
	}
	return "verdict " + strconv.Itoa(int(code))
}

func traceTypeName(t uint32) string {
	switch t {
	case unix.NFT_TRACETYPE_RULE:
		return "rule"
	case unix.NFT_TRACETYPE_RETURN:
		return "return"
	case unix.NFT_TRACETYPE_POLICY:
		return "policy"
	}
	return "type " + strconv.Itoa(int(t))
}

// familyName names a table family (NFPROTO_*) as nft does.
func familyName(f uint8) string {
	switch f {
	case unix.NFPROTO_INET:
		return "inet"
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	case unix.NFPROTO_BRIDGE:
		return "bridge"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	case unix.NFPROTO_ARP:
		return "arp"
	}
	return "family " + strconv.Itoa(int(f))
}

// hookName names hook h of a base chain in a table of family f, as nft does.
func hookName(f uint8, h uint32) string {
	switch f {
	case unix.NFPROTO_NETDEV:
		switch h {
		case unix.NF_NETDEV_INGRESS:
			return "ingress"
		case unix.NF_NETDEV_EGRESS:
			return "egress"
		}
	case unix.NFPROTO_ARP: // NF_ARP_IN, NF_ARP_OUT, NF_ARP_FORWARD
		if names := []string{"input", "output", "forward"}; h < uint32(len(names)) {
			return names[h]
		}
	default: // NF_INET_* (inet, ip, ip6; bridge numbers its hooks the same)
		if names := []string{"prerouting", "input", "forward", "output", "postrouting", "ingress"}; h < uint32(len(names)) {
			return names[h]
		}
	}
	return "hook " + strconv.Itoa(int(h))
}

// parsePacket sets the address and port fields of e from the raw network and
// transport headers, if they hold a complete IPv4 or IPv6 header. The kernel
// copies at most 40 bytes of the network header (so IPv6 extension headers are
// cut) and 20 of the transport header.
func parsePacket(e *TraceEvent, network, transport []byte) {
	if len(network) == 0 {
		return
	}
	portsVisible := true
	switch network[0] >> 4 {
	case 4:
		if len(network) < 20 || int(network[0]&0x0f)*4 < 20 {
			return
		}
		e.Src = netip.AddrFrom4([4]byte(network[12:16]))
		e.Dst = netip.AddrFrom4([4]byte(network[16:20]))
		e.Proto = network[9]
		// A fragment other than the first has no transport header.
		portsVisible = binary.BigEndian.Uint16(network[6:8])&0x1fff == 0
	case 6:
		if len(network) < 40 {
			return
		}
		e.Src = netip.AddrFrom16([16]byte(network[8:24]))
		e.Dst = netip.AddrFrom16([16]byte(network[24:40]))
		switch next := network[6]; next {
		case 0, 43, 44, 50, 51, 60, 135, 139, 140: // extension headers: the protocol is beyond what was copied
			portsVisible = false
		default:
			e.Proto = next
		}
	default:
		return
	}
	switch e.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE, unix.IPPROTO_SCTP:
		if portsVisible && len(transport) >= 4 {
			e.SrcPort = binary.BigEndian.Uint16(transport[0:2])
			e.DstPort = binary.BigEndian.Uint16(transport[2:4])
		}
	}
}
