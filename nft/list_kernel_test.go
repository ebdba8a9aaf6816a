package nft

import (
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/podnet/podnet/integration/sandbox"
)

// allKinds has a service of every kind the kernel tests use: those of
// svcState (dual-stack ClusterIP, NodePort with externalTrafficPolicy Local and
// an external IP, LoadBalancer with a source range, no endpoints), the
// ClientIP-affinity service of affinityState, and a dual-stack Local
// LoadBalancer with several source ranges per family.
var allKinds = func() State {
	s := svcState.Clone()
	s.Services = append(s.Services, affinityState.Services[0].Clone(), Service{
		Namespace: "default", Name: "lb-local",
		ClusterIPs: addrs("10.96.0.30", "fd00:96::30"), LoadBalancerIPs: addrs("198.51.100.30", "2001:db8:100::30"),
		LoadBalancerSourceRanges: prefixes("192.0.2.0/24", "203.0.113.0/25", "2001:db8:1::/48", "2001:db8:2::/48"),
		Ports:                    []ServicePort{{Protocol: TCP, Port: 8443, NodePort: 31443}},
		ExternalTrafficPolicy:    PolicyLocal,
		Endpoints: []Endpoint{
			{Address: netip.MustParseAddr("10.244.1.30"), Ports: map[string]uint16{"": 8443}, NodeName: "node1", Ready: true},
			{Address: netip.MustParseAddr("10.244.2.30"), Ports: map[string]uint16{"": 8443}, NodeName: "node2", Ready: true},
			{Address: netip.MustParseAddr("fd00:10:244:1::30"), Ports: map[string]uint16{"": 8443}, NodeName: "node1", Ready: true},
		},
	})
	return s
}()

// list calls tbl.List, failing the test on an error.
func list(t testing.TB, tbl *Table) *Listing {
	t.Helper()
	l, err := tbl.List()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var (
	chainLineRE = regexp.MustCompile(`^\tchain (\S+) \{`)
	ruleLineRE  = regexp.MustCompile(`^\t\t(.*) # handle (\d+)$`)
)

// listedRules returns the rules `nft -a list table inet podnet` prints in ns,
// with their chains and handles.
func listedRules(t *testing.T, ns *sandbox.NetNS) []ListedRule {
	t.Helper()
	var rules []ListedRule
	chain := ""
	for _, line := range strings.Split(nft(t, ns, "-a", "list", "table", "inet", TableName), "\n") {
		if m := chainLineRE.FindStringSubmatch(line); m != nil {
			chain = m[1]
			continue
		}
		if line == "\t}" {
			chain = ""
		}
		if m := ruleLineRE.FindStringSubmatch(line); m != nil && chain != "" {
			h, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, ListedRule{Chain: chain, Handle: h, Text: m[1]})
		}
	}
	return rules
}

// checkList compares List with what nft prints in ns: the text, and the
// rules with their handles.
func checkList(t *testing.T, ns *sandbox.NetNS, l *Listing) {
	t.Helper()
	if diff := cmp.Diff(nft(t, ns, "list", "table", "inet", TableName), l.Text); diff != "" {
		t.Errorf("List differs from nft list table (-nft +List):\n%s", diff)
	}
	if diff := cmp.Diff(listedRules(t, ns), l.Rules); diff != "" {
		t.Errorf("List's rules differ from nft -a list table (-nft +List):\n%s", diff)
	}
}

// sortCountChains puts the endpoint-count chains of a listing, of every kind,
// in name order after the fixed ones: the kernel lists chains in the order
// Sync created them.
func sortCountChains(s string) string {
	const sep = "\n\n\tchain "
	parts := strings.Split(strings.TrimSuffix(s, "\n}"), sep)
	var fixed, count []string
	for _, p := range parts[1:] {
		if _, ok := parseCountChain(strings.Fields(p)[0]); ok {
			count = append(count, p)
		} else {
			fixed = append(fixed, p)
		}
	}
	slices.Sort(count)
	return strings.Join(slices.Concat(parts[:1], fixed, count), sep) + "\n}"
}

// TestListKernel syncs states of every kind and checks that List prints what
// nft prints, and, up to the order of endpoint-count chains and of
// concatenated elements (which Render sorts otherwise), what Render gives.
func TestListKernel(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-list")
	tbl := newTable(t, ns)

	changed := allKinds.Clone()
	changed.Services[0].Endpoints = changed.Services[0].Endpoints[1:]     // web: one endpoint less
	changed.Services[2].Endpoints = append(changed.Services[2].Endpoints, // lb: a second one
		Endpoint{Address: netip.MustParseAddr("10.244.1.7"), Ports: map[string]uint16{"": 8443}, NodeName: "node1", Ready: true})
	steps := []struct {
		name  string
		state State
	}{
		{"empty", State{}},
		{"nodes and masquerade", dualStack},
		{"formatting edges", edges},
		{"whole address space", wholeSpace},
		{"services of every kind", allKinds},
		{"endpoints changed", changed},
		{"no services", v4Only},
	}
	for _, step := range steps {
		if err := tbl.Sync(step.state); err != nil {
			t.Fatalf("%s: Sync: %v", step.name, err)
		}
		l := list(t, tbl)
		checkList(t, ns, l)
		if diff := cmp.Diff(canonical(sortCountChains(trimTrailing(Render(step.state)))), canonical(sortCountChains(trimTrailing(l.Text)))); diff != "" {
			t.Errorf("%s: List differs from Render (-Render +List):\n%s", step.name, diff)
		}
		var f Fake
		_ = f.Sync(step.state)
		want, err := f.List()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.Sets, l.Sets); diff != "" {
			t.Errorf("%s: set sizes (-Fake +List):\n%s", step.name, diff)
		}
	}
}

// TestListReadsKernel changes the table behind the Table's back with nft:
// List shows the new element, the new rules and chain, exactly as nft does;
// an expression it cannot print shows as a placeholder.
func TestListReadsKernel(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-list-cli")
	tbl := newTable(t, ns)
	if err := tbl.Sync(affinityState); err != nil {
		t.Fatal(err)
	}
	before := list(t, tbl)

	script := `add element inet podnet node-ips-v4 { 192.168.1.99 }
add element inet podnet affinity-v4 { 10.0.0.1 . 10.96.0.20 . tcp . 80 . 0x00000001 timeout 10m }
insert rule inet podnet postrouting meta l4proto tcp tcp dport { 22, 80 } ct state established,related counter accept
add chain inet podnet extra
add rule inet podnet extra ip saddr 10.0.0.0/12 ip daddr != 127.0.0.0/8 return
add rule inet podnet extra iifname "eth0" meta mark set 0x00000001
add rule inet podnet extra ip daddr vmap { 1.2.3.4 : accept, 5.6.7.8 : drop }
add rule inet podnet extra ip6 saddr fd00::/8 udp dport 53 counter accept
add rule inet podnet extra tcp dport 1000-2000 reject with tcp reset
add rule inet podnet extra ip daddr 1.1.1.1 tcp dport 8 dnat ip to 10.0.0.1:80
add rule inet podnet extra ip6 daddr ::1 tcp dport 9 dnat ip6 to [fd00::1]:80
add rule inet podnet extra ct state new log prefix "new " accept
add rule inet podnet extra meta mark & 0x0000ff00 == 0x00000100 comment "a comment"
add rule inet podnet extra ip protocol icmp limit rate 10/second accept
add rule inet podnet extra meta l4proto ipv6-icmp ip6 daddr @node-ips-v6 drop
add rule inet podnet extra quota 100 mbytes
`
	if _, err := runNft(ns, script, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	l := list(t, tbl)

	// The element nft added counts down its expiry between the two reads, and
	// nft prints the quota List cannot decode.
	expires := regexp.MustCompile(`expires \S+ `)
	got := expires.ReplaceAllString(l.Text, "expires … ")
	want := expires.ReplaceAllString(nft(t, ns, "list", "table", "inet", TableName), "expires … ")
	want = strings.Replace(want, "quota 100 mbytes", "# unknown expression quota", 1)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List differs from nft list table (-nft +List):\n%s", diff)
	}
	rules := listedRules(t, ns)
	for i := range rules {
		if rules[i].Text == "quota 100 mbytes" {
			rules[i].Text = "# unknown expression quota"
		}
	}
	if diff := cmp.Diff(rules, l.Rules); diff != "" {
		t.Errorf("List's rules differ from nft -a list table (-nft +List):\n%s", diff)
	}

	sizes := func(l *Listing) map[string]int {
		m := map[string]int{}
		for _, s := range l.Sets {
			m[s.Name] = s.Elements
		}
		return m
	}
	if b, a := sizes(before), sizes(l); a["node-ips-v4"] != b["node-ips-v4"]+1 || a["affinity-v4"] != b["affinity-v4"]+1 {
		t.Errorf("node-ips-v4 and affinity-v4 went from %d, %d to %d, %d elements; want one more each",
			b["node-ips-v4"], b["affinity-v4"], a["node-ips-v4"], a["affinity-v4"])
	}
	first := firstOf(l.Rules, "postrouting")
	if first < 0 || l.Rules[first].Text != "tcp dport { 22, 80 } ct state established,related counter packets 0 bytes 0 accept" {
		t.Errorf("the inserted rule is not the first of postrouting: %+v", l.Rules)
	}
}

// firstOf returns the index of the first rule of chain, -1 if none.
func firstOf(rules []ListedRule, chain string) int {
	for i, r := range rules {
		if r.Chain == chain {
			return i
		}
	}
	return -1
}

func TestListNoTable(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-list-none")
	tbl := newTable(t, ns)
	if _, err := tbl.List(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("List before Sync: got %v, want ErrNoTable", err)
	}
	if err := tbl.Sync(v4Only); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.List(); err != nil {
		t.Fatalf("List after Sync: %v", err)
	}
	if err := tbl.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.List(); !errors.Is(err, ErrNoTable) {
		t.Errorf("List after Cleanup: got %v, want ErrNoTable", err)
	}
}

// BenchmarkListKernel10k lists a table with 10k services of 4 endpoints
// in the kernel (sandbox).
func BenchmarkListKernel10k(b *testing.B) {
	sandbox.Require(b)
	ns := sandbox.TestNetNS(b, "nft-bench-list")
	tbl := newTable(b, ns)
	if err := tbl.Sync(benchState(10000)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var l *Listing
	for range b.N {
		l = list(b, tbl)
	}
	n := 0
	for _, s := range l.Sets {
		n += s.Elements
	}
	b.ReportMetric(float64(n), "elements")
}
