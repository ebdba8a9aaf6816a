package nft

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/podnet/podnet/integration/sandbox"
)

// hostPortState is svcState with hostPorts of every kind: any address and one
// address, both families, TCP, UDP and SCTP, two pods with several each.
var hostPortState = func() State {
	s := svcState.Clone()
	s.HostPorts = []HostPort{
		{Protocol: TCP, Port: 8080, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 80},
		{Protocol: TCP, Port: 8080, PodIP: netip.MustParseAddr("fd00:10:244:1::5"), PodPort: 80},
		{Protocol: UDP, Port: 5353, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 53},
		{HostIP: netip.MustParseAddr("192.168.1.11"), Protocol: TCP, Port: 9000, PodIP: netip.MustParseAddr("10.244.1.6"), PodPort: 9000},
		{HostIP: netip.MustParseAddr("127.0.0.1"), Protocol: TCP, Port: 9000, PodIP: netip.MustParseAddr("10.244.1.7"), PodPort: 9000},
		{HostIP: netip.MustParseAddr("192.168.1.11"), Protocol: UDP, Port: 9000, PodIP: netip.MustParseAddr("10.244.1.6"), PodPort: 9001},
		{HostIP: netip.MustParseAddr("2001:db8::11"), Protocol: SCTP, Port: 9000, PodIP: netip.MustParseAddr("fd00:10:244:1::6"), PodPort: 9000},
		{HostIP: netip.MustParseAddr("0.0.0.0"), Protocol: SCTP, Port: 7000, PodIP: netip.MustParseAddr("10.244.1.6"), PodPort: 7001},
	}
	return s
}()

// The hostPort maps as nft lists them, and as List reads them back, after
// every kind of change: from an empty table, by the fast path, and from a
// new Table (read back from the kernel).
func TestTableSyncHostPorts(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-hp")
	tbl := newTable(t, ns)

	fewer := hostPortState.Clone()
	fewer.HostPorts = fewer.HostPorts[2:6]
	moved := hostPortState.Clone()
	moved.HostPorts[0].PodIP = netip.MustParseAddr("10.244.1.9") // another pod took the port
	moved.HostPorts[3].PodPort = 9090
	steps := []struct {
		name  string
		tbl   *Table
		state State
	}{
		{"hostPorts", tbl, hostPortState},
		{"some removed", tbl, fewer},
		{"all back", tbl, hostPortState},
		{"pod and port changed", tbl, moved},
		{"from a new Table", newTable(t, ns), hostPortState},
		{"none", tbl, svcState},
	}
	for _, step := range steps {
		if err := step.tbl.Sync(step.state); err != nil {
			t.Fatalf("%s: Sync: %v", step.name, err)
		}
		got := canonical(trimTrailing(nft(t, ns, "list", "table", "inet", TableName)))
		if diff := cmp.Diff(canonical(trimTrailing(Render(step.state))), got); diff != "" {
			t.Errorf("%s: nft list table differs from Render (-want +got):\n%s", step.name, diff)
		}
		checkSynced(t, ns, step.state)
		l := list(t, tbl)
		checkList(t, ns, l)
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
	if !strings.Contains(Render(hostPortState), "127.0.0.1 . tcp . 9000 : 10.244.1.7 . 9000") {
		t.Errorf("Render lacks the loopback hostIP mapping:\n%s", Render(hostPortState))
	}
}

func TestHostPortsSkipped(t *testing.T) {
	s := State{HostPorts: []HostPort{
		{Protocol: TCP, Port: 80, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 8080},
		{Protocol: TCP, Port: 80, PodIP: netip.MustParseAddr("10.244.1.6"), PodPort: 8080},                                              // taken
		{HostIP: netip.MustParseAddr("2001:db8::1"), Protocol: TCP, Port: 81, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 8080},  // family
		{Protocol: "ICMP", Port: 82, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 8080},                                           // protocol
		{Protocol: UDP, Port: 0, PodIP: netip.MustParseAddr("10.244.1.5"), PodPort: 8080},                                               // port
		{Protocol: UDP, Port: 83, PodPort: 8080},                                                                                        // no pod
		{HostIP: netip.MustParseAddr("192.168.1.11"), Protocol: TCP, Port: 80, PodIP: netip.MustParseAddr("10.244.1.6"), PodPort: 8080}, // kept: one address
		{Protocol: TCP, Port: 80, PodIP: netip.MustParseAddr("fd00:10:244:1::5"), PodPort: 8080},                                        // kept: IPv6
	}}
	var f Fake
	err := f.Sync(s)
	var skipped *SkippedError
	if !errors.As(err, &skipped) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Sync: %v, want a *SkippedError", err)
	}
	want := []string{
		"HostPorts[1] *:80/TCP → 10.244.1.6:8080: already mapped by HostPorts[0] *:80/TCP → 10.244.1.5:8080",
		"HostPorts[2] [2001:db8::1]:81/TCP → 10.244.1.5:8080: HostIP 2001:db8::1: not of the family of PodIP 10.244.1.5",
		`HostPorts[3] *:82/ICMP → 10.244.1.5:8080: Protocol "ICMP": want TCP, UDP or SCTP`,
		"HostPorts[4] *:0/UDP → 10.244.1.5:8080: port 0",
		"HostPorts[5] *:83/UDP → invalid AddrPort: PodIP: not a plain IP address",
	}
	if diff := cmp.Diff(want, skipped.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	text := Render(s)
	for _, e := range []string{"tcp . 80 : 10.244.1.5 . 8080", "192.168.1.11 . tcp . 80 : 10.244.1.6 . 8080", "tcp . 80 : fd00:10:244:1::5 . 8080",
		"10.244.1.5 . 10.244.1.5", "10.244.1.6 . 10.244.1.6"} {
		if !strings.Contains(text, e) {
			t.Errorf("Render lacks element %q:\n%s", e, text)
		}
	}
	l, err := f.List()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, set := range l.Sets {
		if strings.HasPrefix(set.Name, "hostport") {
			counts[set.Name] = set.Elements
		}
	}
	wantCounts := map[string]int{"hostports-v4": 1, "hostports-any-v4": 1, "hostport-hairpin-v4": 2,
		"hostports-v6": 0, "hostports-any-v6": 1, "hostport-hairpin-v6": 1}
	if diff := cmp.Diff(wantCounts, counts); diff != "" {
		t.Errorf("hostPort set sizes (-want +got):\n%s", diff)
	}
}
