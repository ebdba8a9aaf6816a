package nft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/podnet/podnet/integration/sandbox"
)

func TestMain(m *testing.M) { sandbox.Main(m) }

// newTable returns a Table programming ns.
func newTable(t testing.TB, ns *sandbox.NetNS) *Table {
	t.Helper()
	tbl, err := New(WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// runNft runs the nft binary inside ns and returns its output.
func runNft(ns *sandbox.NetNS, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/nft", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := ns.Start(cmd); err != nil {
		return "", fmt.Errorf("start nft %v: %w", args, err)
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("nft %v: %w: %s", args, err, stderr.String())
	}
	return stdout.String(), nil
}

func nft(t *testing.T, ns *sandbox.NetNS, args ...string) string {
	t.Helper()
	out, err := runNft(ns, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// trimTrailing removes trailing whitespace from every line and the text.
func trimTrailing(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// checkListing compares `nft list table inet podnet` in ns with Render(s).
func checkListing(t *testing.T, ns *sandbox.NetNS, s State) {
	t.Helper()
	got := trimTrailing(nft(t, ns, "list", "table", "inet", TableName))
	if diff := cmp.Diff(trimTrailing(Render(s)), got); diff != "" {
		t.Errorf("nft list table differs from Render (-want +got):\n%s", diff)
	}
}

// checkSynced reads the table back through netlink and checks that it is current
// and that a Sync of s would change no element, so it would send no batch.
func checkSynced(t *testing.T, ns *sandbox.NetNS, s State) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := read(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !cur.current {
		t.Fatalf("table not recognised as current: %+v", cur)
	}
	d, _ := normalize(s)
	if changes := elementChanges(cur.elements, d); len(changes) > 0 {
		t.Errorf("after Sync, a new Sync would still change %d sets, first %s", len(changes), changes[0].spec.name)
	}
}

var handleRE = regexp.MustCompile(`# handle (\d+)`)

// ruleHandles returns the handles of the postrouting chain and its rules.
func ruleHandles(t *testing.T, ns *sandbox.NetNS) []string {
	t.Helper()
	out := nft(t, ns, "-a", "list", "chain", "inet", TableName, chainPostrouting)
	var hs []string
	for _, m := range handleRE.FindAllStringSubmatch(out, -1) {
		hs = append(hs, m[1])
	}
	if len(hs) != 1+len(postroutingRules) {
		t.Fatalf("want handles of the chain and %d rules in:\n%s", len(postroutingRules), out)
	}
	return hs
}

func TestTableSync(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-sync")
	tbl := newTable(t, ns)

	steps := []struct {
		name  string
		state State
	}{
		{"dual-stack", dualStack},
		{"add and remove a CIDR and a node IP", State{
			ClusterCIDRs: prefixes("10.244.1.0/24", "10.244.3.0/24", "fd00:10:244:1::/64", "fd00:10:244:2::/64"),
			NodeIPs:      addrs("192.168.1.11", "192.168.1.13", "2001:db8::11", "2001:db8::12"),
		}},
		{"formatting edges", edges},
		{"whole address space", wholeSpace},
		{"empty", State{}},
		{"dual-stack again", dualStack},
	}
	var handles []string
	for _, step := range steps {
		if err := tbl.Sync(step.state); err != nil {
			t.Fatalf("%s: Sync: %v", step.name, err)
		}
		checkListing(t, ns, step.state)
		checkSynced(t, ns, step.state)
		hs := ruleHandles(t, ns)
		if handles != nil && !cmp.Equal(hs, handles) {
			t.Errorf("%s: chain and rule handles changed from %v to %v", step.name, handles, hs)
		}
		handles = hs
	}

	// A new Table, as after a daemon restart, keeps the chain and its rules.
	tbl2 := newTable(t, ns)
	for _, s := range []State{dualStack, v4Only} {
		if err := tbl2.Sync(s); err != nil {
			t.Fatalf("Sync from a new Table: %v", err)
		}
		checkListing(t, ns, s)
		if hs := ruleHandles(t, ns); !cmp.Equal(hs, handles) {
			t.Errorf("Sync from a new Table changed handles from %v to %v", handles, hs)
		}
	}

	for i := range 2 { // the second time, the table is already gone
		if err := tbl.Cleanup(); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	if out := nft(t, ns, "list", "tables"); strings.Contains(out, TableName) {
		t.Errorf("table still there after Cleanup:\n%s", out)
	}
}

// TestTableReplacesForeignLayout: a table podnet did not write with this layout
// (here by nft, without rule tags) is replaced whole; other tables stay.
func TestTableReplacesForeignLayout(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-layout")
	const other = "table inet other {\n\tchain c {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n"
	old := strings.Replace(Render(dualStack), "masquerade fully-random", "masquerade", 1)
	if _, err := runNft(ns, other+old, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	before := ruleHandles(t, ns)

	tbl := newTable(t, ns)
	if err := tbl.Sync(dualStack); err != nil {
		t.Fatal(err)
	}
	checkListing(t, ns, dualStack)
	if after := ruleHandles(t, ns); cmp.Equal(before, after) {
		t.Errorf("handles %v unchanged: the table was not recreated", after)
	}
	if got := nft(t, ns, "list", "table", "inet", "other"); got != other {
		t.Errorf("table inet other changed:\n%s", got)
	}
}

func TestTableSkipsInvalid(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-invalid")
	tbl := newTable(t, ns)
	s := State{
		ClusterCIDRs: append(prefixes("10.244.1.0/24", "10.244.2.7/24"), netip.Prefix{}),
		NodeIPs:      append(addrs("192.168.1.11"), netip.Addr{}, netip.MustParseAddr("fe80::1%eth0")),
	}
	err := tbl.Sync(s)
	var skipped *SkippedError
	if !errors.As(err, &skipped) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Sync: got %v, want a *SkippedError", err)
	}
	if len(skipped.Problems) != 4 {
		t.Errorf("got %d problems, want 4: %v", len(skipped.Problems), skipped.Problems)
	}
	checkListing(t, ns, State{ClusterCIDRs: prefixes("10.244.1.0/24"), NodeIPs: addrs("192.168.1.11")})
}

// TestTableLargeState applies a batch larger than the default socket buffer.
func TestTableLargeState(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-large")
	tbl := newTable(t, ns)
	var s State
	for i := range 3000 {
		s.ClusterCIDRs = append(s.ClusterCIDRs,
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)}), 64))
		s.NodeIPs = append(s.NodeIPs,
			netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}))
	}
	if err := tbl.Sync(s); err != nil {
		t.Fatal(err)
	}
	checkListing(t, ns, s)

	// Element changes only: keep the IPv4 half (the lists alternate families).
	half := State{}
	for i := 0; i < len(s.ClusterCIDRs); i += 2 {
		half.ClusterCIDRs = append(half.ClusterCIDRs, s.ClusterCIDRs[i])
		half.NodeIPs = append(half.NodeIPs, s.NodeIPs[i])
	}
	if err := tbl.Sync(half); err != nil {
		t.Fatal(err)
	}
	checkListing(t, ns, half)
}
