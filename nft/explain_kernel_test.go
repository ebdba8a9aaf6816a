package nft

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/podnet/podnet/integration/sandbox"
)

var addrPortEqual = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

// explainNetNS returns a namespace whose own addresses, as fib sees them,
// are the LocalIPs of explainState, with a Table for it.
func explainNetNS(t *testing.T, name string) (*sandbox.NetNS, *Table) {
	t.Helper()
	ns := sandbox.TestNetNS(t, name)
	for _, a := range explainState.LocalIPs {
		if err := sandbox.AddAddr(ns, "lo", netip.PrefixFrom(a, a.BitLen())); err != nil {
			t.Fatal(err)
		}
	}
	return ns, newTable(t, ns)
}

// Table.Explain reads the kernel's elements and routes; Fake.Explain reads
// the State. Synced with the same State, in a namespace whose local addresses
// are the State's LocalIPs, they must agree on every case, interval edges
// included.
func TestTableExplainMatchesFake(t *testing.T) {
	sandbox.Require(t)
	_, tbl := explainNetNS(t, "explain")
	if _, err := tbl.Explain(explainCases[0].p); !errors.Is(err, ErrNoTable) {
		t.Errorf("before Sync: got %v, want ErrNoTable", err)
	}
	var f Fake
	for _, x := range []Interface{tbl, &f} {
		if err := x.Sync(explainState); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range explainCases {
		want, err := f.Explain(tc.p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tbl.Explain(tc.p)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff(want, got, addrPortEqual); diff != "" {
			t.Errorf("%s: Table.Explain differs from Fake.Explain (-fake +table):\n%s", tc.name, diff)
		}
	}
}

// Elements changed behind podnet's back (nft CLI) change Table.Explain: it
// reads the kernel, not the last State.
func TestTableExplainReadsKernel(t *testing.T) {
	sandbox.Require(t)
	ns, tbl := explainNetNS(t, "explain-edit")
	if err := tbl.Sync(explainState); err != nil {
		t.Fatal(err)
	}
	explain := func(p Packet) *Explanation {
		t.Helper()
		ex, err := tbl.Explain(p)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	web := tcpTo("10.244.1.2", "10.96.0.10", 80)
	podA, podB := netip.MustParseAddrPort("10.244.2.2:8080"), netip.MustParseAddrPort("10.244.3.2:8080")
	if got := explain(web).Backends; !slices.Equal(got, []netip.AddrPort{podA, podB}) {
		t.Fatalf("before the edits: backends %v", got)
	}

	nft(t, ns, "delete", "element", "inet", TableName, "backends-v4", "{ 10.96.0.10 . tcp . 80 . 0x00000001 }")
	ex := explain(web)
	if !slices.Equal(ex.Backends, []netip.AddrPort{podA}) || !strings.Contains(ex.Steps[2].What, "no element for slot 1") {
		t.Errorf("after deleting slot 1 of web: got\n%s", ex)
	}

	nft(t, ns, "delete", "element", "inet", TableName, "service-ips-v4", "{ 10.96.0.10 . tcp . 80 }")
	if ex := explain(web); ex.Verdict != VerdictReject || ex.Steps[1].Rule != "ip daddr @cluster-ips-v4 reject with icmp port-unreachable" {
		t.Errorf("after deleting web's service-ips element: got\n%s", ex)
	}

	// An affinity element added by hand pins the client to slot 1.
	sticky := tcpTo("10.244.1.2", "10.96.0.30", 80)
	if ex := explain(sticky); len(ex.Backends) != 2 {
		t.Fatalf("sticky before the affinity element: got\n%s", ex)
	}
	nft(t, ns, "add", "element", "inet", TableName, "affinity-v4", "{ 10.244.1.2 . 10.96.0.30 . tcp . 80 . 0x00000001 timeout 1m }")
	ex = explain(sticky)
	if !slices.Equal(ex.Backends, []netip.AddrPort{podB}) ||
		!strings.HasPrefix(ex.Steps[2].Element, "10.244.1.2 . 10.96.0.30 . tcp . 80 . 0x00000001, ") {
		t.Errorf("sticky with an affinity element for slot 1: got\n%s", ex)
	}
}

// A table whose rules are not this version's is not explained.
func TestTableExplainForeignLayout(t *testing.T) {
	sandbox.Require(t)
	ns, tbl := explainNetNS(t, "explain-foreign")
	// nft writes no rule tags.
	if _, err := runNft(ns, Render(dualStack), "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Explain(explainCases[0].p); !errors.Is(err, ErrLayout) {
		t.Errorf("got %v, want ErrLayout", err)
	}
}

// Real connections agree with Table.Explain: the endpoints reached are its
// Backends, its masquerade decisions are what the servers see, and its
// rejects and drops are refused and dropped connections.
func TestTableExplainTraffic(t *testing.T) {
	sandbox.Require(t)
	l := newExtLab(t, "expl")
	a, b := svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)
	ext := extService(PolicyCluster, a, b)
	ext.ClusterIPs = addrs("10.96.0.20")
	sticky := webService(a, b)
	sticky.Name, sticky.ClusterIPs, sticky.AffinityTimeout = "sticky", addrs("10.96.0.12"), 10*time.Minute
	s := State{
		ClusterCIDRs: prefixes("10.244.0.0/16"),
		NodeIPs:      addrs(extNodeIP),
		NodeName:     "node1",
		LocalIPs:     addrs(extNodeIP),
		Services: []Service{
			webService(a, b), ext, sticky,
			{Namespace: "default", Name: "self", ClusterIPs: addrs(svcSelfVIP), Ports: []ServicePort{{Name: "http", Protocol: TCP, Port: 80}}, Endpoints: []Endpoint{a}},
			{Namespace: "default", Name: "empty", ClusterIPs: addrs(svcEmptyVIP), Ports: []ServicePort{{Protocol: TCP, Port: 80}}},
		},
	}
	var f Fake
	for _, x := range []Interface{l.tbl, &f} {
		if err := x.Sync(s); err != nil {
			t.Fatal(err)
		}
	}
	server := map[string]netip.AddrPort{"pod-a": netip.MustParseAddrPort(svcPodAIP + ":8080"), "pod-b": netip.MustParseAddrPort(svcPodBIP + ":8080")}
	explain := func(p Packet, fake bool) *Explanation {
		t.Helper()
		ex, err := l.tbl.Explain(p)
		if err != nil {
			t.Fatal(err)
		}
		if fake {
			want, err := f.Explain(p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, ex, addrPortEqual); diff != "" {
				t.Errorf("Table.Explain differs from Fake.Explain (-fake +table):\n%s", diff)
			}
		}
		return ex
	}
	// reached checks that every server that answered is one of backends.
	reached := func(what string, got map[string]int, backends []netip.AddrPort) {
		t.Helper()
		for name := range got {
			if !slices.Contains(backends, server[name]) {
				t.Errorf("%s: %s (%s) answered, not one of Explain's backends %v", what, name, server[name], backends)
			}
		}
	}

	// ClusterIP from a pod: both endpoints, the client keeps its address.
	ex := explain(tcpTo(svcClientIP, svcWebVIP, 80), true)
	if ex.Verdict != VerdictDNAT || len(ex.Backends) != 2 || ex.Masquerade {
		t.Errorf("client to ClusterIP: got\n%s", ex)
	}
	got := askAll(t, l.client, "tcp4", net.JoinHostPort(svcWebVIP, "80"), 20, client(svcClientIP))
	reached("client to ClusterIP", got, ex.Backends)
	wantServers(t, "client to ClusterIP", got, "pod-a", "pod-b")

	// Load balancer IP from inside the source ranges: masqueraded.
	ex = explain(tcpTo(extAIP, extLBVIP, 80), true)
	if ex.Verdict != VerdictDNAT || !ex.Masquerade {
		t.Errorf("ext-a to load balancer IP: got\n%s", ex)
	}
	reached("ext-a to load balancer IP", askAll(t, l.extA, "tcp4", net.JoinHostPort(extLBVIP, "80"), 10, masqueraded), ex.Backends)

	// A pod reaching itself: masqueraded (hairpin).
	ex = explain(tcpTo(svcPodAIP, svcSelfVIP, 80), true)
	if !ex.Masquerade || !strings.Contains(ex.MasqReason, "reached itself") {
		t.Errorf("pod-a to itself: got\n%s", ex)
	}
	if r, err := ask(l.podA, "tcp4", net.JoinHostPort(svcSelfVIP, "80")); err != nil || r.client == svcPodAIP {
		t.Errorf("pod-a to itself: %+v, %v; want an answer to another address than %s", r, err, svcPodAIP)
	}

	// The NodePort on the node's address on ext-a's link: the kernel's
	// routing knows it is local, the Fake (LocalIPs only) does not.
	np := tcpTo(extAIP, "192.0.2.1", 30080)
	if ex = explain(np, false); ex.Verdict != VerdictDNAT || ex.Chains[2] != "np-v4-2" {
		t.Errorf("ext-a to the NodePort on 192.0.2.1: got\n%s", ex)
	}
	if fx, err := f.Explain(np); err != nil || fx.Verdict != VerdictNone {
		t.Errorf("Fake, ext-a to the NodePort on 192.0.2.1: got %v, %v; want verdict none", fx, err)
	}
	reached("ext-a to the NodePort on 192.0.2.1", askAll(t, l.extA, "tcp4", "192.0.2.1:30080", 10, masqueraded), ex.Backends)

	// Session affinity: after one connection, the client is pinned to the
	// endpoint it reached.
	stickyP := tcpTo(svcClientIP, "10.96.0.12", 80)
	if ex := explain(stickyP, true); len(ex.Backends) != 2 {
		t.Errorf("sticky before any connection: got\n%s", ex)
	}
	first := askAll(t, l.client, "tcp4", "10.96.0.12:80", 1, client(svcClientIP))
	ex = explain(stickyP, false)
	for name := range first {
		if !slices.Equal(ex.Backends, []netip.AddrPort{server[name]}) || !strings.Contains(ex.Steps[2].What, "is pinned to slot") {
			t.Errorf("sticky after a connection to %s: got\n%s", name, ex)
		}
	}

	// Drops and rejects.
	if ex := explain(tcpTo("198.51.100.2", extLBVIP, 80), true); ex.Verdict != VerdictDrop {
		t.Errorf("ext-b to load balancer IP: got\n%s", ex)
	}
	wantDropped(t, probe{l.extB, net.JoinHostPort(extLBVIP, "80"), "ext-b, outside loadBalancerSourceRanges"})
	if ex := explain(tcpTo(svcClientIP, svcEmptyVIP, 80), true); ex.Verdict != VerdictReject || ex.Chains[2] != chainNoEndpoints {
		t.Errorf("client to a service without endpoints: got\n%s", ex)
	}
	// Up to 3 tries: the kernel's ICMP rate limit may swallow one reject.
	var err error
	for range 3 {
		if _, err = ask(l.client, "tcp4", net.JoinHostPort(svcEmptyVIP, "80")); errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("client to a service without endpoints: %v, want connection refused", err)
	}
}
