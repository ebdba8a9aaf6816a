package nft

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

func addrs(ss ...string) []netip.Addr {
	as := make([]netip.Addr, len(ss))
	for i, s := range ss {
		as[i] = netip.MustParseAddr(s)
	}
	return as
}

// States shared by the unit and the kernel tests.
var (
	v4Only = State{
		ClusterCIDRs: prefixes("10.244.2.0/24", "10.244.1.0/24"),
		NodeIPs:      addrs("192.168.1.12", "192.168.1.11"),
	}
	dualStack = State{
		ClusterCIDRs: prefixes("10.244.1.0/24", "fd00:10:244:1::/64", "10.244.2.0/24", "fd00:10:244:2::/64"),
		NodeIPs:      addrs("192.168.1.12", "2001:db8::11", "192.168.1.11", "2001:db8::12", "192.168.1.10"),
	}
	// edges covers nft's formatting and the normalisation: duplicates, nested
	// prefixes, single addresses, intervals open to the top of the address space,
	// IPv4-compatible and IPv4-mapped IPv6 addresses, line wrapping.
	edges = State{
		ClusterCIDRs: prefixes("10.1.0.0/16", "10.0.0.0/8", "255.255.255.0/24", "192.168.0.1/32",
			"10.0.0.0/8", "ffff::/16", "fd00::1/128", "fd00:10:244:1::/64", "fd00:10::/32"),
		NodeIPs: addrs("5.6.7.8", "1.2.3.4", "1.2.3.4", "9.9.9.9", "8.8.8.8", "255.255.255.255",
			"::a00:1", "::ffff:10.0.0.2", "::1", "::", "2001:db8:0:1::1", "2001:db8::1:0:0:1"),
	}
	wholeSpace = State{ClusterCIDRs: prefixes("0.0.0.0/0", "::/0", "10.0.0.0/8")}
)

// netipEqual compares netip values with ==, which cmp cannot do by itself.
var netipEqual = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

// The expected texts use → for a tab.
// rules is the rest of the table after the masquerade sets, without services:
// the service sets and every fixed chain, as nft 1.0.6 lists them.
const rules = `
→set local-pod-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→}

→set local-pod-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→}

→map service-ips-v4 {
→→type ipv4_addr . inet_proto . inet_service : verdict
→}

→map service-nodeports-v4 {
→→type inet_proto . inet_service : verdict
→}

→set cluster-ips-v4 {
→→type ipv4_addr
→}

→map backends-v4 {
→→type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service
→}

→map nodeport-backends-v4 {
→→type inet_proto . inet_service . mark : ipv4_addr . inet_service
→}

→map service-ips-cluster-v4 {
→→type ipv4_addr . inet_proto . inet_service : verdict
→}

→map service-nodeports-cluster-v4 {
→→type inet_proto . inet_service : verdict
→}

→map backends-cluster-v4 {
→→type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service
→}

→map nodeport-backends-cluster-v4 {
→→type inet_proto . inet_service . mark : ipv4_addr . inet_service
→}

→set masq-vips-v4 {
→→type ipv4_addr . inet_proto . inet_service
→}

→set masq-nodeports-v4 {
→→type inet_proto . inet_service
→}

→set lb-restricted-v4 {
→→type ipv4_addr . inet_proto . inet_service
→}

→set lb-source-ranges-v4 {
→→type ipv4_addr . inet_proto . inet_service . ipv4_addr
→→flags interval
→}

→set hairpin-v4 {
→→type ipv4_addr . ipv4_addr
→}

→set affinity-v4 {
→→type ipv4_addr . ipv4_addr . inet_proto . inet_service . mark
→→size 262144
→→flags dynamic,timeout
→}

→map service-ips-v6 {
→→type ipv6_addr . inet_proto . inet_service : verdict
→}

→map service-nodeports-v6 {
→→type inet_proto . inet_service : verdict
→}

→set cluster-ips-v6 {
→→type ipv6_addr
→}

→map backends-v6 {
→→type ipv6_addr . inet_proto . inet_service . mark : ipv6_addr . inet_service
→}

→map nodeport-backends-v6 {
→→type inet_proto . inet_service . mark : ipv6_addr . inet_service
→}

→map service-ips-cluster-v6 {
→→type ipv6_addr . inet_proto . inet_service : verdict
→}

→map service-nodeports-cluster-v6 {
→→type inet_proto . inet_service : verdict
→}

→map backends-cluster-v6 {
→→type ipv6_addr . inet_proto . inet_service . mark : ipv6_addr . inet_service
→}

→map nodeport-backends-cluster-v6 {
→→type inet_proto . inet_service . mark : ipv6_addr . inet_service
→}

→set masq-vips-v6 {
→→type ipv6_addr . inet_proto . inet_service
→}

→set masq-nodeports-v6 {
→→type inet_proto . inet_service
→}

→set lb-restricted-v6 {
→→type ipv6_addr . inet_proto . inet_service
→}

→set lb-source-ranges-v6 {
→→type ipv6_addr . inet_proto . inet_service . ipv6_addr
→→flags interval
→}

→set hairpin-v6 {
→→type ipv6_addr . ipv6_addr
→}

→set affinity-v6 {
→→type ipv6_addr . ipv6_addr . inet_proto . inet_service . mark
→→size 262144
→→flags dynamic,timeout
→}

→map hostports-v4 {
→→type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
→}

→map hostports-any-v4 {
→→type inet_proto . inet_service : ipv4_addr . inet_service
→}

→set hostport-hairpin-v4 {
→→type ipv4_addr . ipv4_addr
→}

→map hostports-v6 {
→→type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service
→}

→map hostports-any-v6 {
→→type inet_proto . inet_service : ipv6_addr . inet_service
→}

→set hostport-hairpin-v6 {
→→type ipv6_addr . ipv6_addr
→}

→chain prerouting {
→→type nat hook prerouting priority dstnat; policy accept;
→→jump services
→→jump hostports
→}

→chain output {
→→type nat hook output priority -100; policy accept;
→→jump services
→→jump hostports
→}

→chain postrouting {
→→type nat hook postrouting priority srcnat; policy accept;
→→ip saddr @cluster-cidrs-v4 ip daddr != @cluster-cidrs-v4 ip daddr != @node-ips-v4 masquerade fully-random
→→ip6 saddr @cluster-cidrs-v6 ip6 daddr != @cluster-cidrs-v6 ip6 daddr != @node-ips-v6 masquerade fully-random
→→meta mark & 0x00004000 == 0x00004000 masquerade fully-random
→→ct status dnat ip saddr . ip daddr @hairpin-v4 masquerade fully-random
→→ct status dnat ip6 saddr . ip6 daddr @hairpin-v6 masquerade fully-random
→→ct status dnat ip saddr . ip daddr @hostport-hairpin-v4 masquerade fully-random
→→ct status dnat ip6 saddr . ip6 daddr @hostport-hairpin-v6 masquerade fully-random
→}

→chain services {
→→ip daddr . meta l4proto . th dport @lb-restricted-v4 ip daddr . meta l4proto . th dport . ip saddr != @lb-source-ranges-v4 drop
→→ip saddr @cluster-cidrs-v4 ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
→→fib saddr type local ip daddr . meta l4proto . th dport @service-ips-cluster-v4 meta mark set meta mark | 0x00004000
→→fib saddr type local ip daddr . meta l4proto . th dport vmap @service-ips-cluster-v4
→→ip saddr != @cluster-cidrs-v4 ip daddr . meta l4proto . th dport @masq-vips-v4 meta mark set meta mark | 0x00004000
→→ip daddr . meta l4proto . th dport vmap @service-ips-v4
→→ip daddr @cluster-ips-v4 reject with icmp port-unreachable
→→ip saddr @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
→→ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
→→ip saddr @cluster-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
→→fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v4 meta mark set meta mark | 0x00004000
→→fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v4
→→ip saddr != @local-pod-cidrs-v4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @masq-nodeports-v4 meta mark set meta mark | 0x00004000
→→ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v4
→→ip6 daddr . meta l4proto . th dport @lb-restricted-v6 ip6 daddr . meta l4proto . th dport . ip6 saddr != @lb-source-ranges-v6 drop
→→ip6 saddr @cluster-cidrs-v6 ip6 daddr . meta l4proto . th dport vmap @service-ips-cluster-v6
→→fib saddr type local ip6 daddr . meta l4proto . th dport @service-ips-cluster-v6 meta mark set meta mark | 0x00004000
→→fib saddr type local ip6 daddr . meta l4proto . th dport vmap @service-ips-cluster-v6
→→ip6 saddr != @cluster-cidrs-v6 ip6 daddr . meta l4proto . th dport @masq-vips-v6 meta mark set meta mark | 0x00004000
→→ip6 daddr . meta l4proto . th dport vmap @service-ips-v6
→→ip6 daddr @cluster-ips-v6 reject with icmpv6 port-unreachable
→→ip6 saddr @local-pod-cidrs-v6 ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v6
→→ip6 saddr @cluster-cidrs-v6 ip6 daddr != ::1 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v6 meta mark set meta mark | 0x00004000
→→ip6 saddr @cluster-cidrs-v6 ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v6
→→fib saddr type local ip6 daddr != ::1 fib daddr type local meta l4proto . th dport @service-nodeports-cluster-v6 meta mark set meta mark | 0x00004000
→→fib saddr type local ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-cluster-v6
→→ip6 saddr != @local-pod-cidrs-v6 ip6 daddr != ::1 fib daddr type local meta l4proto . th dport @masq-nodeports-v6 meta mark set meta mark | 0x00004000
→→ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service-nodeports-v6
→}

→chain no-endpoints {
→→reject
→}

→chain hostports {
→→ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @hostports-v4
→→ip saddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-any-v4
→→ip6 saddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostports-v6
→→ip6 saddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @hostports-any-v6
→}
}
`

func TestRender(t *testing.T) {
	tests := []struct {
		name  string
		state State
		want  string
	}{{
		name:  "empty",
		state: State{},
		want: `table inet podnet {
→set cluster-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→}

→set cluster-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→}

→set node-ips-v4 {
→→type ipv4_addr
→}

→set node-ips-v6 {
→→type ipv6_addr
→}
` + rules,
	}, {
		name:  "v4 only",
		state: v4Only,
		want: `table inet podnet {
→set cluster-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→→elements = { 10.244.1.0/24, 10.244.2.0/24 }
→}

→set cluster-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→}

→set node-ips-v4 {
→→type ipv4_addr
→→elements = { 192.168.1.11, 192.168.1.12 }
→}

→set node-ips-v6 {
→→type ipv6_addr
→}
` + rules,
	}, {
		name:  "dual-stack",
		state: dualStack,
		want: `table inet podnet {
→set cluster-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→→elements = { 10.244.1.0/24, 10.244.2.0/24 }
→}

→set cluster-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→→elements = { fd00:10:244:1::/64,
→→→     fd00:10:244:2::/64 }
→}

→set node-ips-v4 {
→→type ipv4_addr
→→elements = { 192.168.1.10, 192.168.1.11,
→→→     192.168.1.12 }
→}

→set node-ips-v6 {
→→type ipv6_addr
→→elements = { 2001:db8::11,
→→→     2001:db8::12 }
→}
` + rules,
	}, {
		name:  "edges",
		state: edges,
		want: `table inet podnet {
→set cluster-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→→elements = { 10.0.0.0/8, 192.168.0.1,
→→→     255.255.255.0/24 }
→}

→set cluster-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→→elements = { fd00::1,
→→→     fd00:10::/32,
→→→     ffff::/16 }
→}

→set node-ips-v4 {
→→type ipv4_addr
→→elements = { 1.2.3.4, 5.6.7.8,
→→→     8.8.8.8, 9.9.9.9,
→→→     255.255.255.255 }
→}

→set node-ips-v6 {
→→type ipv6_addr
→→elements = { ::,
→→→     ::1,
→→→     ::10.0.0.1,
→→→     ::ffff:10.0.0.2,
→→→     2001:db8::1:0:0:1,
→→→     2001:db8:0:1::1 }
→}
` + rules,
	}, {
		name:  "whole address space",
		state: wholeSpace,
		want: `table inet podnet {
→set cluster-cidrs-v4 {
→→type ipv4_addr
→→flags interval
→→elements = { 0.0.0.0/0 }
→}

→set cluster-cidrs-v6 {
→→type ipv6_addr
→→flags interval
→→elements = { ::/0 }
→}

→set node-ips-v4 {
→→type ipv4_addr
→}

→set node-ips-v6 {
→→type ipv6_addr
→}
` + rules,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := strings.ReplaceAll(tt.want, "→", "\t")
			if diff := cmp.Diff(want, Render(tt.state)); diff != "" {
				t.Errorf("Render (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFormatAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":          "10.0.0.1",
		"::":                "::",
		"::1":               "::1",
		"::a00:1":           "::10.0.0.1",
		"::1:0":             "::0.1.0.0",
		"::ffff:10.0.0.1":   "::ffff:10.0.0.1",
		"::1:ffff:a00:1":    "::1:ffff:a00:1",
		"1::":               "1::",
		"1:0:1::":           "1:0:1::",
		"2001:db8:0:1::1":   "2001:db8:0:1::1",
		"2001:db8::1:0:0:1": "2001:db8::1:0:0:1",
		"1:2:3:4:5:6:7:8":   "1:2:3:4:5:6:7:8",
		"1:0:2:3:4:5:6:7":   "1:0:2:3:4:5:6:7",
		"FD00::ABCD":        "fd00::abcd",
	} {
		if got := formatAddr(netip.MustParseAddr(in)); got != want {
			t.Errorf("formatAddr(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestNormalizeSkipsInvalid(t *testing.T) {
	s := State{
		ClusterCIDRs:  append(prefixes("10.244.1.0/24", "10.244.2.7/24"), netip.Prefix{}),
		NodeIPs:       append(addrs("192.168.1.11", "fe80::1%eth0"), netip.Addr{}),
		LocalPodCIDRs: append(prefixes("fd00:10:244:1::/64", "10.244.1.9/24"), netip.Prefix{}),
	}
	d, err := normalize(s)
	var skipped *SkippedError
	if !errors.As(err, &skipped) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("normalize: got error %v, want a *SkippedError matching ErrInvalid", err)
	}
	want := []string{
		"ClusterCIDRs[1] 10.244.2.7/24: host bits set (want 10.244.2.0/24)",
		"ClusterCIDRs[2] invalid Prefix: not a valid prefix",
		"LocalPodCIDRs[1] 10.244.1.9/24: host bits set (want 10.244.1.0/24)",
		"LocalPodCIDRs[2] invalid Prefix: not a valid prefix",
		"NodeIPs[1] fe80::1%eth0: has a zone",
		"NodeIPs[2] invalid IP: not a valid address",
	}
	if diff := cmp.Diff(want, skipped.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	valid := State{ClusterCIDRs: prefixes("10.244.1.0/24"), NodeIPs: addrs("192.168.1.11"), LocalPodCIDRs: prefixes("fd00:10:244:1::/64")}
	if diff := cmp.Diff(Render(valid), d.render()); diff != "" {
		t.Errorf("the valid values were not all kept (-want +got):\n%s", diff)
	}
	if _, err := normalize(dualStack); err != nil {
		t.Errorf("normalize(dualStack): %v", err)
	}
}

func TestFake(t *testing.T) {
	var f Fake
	if f.Dump() != "" {
		t.Errorf("Dump before any Sync = %q, want empty", f.Dump())
	}
	if err := f.Sync(v4Only); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(dualStack); err != nil {
		t.Fatal(err)
	}
	if got, ok := f.LastState(); !ok || !cmp.Equal(got, dualStack, netipEqual) {
		t.Errorf("LastState = %v, %v; want dualStack", got, ok)
	}
	if f.Syncs() != 2 {
		t.Errorf("Syncs = %d, want 2", f.Syncs())
	}
	if diff := cmp.Diff(Render(dualStack), f.Dump()); diff != "" {
		t.Errorf("Dump (-want +got):\n%s", diff)
	}

	bad := State{ClusterCIDRs: prefixes("10.244.1.1/24")}
	if err := f.Sync(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("Sync(%v) = %v, want ErrInvalid", bad, err)
	}

	f.SyncErr = errors.New("kernel says no")
	if err := f.Sync(v4Only); !errors.Is(err, f.SyncErr) {
		t.Errorf("Sync with SyncErr = %v", err)
	}
	if f.Syncs() != 3 {
		t.Errorf("Syncs = %d, want 3 (a failed Sync is not counted)", f.Syncs())
	}
	if err := f.Cleanup(); err != nil || f.Dump() != "" || f.Cleanups() != 1 {
		t.Errorf("after Cleanup: err %v, Dump %q, Cleanups %d", err, f.Dump(), f.Cleanups())
	}
	if _, ok := f.LastState(); ok {
		t.Error("LastState after Cleanup reports a table")
	}
}
