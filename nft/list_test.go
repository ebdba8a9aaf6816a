package nft

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// layoutRefs describes the layout's sets as the rule decoder sees them.
func layoutRefs() (map[string]*nftables.Set, map[string]setRef) {
	sets, refs := map[string]*nftables.Set{}, map[string]setRef{}
	for _, spec := range setSpecs {
		s := spec.newSet(podnetTable())
		sets[spec.name] = s
		ref := setRef{keyLen: int(s.KeyType.Bytes)}
		if s.IsMap {
			ref.dataLen, ref.dataTypes = int(s.DataType.Bytes), splitType(s.DataType.GetNFTMagic())
		}
		refs[spec.name] = ref
	}
	return sets, refs
}

func anys(es []expr.Any) []any {
	out := make([]any, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// TestRuleTextLayout decodes every rule the layout writes, with endpoint-count
// chains of both families and kinds, and compares it with the rule's text.
func TestRuleTextLayout(t *testing.T) {
	sets, refs := layoutRefs()
	var rules []ruleSpec
	for _, def := range chainDefs {
		rules = append(rules, def.rules()...)
	}
	for _, f := range families {
		for _, np := range []bool{false, true} {
			for _, aff := range []uint32{0, 10800, 90} {
				rules = append(rules, countChainRules(countChain{fam: f, nodePort: np, n: 3, affinity: aff})...)
			}
		}
	}
	for _, r := range rules {
		if got := ruleText(anys(r.exprs(sets)), refs); got != r.text {
			t.Errorf("rule %s:\n got %s\nwant %s", r.role, got, r.text)
		}
	}
}

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }
func ne32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }
func ip(s string) []byte   { return netip.MustParseAddr(s).AsSlice() }

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// TestRuleText decodes hand-built rules of the shapes nft writes.
func TestRuleText(t *testing.T) {
	nfproto := func(p byte) []any {
		return []any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{p}}}
	}
	l4proto := func(p byte) []any {
		return []any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Register: 1, Data: []byte{p}}}
	}
	daddr4 := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	dport := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	refs := map[string]setRef{
		"__set0": {keyLen: 4, inline: "{ 1.1.1.1, 2.2.2.2 }"},
		"ports":  {keyLen: 2},
		"m":      {keyLen: 2, dataLen: 4, dataTypes: []dtype{typeIPAddr}},
	}
	tests := []struct {
		want  string
		exprs []any
	}{{
		want:  "tcp dport 80 counter packets 3 bytes 180 accept",
		exprs: cat(l4proto(unix.IPPROTO_TCP), dport, &expr.Cmp{Register: 1, Data: be16(80)}, &expr.Counter{Packets: 3, Bytes: 180}, &expr.Verdict{Kind: expr.VerdictAccept}),
	}, {
		want: "ct state established,related accept",
		exprs: []any{&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(6), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)}, &expr.Verdict{Kind: expr.VerdictAccept}},
	}, {
		want:  "ip daddr { 1.1.1.1, 2.2.2.2 } drop",
		exprs: cat(nfproto(unix.NFPROTO_IPV4), daddr4, &expr.Lookup{SourceRegister: 1, SetName: "__set0"}, &expr.Verdict{Kind: expr.VerdictDrop}),
	}, {
		want: `iifname "eth0" meta mark set 0x00000001`,
		exprs: []any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Register: 1, Data: ifname("eth0")},
			&expr.Immediate{Register: 1, Data: ne32(1)}, &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}},
	}, {
		want: "ip saddr 10.0.0.0/12 ip daddr != 127.0.0.0/8 return",
		exprs: cat(nfproto(unix.NFPROTO_IPV4),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0xf0, 0, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Register: 1, Data: ip("10.0.0.0")},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127}}, &expr.Verdict{Kind: expr.VerdictReturn}),
	}, {
		want: "ip daddr 1.1.1.1 tcp dport 8 dnat ip to 10.0.0.1:80",
		exprs: cat(nfproto(unix.NFPROTO_IPV4), daddr4, &expr.Cmp{Register: 1, Data: ip("1.1.1.1")},
			l4proto(unix.IPPROTO_TCP), dport, &expr.Cmp{Register: 1, Data: be16(8)},
			&expr.Immediate{Register: 1, Data: ip("10.0.0.1")}, &expr.Immediate{Register: 2, Data: be16(80)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2}),
	}, {
		want: "dnat ip6 to [fd00::1]:80",
		exprs: []any{&expr.Immediate{Register: 1, Data: ip("fd00::1")}, &expr.Immediate{Register: 2, Data: be16(80)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegProtoMin: 2}},
	}, {
		want:  "dnat ip to th dport map @m",
		exprs: []any{dport, &expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "m"}, &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}},
	}, {
		want:  "masquerade random,persistent",
		exprs: []any{&expr.Masq{Random: true, Persistent: true}},
	}, {
		want: "meta l4proto tcp masquerade to :1000-2000",
		exprs: cat(l4proto(unix.IPPROTO_TCP), &expr.Immediate{Register: 1, Data: be16(1000)}, &expr.Immediate{Register: 2, Data: be16(2000)},
			&expr.Masq{ToPorts: true, RegProtoMin: 1, RegProtoMax: 2}),
	}, {
		want:  "tcp dport 1000-2000 reject with tcp reset",
		exprs: cat(l4proto(unix.IPPROTO_TCP), dport, &expr.Range{Register: 1, FromData: be16(1000), ToData: be16(2000)}, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
	}, {
		want:  "reject with icmpx host-unreachable",
		exprs: []any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_HOST_UNREACH}},
	}, {
		want:  "reject with icmpv6 admin-prohibited",
		exprs: cat(nfproto(unix.NFPROTO_IPV6), &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 1}),
	}, {
		want:  "meta nfproto ipv6", // nothing implies it: it stays
		exprs: nfproto(unix.NFPROTO_IPV6),
	}, {
		want:  "th dport @ports",
		exprs: []any{dport, &expr.Lookup{SourceRegister: 1, SetName: "ports"}},
	}, {
		want:  `limit rate 10/second log prefix "x " accept`,
		exprs: []any{&expr.Limit{Type: expr.LimitTypePkts, Rate: 10, Unit: expr.LimitTimeSecond, Burst: 5}, &expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte("x ")}, &expr.Verdict{Kind: expr.VerdictAccept}},
	}, {
		want:  "ip daddr 1.1.1.1 # unknown expression quota drop",
		exprs: cat(nfproto(unix.NFPROTO_IPV4), daddr4, &expr.Cmp{Register: 1, Data: ip("1.1.1.1")}, unknownExpr{name: "quota"}, &expr.Verdict{Kind: expr.VerdictDrop}),
	}, {
		want:  "# unknown expression quota counter packets 0 bytes 0",
		exprs: []any{&expr.Quota{Bytes: 1}, &expr.Counter{}}, // decoded, but not printed
	}, {
		want:  "# unknown expression cmp accept", // compares a register nothing loaded
		exprs: []any{&expr.Cmp{Register: 1, Data: []byte{1}}, &expr.Verdict{Kind: expr.VerdictAccept}},
	}, {
		want:  "# unknown expression bitwise # unknown expression cmp",
		exprs: []any{&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4}, &expr.Cmp{Register: 1, Data: []byte{1}}},
	}}
	for _, tt := range tests {
		if got := ruleText(tt.exprs, refs); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// cat flattens expressions and lists of them.
func cat(parts ...any) []any {
	var out []any
	for _, p := range parts {
		if l, ok := p.([]any); ok {
			out = append(out, l...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

func TestElementTexts(t *testing.T) {
	key := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, append(p, make([]byte, (4-len(p)%4)%4)...)...)
		}
		return b
	}
	tests := []struct {
		name  string
		set   setDesc
		elems []nftables.SetElement
		want  []string
	}{{
		name: "intervals, one open to the top",
		set:  setDesc{flags: unix.NFT_SET_INTERVAL, keyType: uint32(typeIPAddr), keyLen: 4},
		elems: []nftables.SetElement{
			{Key: ip("255.255.255.0")},
			{Key: ip("11.0.0.6"), IntervalEnd: true}, {Key: ip("11.0.0.1")},
			{Key: ip("1.2.3.5"), IntervalEnd: true}, {Key: ip("1.2.3.4")},
			{Key: ip("11.0.0.0"), IntervalEnd: true}, {Key: ip("10.0.0.0")},
		},
		want: []string{"1.2.3.4", "10.0.0.0/8", "11.0.0.1-11.0.0.5", "255.255.255.0/24"},
	}, {
		// The order nft 1.0.6 lists: the concatenation read as a host-endian integer.
		name: "concatenation",
		set:  setDesc{keyType: uint32(typeIPAddr)<<concatBits | uint32(typeInetService), keyLen: 8},
		elems: []nftables.SetElement{
			{Key: key(ip("1.0.0.2"), be16(80))}, {Key: key(ip("1.0.0.1"), be16(81))}, {Key: key(ip("2.0.0.1"), be16(80))},
			{Key: key(ip("1.0.0.1"), be16(80))}, {Key: key(ip("1.0.0.1"), be16(336))},
		},
		want: []string{"1.0.0.1 . 80", "2.0.0.1 . 80", "1.0.0.2 . 80", "1.0.0.1 . 336", "1.0.0.1 . 81"},
	}, {
		name: "concatenated intervals keep the kernel's order",
		set: setDesc{flags: unix.NFT_SET_INTERVAL | nftables.NFT_SET_CONCAT,
			keyType: uint32(typeIPAddr)<<concatBits | uint32(typeIPAddr), keyLen: 8},
		elems: []nftables.SetElement{
			{Key: key(ip("1.0.0.2"), ip("10.0.0.0")), KeyEnd: key(ip("1.0.0.2"), ip("10.255.255.255"))},
			{Key: key(ip("1.0.0.1"), ip("1.2.3.4")), KeyEnd: key(ip("1.0.0.1"), ip("1.2.3.4"))},
			{Key: key(ip("1.0.0.1"), ip("1.2.3.4")), KeyEnd: key(ip("1.0.0.1"), ip("1.2.3.9"))},
		},
		want: []string{"1.0.0.2 . 10.0.0.0/8", "1.0.0.1 . 1.2.3.4", "1.0.0.1 . 1.2.3.4-1.2.3.9"},
	}, {
		name: "marks, with timeouts",
		set:  setDesc{flags: unix.NFT_SET_TIMEOUT, keyType: uint32(typeMark), keyLen: 4, timeout: time.Hour},
		elems: []nftables.SetElement{
			{Key: ne32(0x100), Timeout: time.Hour, Expires: 59*time.Minute + 1500*time.Millisecond},
			{Key: ne32(2), Timeout: 90 * time.Second}, {Key: ne32(1), Comment: "one"},
		},
		want: []string{`0x00000001 comment "one"`, "0x00000002 timeout 1m30s", "0x00000100 expires 59m1s500ms"},
	}, {
		name: "map of concatenations",
		set: setDesc{flags: unix.NFT_SET_MAP, keyType: uint32(typeInetProto)<<concatBits | uint32(typeInetService), keyLen: 8,
			dataType: uint32(typeIPAddr)<<concatBits | uint32(typeInetService), dataLen: 8},
		elems: []nftables.SetElement{{Key: key([]byte{unix.IPPROTO_TCP}, be16(30080)), Val: key(ip("10.0.0.1"), be16(8080))}},
		want:  []string{"tcp . 30080 : 10.0.0.1 . 8080"},
	}, {
		name:  "verdict map",
		set:   setDesc{flags: unix.NFT_SET_MAP, keyType: uint32(typeIfname), keyLen: 16, dataType: verdictMagic},
		elems: []nftables.SetElement{{Key: ifname("lo"), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "c"}}, {Key: ifname("eth0"), VerdictData: &expr.Verdict{Kind: expr.VerdictDrop}}},
		want:  []string{`"lo" : goto c`, `"eth0" : drop`},
	}}
	for _, tt := range tests {
		got, err := elementTexts(tt.set, tt.elems)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestSetText(t *testing.T) {
	s := setDesc{name: "a", flags: unix.NFT_SET_INTERVAL | unix.NFT_SET_TIMEOUT | unix.NFT_SET_CONSTANT, keyType: uint32(typeInetService),
		policy: unix.NFT_SET_POL_MEMORY, size: 100, timeout: time.Hour, gc: 10 * time.Second}
	const want = "\tset a {\n\t\ttype inet_service\n\t\tpolicy memory\n\t\tsize 100\n\t\tflags constant,interval,timeout\n" +
		"\t\ttimeout 1h\n\t\tgc-interval 10s\n\t\telements = { 1, 2, 3, 4, 5,\n\t\t\t     6 }\n\t}\n"
	if diff := cmp.Diff(want, setText(s, []string{"1", "2", "3", "4", "5", "6"})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		prio int
		hook nftables.ChainHook
		want string
	}{
		{-100, *nftables.ChainHookPrerouting, "dstnat"}, {-100, *nftables.ChainHookOutput, "-100"},
		{5, *nftables.ChainHookInput, "filter + 5"}, {-160, *nftables.ChainHookForward, "mangle - 10"},
		{100, *nftables.ChainHookPostrouting, "srcnat"}, {-200, *nftables.ChainHookInput, "-200"},
	} {
		if got := priorityText(tt.prio, tt.hook); got != tt.want {
			t.Errorf("priorityText(%d, %d) = %q, want %q", tt.prio, tt.hook, got, tt.want)
		}
	}
}

func TestFakeList(t *testing.T) {
	var f Fake
	if _, err := f.List(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("List before Sync: got %v, want ErrNoTable", err)
	}
	if err := f.Sync(svcState); err != nil {
		t.Fatal(err)
	}
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Render(svcState), l.Text); diff != "" {
		t.Errorf("Text (-Render +got):\n%s", diff)
	}
	want := map[string]int{"cluster-cidrs-v4": 2, "node-ips-v6": 1, "service-ips-v4": 7, "backends-v4": 7, "affinity-v4": 0}
	for _, s := range l.Sets {
		if n, ok := want[s.Name]; ok && s.Elements != n {
			t.Errorf("set %s: %d elements, want %d", s.Name, s.Elements, n)
		}
	}
	if len(l.Sets) != len(setSpecs) {
		t.Errorf("%d sets, want %d", len(l.Sets), len(setSpecs))
	}
	last := l.Rules[len(l.Rules)-1]
	if last.Chain != "npc-v4-1" || last.Text != "dnat ip to meta l4proto . th dport . numgen random mod 1 map @nodeport-backends-cluster-v4" {
		t.Errorf("last rule %+v", last)
	}
	if err := f.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.List(); !errors.Is(err, ErrNoTable) {
		t.Errorf("List after Cleanup: got %v, want ErrNoTable", err)
	}
}
