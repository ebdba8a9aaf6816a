package integration

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/routing"
)

// nodeRoutes lists podnet's routes on a node as "dst via gw".
func nodeRoutes(t *testing.T, n *lab.Node) []string {
	t.Helper()
	rs, err := routing.New(n.NS.Fd()).ListRoutes()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Via))
	}
	slices.Sort(out)
	return out
}

// eventually polls until nodeRoutes equals want, for up to 5 s.
func eventually(t *testing.T, n *lab.Node, want []string, why string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = nodeRoutes(t, n); slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("%s: routes on %s = %v, want %v", why, n.Name, got, want)
}

// TestDaemonKeepsRoutesInStep: podnetd restores a deleted route at once, follows
// the cluster file (peer moves, peer leaves), and keeps the last good state when
// the file becomes invalid.
func TestDaemonKeepsRoutesInStep(t *testing.T) {
	l := newLab(t, 3)
	n1 := l.Nodes[0]
	want := []string{"10.244.2.0/24 via 192.0.2.12", "10.244.3.0/24 via 192.0.2.13"}
	eventually(t, n1, want, "initial")

	// Someone deletes a route: the kernel event brings the daemon back.
	m := routing.New(n1.NS.Fd())
	c, err := n1.NS.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := m.SyncRoutes([]routing.Route{{Dst: netip.MustParsePrefix("10.244.3.0/24"), Via: netip.MustParseAddr("192.0.2.13")}}); err != nil {
		t.Fatal(err) // removes 10.244.2.0/24 behind the daemon's back
	}
	eventually(t, n1, want, "after external delete")

	// node2 moves to a new address, node3 leaves.
	l.Nodes[1].Addr = netip.MustParseAddr("192.0.2.22")
	all := l.Nodes
	l.Nodes = all[:2]
	err = l.WriteClusterFile()
	l.Nodes = all // node3 keeps running (and is torn down) but is no longer listed
	if err != nil {
		t.Fatal(err)
	}
	moved := []string{"10.244.2.0/24 via 192.0.2.22"}
	eventually(t, n1, moved, "after cluster change")

	// An invalid file is logged and ignored; the last good state stays.
	if err := os.WriteFile(l.ClusterFile(), []byte("nodes:\n  - name: node1\n    podCIDRs: [not-a-cidr]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := nodeRoutes(t, n1); !slices.Equal(got, moved) {
		t.Fatalf("routes changed after an invalid cluster file: %v", got)
	}
	log, _ := os.ReadFile(n1.Dir + "/podnetd.log")
	if !strings.Contains(string(log), "nodes[0].podCIDRs[0]") {
		t.Fatalf("daemon log does not name the bad field:\n%s", tail(string(log), 10))
	}
}
