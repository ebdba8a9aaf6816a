package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// traceMsg builds an NFT_MSG_TRACE message of a table of family f, as the
// kernel sends it (nf_tables_trace.c): a struct nfgenmsg, then big-endian
// NFTA_TRACE_* attributes.
func traceMsg(t testing.TB, f uint8, attrs func(ae *netlink.AttributeEncoder)) netlink.Message {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: traceMsgType}, Data: append([]byte{f, 0, 0, 0}, b...)}
}

// verdict encodes a nested NFTA_TRACE_VERDICT.
func verdict(ae *netlink.AttributeEncoder, code int32, chain string) {
	ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(unix.NFTA_VERDICT_CODE, uint32(code))
		if chain != "" {
			nae.String(unix.NFTA_VERDICT_CHAIN, chain)
		}
		return nil
	})
}

// ipv4Header is a 20-byte IPv4 header; fragOff is the fragment offset field.
func ipv4Header(src, dst string, proto uint8, fragOff uint16) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[6:8], fragOff)
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return h
}

// ipv6Header is a 40-byte IPv6 header.
func ipv6Header(src, dst string, next uint8) []byte {
	h := make([]byte, 40)
	h[0], h[6], h[7] = 0x60, next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return h
}

// l4Header is the 20 bytes of a transport header the kernel copies, ports first.
func l4Header(sport, dport uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	return h
}

// common adds the attributes every event has.
func common(ae *netlink.AttributeEncoder, id uint32, table, chain string, typ uint32) {
	ae.Uint32(unix.NFTA_TRACE_NFPROTO, unix.NFPROTO_IPV4)
	ae.Uint32(unix.NFTA_TRACE_TYPE, typ)
	ae.Uint32(unix.NFTA_TRACE_ID, id)
	ae.String(unix.NFTA_TRACE_CHAIN, chain)
	ae.String(unix.NFTA_TRACE_TABLE, table)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// traceCases are hand-built messages and what they decode to.
func traceCases(t testing.TB) []struct {
	name string
	msg  netlink.Message
	want TraceEvent
} {
	return []struct {
		name string
		msg  netlink.Message
		want TraceEvent
	}{
		{
			name: "rule with jump and the packet",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 0x5b1f0a3c, "podnet", "prerouting", unix.NFT_TRACETYPE_RULE)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 40)
				verdict(ae, unix.NFT_JUMP, "services")
				ae.Uint32(unix.NFTA_TRACE_MARK, masqMark)
				ae.Uint32(unix.NFTA_TRACE_IIF, 7)
				ae.Uint16(unix.NFTA_TRACE_IIFTYPE, unix.ARPHRD_ETHER)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header("10.244.1.2", "10.96.0.10", unix.IPPROTO_TCP, 0x4000))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(40404, 80))
				ae.Bytes(unix.NFTA_TRACE_LL_HEADER, make([]byte, 14))
			}),
			want: TraceEvent{
				ID: 0x5b1f0a3c, Family: "inet", Table: "podnet", Chain: "prerouting", RuleHandle: 40,
				Type: "rule", Verdict: "jump services", IifIndex: 7, Mark: masqMark,
				Src: addr("10.244.1.2"), Dst: addr("10.96.0.10"), Proto: unix.IPPROTO_TCP, SrcPort: 40404, DstPort: 80,
			},
		},
		{
			name: "goto from a verdict map",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 1, "podnet", "services", unix.NFT_TRACETYPE_RULE)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 52)
				verdict(ae, unix.NFT_GOTO, "lb-v4-1")
			}),
			want: TraceEvent{ID: 1, Family: "inet", Table: "podnet", Chain: "services", RuleHandle: 52, Type: "rule", Verdict: "goto lb-v4-1"},
		},
		{
			name: "dnat accepts",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 1, "podnet", "lb-v4-1", unix.NFT_TRACETYPE_RULE)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 73)
				verdict(ae, nfAccept, "")
			}),
			want: TraceEvent{ID: 1, Family: "inet", Table: "podnet", Chain: "lb-v4-1", RuleHandle: 73, Type: "rule", Verdict: "accept"},
		},
		{
			name: "drop with an errno in the high bits",
			msg: traceMsg(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
				common(ae, 2, "filter", "input", unix.NFT_TRACETYPE_RULE)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 3)
				verdict(ae, int32(unix.EPERM)<<16|nfDrop, "")
			}),
			want: TraceEvent{ID: 2, Family: "ip", Table: "filter", Chain: "input", RuleHandle: 3, Type: "rule", Verdict: "drop"},
		},
		{
			name: "end of a chain, as Linux 6.18 reports it",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 3, "podnet", "services", unix.NFT_TRACETYPE_RULE)
				verdict(ae, unix.NFT_CONTINUE, "")
			}),
			want: TraceEvent{ID: 3, Family: "inet", Table: "podnet", Chain: "services", Type: "return", Verdict: "continue"},
		},
		{
			name: "end of a chain, as older kernels report it",
			msg: traceMsg(t, unix.NFPROTO_IPV6, func(ae *netlink.AttributeEncoder) {
				common(ae, 3, "t", "c", unix.NFT_TRACETYPE_RETURN)
				verdict(ae, unix.NFT_CONTINUE, "")
			}),
			want: TraceEvent{ID: 3, Family: "ip6", Table: "t", Chain: "c", Type: "return", Verdict: "continue"},
		},
		{
			name: "explicit return",
			msg: traceMsg(t, unix.NFPROTO_BRIDGE, func(ae *netlink.AttributeEncoder) {
				common(ae, 4, "t", "c", unix.NFT_TRACETYPE_RETURN)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 9)
				verdict(ae, unix.NFT_RETURN, "")
			}),
			want: TraceEvent{ID: 4, Family: "bridge", Table: "t", Chain: "c", RuleHandle: 9, Type: "return", Verdict: "return"},
		},
		{
			name: "policy, with the packet after DNAT",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 5, "podnet", "postrouting", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Uint32(unix.NFTA_TRACE_IIF, 7)
				ae.Uint32(unix.NFTA_TRACE_OIF, 9)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header("10.244.1.2", "10.244.2.2", unix.IPPROTO_TCP, 0))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(40404, 8080))
			}),
			want: TraceEvent{
				ID: 5, Family: "inet", Table: "podnet", Chain: "postrouting", Type: "policy", Verdict: "accept", IifIndex: 7, OifIndex: 9,
				Src: addr("10.244.1.2"), Dst: addr("10.244.2.2"), Proto: unix.IPPROTO_TCP, SrcPort: 40404, DstPort: 8080,
			},
		},
		{
			name: "IPv6 UDP",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 6, "podnet-trace", "output", unix.NFT_TRACETYPE_RULE)
				ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 4)
				verdict(ae, unix.NFT_CONTINUE, "")
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv6Header("fd00::2", "fd00:96::a", unix.IPPROTO_UDP))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(5000, 53)[:8])
			}),
			want: TraceEvent{
				ID: 6, Family: "inet", Table: "podnet-trace", Chain: "output", RuleHandle: 4, Type: "rule", Verdict: "continue",
				Src: addr("fd00::2"), Dst: addr("fd00:96::a"), Proto: unix.IPPROTO_UDP, SrcPort: 5000, DstPort: 53,
			},
		},
		{
			name: "SCTP",
			msg: traceMsg(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
				common(ae, 7, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfDrop)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header("10.0.0.1", "10.0.0.2", unix.IPPROTO_SCTP, 0))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(9, 3868))
			}),
			want: TraceEvent{
				ID: 7, Family: "ip", Table: "t", Chain: "c", Type: "policy", Verdict: "drop",
				Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: unix.IPPROTO_SCTP, SrcPort: 9, DstPort: 3868,
			},
		},
		{
			name: "ICMP has no ports",
			msg: traceMsg(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
				common(ae, 8, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header("10.0.0.1", "10.0.0.2", unix.IPPROTO_ICMP, 0))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0})
			}),
			want: TraceEvent{ID: 8, Family: "ip", Table: "t", Chain: "c", Type: "policy", Verdict: "accept",
				Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: unix.IPPROTO_ICMP},
		},
		{
			name: "IPv4 fragment after the first: no ports",
			msg: traceMsg(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
				common(ae, 9, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header("10.0.0.1", "10.0.0.2", unix.IPPROTO_UDP, 185))
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(1, 2))
			}),
			want: TraceEvent{ID: 9, Family: "ip", Table: "t", Chain: "c", Type: "policy", Verdict: "accept",
				Src: addr("10.0.0.1"), Dst: addr("10.0.0.2"), Proto: unix.IPPROTO_UDP},
		},
		{
			name: "IPv6 extension header: protocol unknown",
			msg: traceMsg(t, unix.NFPROTO_IPV6, func(ae *netlink.AttributeEncoder) {
				common(ae, 10, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv6Header("fd00::1", "fd00::2", 44)) // fragment header
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, l4Header(1, 2))
			}),
			want: TraceEvent{ID: 10, Family: "ip6", Table: "t", Chain: "c", Type: "policy", Verdict: "accept",
				Src: addr("fd00::1"), Dst: addr("fd00::2")},
		},
		{
			name: "short headers are ignored",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 11, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv6Header("fd00::1", "fd00::2", unix.IPPROTO_TCP)[:39])
				ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{1})
			}),
			want: TraceEvent{ID: 11, Family: "inet", Table: "t", Chain: "c", Type: "policy", Verdict: "accept"},
		},
		{
			name: "not IP: an ARP packet in a bridge",
			msg: traceMsg(t, unix.NFPROTO_BRIDGE, func(ae *netlink.AttributeEncoder) {
				common(ae, 12, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, []byte{0, 1, 8, 0, 6, 4, 0, 1})
			}),
			want: TraceEvent{ID: 12, Family: "bridge", Table: "t", Chain: "c", Type: "policy", Verdict: "accept"},
		},
		{
			name: "unknown attributes (conntrack, later kernels) are skipped",
			msg: traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
				common(ae, 13, "t", "c", unix.NFT_TRACETYPE_POLICY)
				ae.Uint32(unix.NFTA_TRACE_POLICY, nfAccept)
				ae.Uint32(0x7f, 1)
			}),
			want: TraceEvent{ID: 13, Family: "inet", Table: "t", Chain: "c", Type: "policy", Verdict: "accept"},
		},
	}
}

func TestDecodeTraceEvent(t *testing.T) {
	for _, tc := range traceCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTraceEvent(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, netipEqual); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestTraceEventString(t *testing.T) {
	e := TraceEvent{
		ID: 0x5b1f0a3c, Family: "inet", Table: "podnet", Chain: "postrouting", Hook: "postrouting", Type: "policy",
		Verdict: "accept", Iif: "to-client", Oif: "to-a", Mark: masqMark,
		Src: addr("10.244.1.2"), Dst: addr("10.244.2.2"), Proto: unix.IPPROTO_TCP, SrcPort: 40404, DstPort: 8080,
	}
	const want = "id 5b1f0a3c inet podnet postrouting (postrouting) policy accept iif to-client oif to-a mark 0x00004000 tcp 10.244.1.2:40404 > 10.244.2.2:8080"
	if got := e.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	e = TraceEvent{ID: 1, Family: "inet", Table: "podnet", Chain: "services", Type: "rule", RuleHandle: 52, Verdict: "goto lb-v4-1"}
	if got, want := e.String(), "id 00000001 inet podnet services rule handle 52 goto lb-v4-1"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestDecodeTraceEventGarbled: damaged messages give an error, never a panic.
func TestDecodeTraceEventGarbled(t *testing.T) {
	valid := traceCases(t)[0].msg
	for _, tc := range []struct {
		name string
		msg  netlink.Message
	}{
		{"other message type", netlink.Message{Header: netlink.Header{Type: traceMsgType + 1}, Data: valid.Data}},
		{"no nfgenmsg", netlink.Message{Header: netlink.Header{Type: traceMsgType}, Data: []byte{1, 0}}},
		{"attribute longer than the message", netlink.Message{Header: netlink.Header{Type: traceMsgType}, Data: []byte{1, 0, 0, 0, 0xff, 0, 6, 0, 0, 0, 0, 0}}},
		{"attribute shorter than its header", netlink.Message{Header: netlink.Header{Type: traceMsgType}, Data: []byte{1, 0, 0, 0, 2, 0, 6, 0}}},
		{"ID of two bytes", traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) { ae.Uint16(unix.NFTA_TRACE_ID, 1) })},
		{"handle of four bytes", traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) { ae.Uint32(unix.NFTA_TRACE_RULE_HANDLE, 1) })},
		{"verdict not nested", traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(unix.NFTA_TRACE_VERDICT, []byte{0xff, 0xff, 1})
		})},
		{"verdict code of one byte", traceMsg(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
			ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
				nae.Uint8(unix.NFTA_VERDICT_CODE, 1)
				return nil
			})
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := decodeTraceEvent(tc.msg)
			if err == nil {
				t.Errorf("no error; decoded %v", e)
			}
		})
	}

	// Every truncation of every valid message: the decoder must not panic,
	// and a cut inside an attribute must be reported.
	for _, tc := range traceCases(t) {
		data := tc.msg.Data
		ends := attrEnds(t, data)
		for n := range len(data) {
			m := netlink.Message{Header: tc.msg.Header, Data: data[:n]}
			e, err := decodeTraceEvent(m)
			_ = e.String()
			if err == nil && !ends[n] {
				t.Errorf("%s: cut at byte %d of %d: no error", tc.name, n, len(data))
			}
		}
	}
}

// attrEnds returns the offsets in data at which a top-level attribute ends, with
// or without its padding (and 4, the end of the nfgenmsg header): cutting there
// leaves a valid message.
func attrEnds(t *testing.T, data []byte) map[int]bool {
	ends := map[int]bool{4: true}
	for off := 4; off+4 <= len(data); {
		l := int(binary.NativeEndian.Uint16(data[off:]))
		if l < 4 {
			t.Fatalf("bad attribute length %d at %d", l, off)
		}
		// Without all or part of its padding, the last attribute is whole.
		for end := off + l; end <= off+(l+3)&^3; end++ {
			ends[end] = true
		}
		off += (l + 3) &^ 3
	}
	return ends
}

func FuzzDecodeTraceEvent(f *testing.F) {
	for _, tc := range traceCases(f) {
		f.Add(tc.msg.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, _ := decodeTraceEvent(netlink.Message{Header: netlink.Header{Type: traceMsgType}, Data: data})
		_ = e.String()
	})
}

func TestProbeNormalize(t *testing.T) {
	tcp, icmp, icmp6 := uint8(unix.IPPROTO_TCP), uint8(unix.IPPROTO_ICMP), uint8(unix.IPPROTO_ICMPV6)
	for _, tc := range []struct {
		name string
		p    Probe
		want Probe // zero: invalid
	}{
		{"tcp port", Probe{addr("10.0.0.1"), addr("10.0.0.2"), tcp, 80}, Probe{addr("10.0.0.1"), addr("10.0.0.2"), tcp, 80}},
		{"udp any port", Probe{addr("fd00::1"), addr("fd00::2"), unix.IPPROTO_UDP, 0}, Probe{addr("fd00::1"), addr("fd00::2"), unix.IPPROTO_UDP, 0}},
		{"sctp", Probe{addr("10.0.0.1"), addr("10.0.0.2"), unix.IPPROTO_SCTP, 9}, Probe{addr("10.0.0.1"), addr("10.0.0.2"), unix.IPPROTO_SCTP, 9}},
		{"icmp", Probe{addr("10.0.0.1"), addr("10.0.0.2"), icmp, 0}, Probe{addr("10.0.0.1"), addr("10.0.0.2"), icmp, 0}},
		{"icmpv6", Probe{addr("fd00::1"), addr("fd00::2"), icmp6, 0}, Probe{addr("fd00::1"), addr("fd00::2"), icmp6, 0}},
		{"4in6 unmapped", Probe{addr("::ffff:10.0.0.1"), addr("10.0.0.2"), tcp, 80}, Probe{addr("10.0.0.1"), addr("10.0.0.2"), tcp, 80}},
		{"no source", Probe{Dst: addr("10.0.0.2"), Proto: tcp}, Probe{}},
		{"no destination", Probe{Src: addr("10.0.0.2"), Proto: tcp}, Probe{}},
		{"mixed families", Probe{addr("10.0.0.1"), addr("fd00::2"), tcp, 80}, Probe{}},
		{"zone", Probe{addr("fe80::1%eth0"), addr("fe80::2"), tcp, 80}, Probe{}},
		{"icmp with IPv6", Probe{addr("fd00::1"), addr("fd00::2"), icmp, 0}, Probe{}},
		{"icmpv6 with IPv4", Probe{addr("10.0.0.1"), addr("10.0.0.2"), icmp6, 0}, Probe{}},
		{"icmp with a port", Probe{addr("10.0.0.1"), addr("10.0.0.2"), icmp, 7}, Probe{}},
		{"other protocol", Probe{addr("10.0.0.1"), addr("10.0.0.2"), unix.IPPROTO_GRE, 0}, Probe{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.normalize()
			if tc.want == (Probe{}) {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("got %v, %v; want an error matching ErrInvalid", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestSetHooks(t *testing.T) {
	hooks := map[chainKey]string{
		{"inet", "podnet-trace", "prerouting"}: "prerouting",
		{"inet", "podnet", "prerouting"}:       "prerouting",
		{"inet", "podnet", "output"}:           "output",
		{"inet", "podnet", "postrouting"}:      "postrouting",
	}
	ev := func(id uint32, table, chain string) TraceEvent {
		return TraceEvent{ID: id, Family: "inet", Table: table, Chain: chain}
	}
	events := []TraceEvent{
		ev(1, "podnet-trace", "prerouting"),
		ev(1, "podnet", "prerouting"),
		ev(2, "podnet", "output"), // another packet, interleaved
		ev(1, "podnet", "services"),
		ev(2, "podnet", "services"),
		ev(1, "podnet", "lb-v4-1"),
		ev(1, "podnet", "postrouting"),
		ev(3, "podnet", "services"), // its base chain was not seen
		{ID: 1, Family: "ip", Table: "podnet", Chain: "prerouting"},
	}
	setHooks(events, hooks)
	var got []string
	for _, e := range events {
		got = append(got, e.Chain+":"+e.Hook)
	}
	want := []string{"prerouting:prerouting", "prerouting:prerouting", "output:output", "services:prerouting",
		"services:output", "lb-v4-1:prerouting", "postrouting:postrouting", "services:", "prerouting:postrouting"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hooks (-want +got):\n%s", diff)
	}
}

func TestFakeTracer(t *testing.T) {
	p := Probe{addr("10.244.1.2"), addr("10.96.0.10"), unix.IPPROTO_TCP, 80}
	canned := []TraceEvent{{ID: 1, Family: "inet", Table: "podnet", Chain: "services", Type: "rule", Verdict: "goto lb-v4-1"}}
	f := &FakeTracer{Events: map[Probe][]TraceEvent{p: canned}}
	ctx := context.Background()

	sent := 0
	send := func(context.Context) error { sent++; return nil }
	got, err := f.Trace(ctx, p, send)
	if err != nil || sent != 1 || !cmp.Equal(got, canned, netipEqual) {
		t.Errorf("Trace: got %v, %v after %d sends; want the canned events after 1 send", got, err, sent)
	}
	got[0].Chain = "changed"
	if f.Events[p][0].Chain != "services" {
		t.Error("Trace returned the canned slice itself")
	}

	other := Probe{addr("10.244.1.2"), addr("10.96.0.11"), unix.IPPROTO_UDP, 53}
	refused := errors.New("connection refused")
	got, err = f.Trace(ctx, other, func(context.Context) error { return refused })
	if len(got) != 0 || !errors.Is(err, refused) {
		t.Errorf("Trace with a failing send: got %v, %v; want no events and the send error", got, err)
	}

	if _, err := f.Trace(ctx, Probe{Dst: addr("10.0.0.1"), Proto: unix.IPPROTO_TCP}, send); !errors.Is(err, ErrInvalid) || sent != 1 {
		t.Errorf("invalid probe: got %v after %d sends; want ErrInvalid without sending", err, sent)
	}
	if diff := cmp.Diff([]Probe{p, other}, f.Probes(), netipEqual); diff != "" {
		t.Errorf("Probes (-want +got):\n%s", diff)
	}

	f.Err = errors.New("kernel says no")
	if _, err := f.Trace(ctx, p, send); !errors.Is(err, f.Err) {
		t.Errorf("Trace with Err set: got %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Trace(cancelled, p, send); !errors.Is(err, context.Canceled) {
		t.Errorf("Trace with a cancelled context: got %v", err)
	}
	if f.Cleanup() != nil || f.Cleanup() != nil || f.Cleanups() != 2 {
		t.Errorf("Cleanups: %d, want 2", f.Cleanups())
	}
}

// TestAdoptRenamed: a packet the kernel traces under a new ID after routing
// (its flow hash recomputed) is still the probe's when its source address,
// port and protocol are a marked packet's; another connection's is not.
func TestAdoptRenamed(t *testing.T) {
	a := netip.MustParseAddr
	mark := TraceEvent{ID: 1, Family: "inet", Table: TraceTableName, Chain: "prerouting", Type: "rule", RuleHandle: 2,
		Src: a("10.244.3.3"), Dst: a("10.96.0.10"), Proto: 6, SrcPort: 40000, DstPort: 80}
	renamed := TraceEvent{ID: 2, Family: "inet", Table: "podnet", Chain: "postrouting", Type: "return",
		Src: a("10.244.3.3"), Dst: a("10.244.2.2"), Proto: 6, SrcPort: 40000, DstPort: 8080}
	renamedPolicy := TraceEvent{ID: 2, Family: "inet", Table: "podnet", Chain: "postrouting", Type: "policy", Verdict: "accept"}
	stranger := TraceEvent{ID: 3, Family: "inet", Table: "podnet", Chain: "postrouting", Type: "return",
		Src: a("10.244.3.3"), Dst: a("10.244.2.2"), Proto: 6, SrcPort: 40001, DstPort: 8080}
	l := &traceListener{ours: map[uint32]bool{}}
	for _, e := range []TraceEvent{mark, renamed, renamedPolicy, stranger} {
		if isTraceMark(e) {
			l.ours[e.ID] = true
		}
		l.events = append(l.events, e)
	}
	l.adoptRenamed()
	if !l.ours[1] || !l.ours[2] || l.ours[3] {
		t.Errorf("ours = %v, want IDs 1 and 2, not 3", l.ours)
	}
}
