package nft

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/podnet/podnet/integration/sandbox"
)

// affinityState has a dual-stack ClientIP-affinity service with a NodePort.
var affinityState = State{
	ClusterCIDRs: prefixes("10.244.1.0/24", "fd00:10:244:1::/64"),
	NodeIPs:      addrs("192.168.1.11", "2001:db8::11"),
	NodeName:     "node1",
	LocalIPs:     addrs("192.168.1.11", "2001:db8::11"),
	Services: []Service{{
		Namespace: "default", Name: "sticky",
		ClusterIPs:      addrs("10.96.0.20", "fd00:96::20"),
		Ports:           []ServicePort{{Protocol: TCP, Port: 80, NodePort: 30080}},
		AffinityTimeout: 600 * time.Second,
		Endpoints: []Endpoint{
			{Address: netip.MustParseAddr("10.244.1.5"), Ports: map[string]uint16{"": 8080}, NodeName: "node1", Ready: true},
			{Address: netip.MustParseAddr("10.244.1.6"), Ports: map[string]uint16{"": 8080}, NodeName: "node1", Ready: true},
			{Address: netip.MustParseAddr("fd00:10:244:1::5"), Ports: map[string]uint16{"": 8080}, NodeName: "node1", Ready: true},
		},
	}},
}

func TestTableSyncAffinity(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "nft-aff")
	tbl := newTable(t, ns)
	if err := tbl.Sync(affinityState); err != nil {
		t.Fatal(err)
	}
	got := canonical(trimTrailing(nft(t, ns, "list", "table", "inet", TableName)))
	if diff := cmp.Diff(canonical(trimTrailing(Render(affinityState))), got); diff != "" {
		t.Errorf("nft list table differs from Render (-want +got):\n%s", diff)
	}
	checkSynced(t, ns, affinityState)
}

// stickyService is web with ClientIP affinity for timeout and a NodePort.
func stickyService(timeout time.Duration, eps ...Endpoint) Service {
	s := webService(eps...)
	s.AffinityTimeout = timeout
	s.Ports[0].NodePort = 30080
	return s
}

// affinityElements returns the elements of affinity-v4 as nft lists them.
func affinityElements(t *testing.T, ns *sandbox.NetNS) string {
	t.Helper()
	return nft(t, ns, "list", "set", "inet", TableName, "affinity-v4")
}

// A client's new connections stick to one endpoint, through the ClusterIP
// and through the NodePort; a removed endpoint's clients move to another one;
// an element lives for the affinity timeout.
func TestSvcAffinity(t *testing.T) {
	l := newSvcLab(t, "aff")
	a, b := svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)
	l.sync(t, stickyService(10*time.Minute, a, b))

	for _, addr := range []string{svcWebVIP + ":80", "192.168.1.11:30080"} {
		got := askMany(t, l.client, addr, 20, svcClientIP)
		if len(got) != 1 {
			t.Errorf("%s: 20 connections from one client went to %v, want one endpoint", addr, got)
		}
	}
	first := askMany(t, l.client, svcWebVIP+":80", 1, svcClientIP)
	var pinned Endpoint
	var other string
	if first["pod-a"] == 1 {
		pinned, other = a, "pod-b"
	} else {
		pinned, other = b, "pod-a"
	}
	if elems := affinityElements(t, l.node); !strings.Contains(elems, svcClientIP+" . "+svcWebVIP+" . tcp . 80 . ") {
		t.Errorf("affinity-v4 has no element for %s → %s:80:\n%s", svcClientIP, svcWebVIP, elems)
	}

	// The pinned endpoint goes away: the client moves to the other one.
	rest := a
	if pinned.Address == a.Address {
		rest = b
	}
	l.sync(t, stickyService(10*time.Minute, rest))
	if got := askMany(t, l.client, svcWebVIP+":80", 10, svcClientIP); got[other] != 10 {
		t.Errorf("after removing the pinned endpoint: %v, want all on %s", got, other)
	}

	// A pod of another node through this node's NodePort (the conformance
	// spec's case): masqueraded, and still pinned, since affinity looks at the
	// client's own address before the masquerade.
	l.localPods = prefixes("10.244.2.0/24", "10.244.3.0/24")
	l.sync(t, stickyService(10*time.Minute, a, b))
	if got := askAll(t, l.client, "tcp4", "192.168.1.11:30080", 20, masqueraded); len(got) != 1 {
		t.Errorf("another node's pod to the NodePort: 20 connections went to %v, want one endpoint", got)
	}

}

// An affinity element lives for the service's timeout.
func TestSvcAffinityTimeout(t *testing.T) {
	l := newSvcLab(t, "afftime")
	l.sync(t, stickyService(time.Second, svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))
	askMany(t, l.client, svcWebVIP+":80", 1, svcClientIP)
	if elems := affinityElements(t, l.node); !strings.Contains(elems, "expires") {
		t.Fatalf("no affinity element with an expiry after a connection:\n%s", elems)
	}
	deadline := time.Now().Add(3 * time.Second)
	for strings.Contains(affinityElements(t, l.node), svcClientIP+" . ") {
		if time.Now().After(deadline) {
			t.Fatalf("affinity element still there 3 s after a connection with a 1 s timeout:\n%s", affinityElements(t, l.node))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Without affinity the same client spreads over both endpoints: the control
// for TestSvcAffinity's stickiness.
func TestSvcNoAffinitySpreads(t *testing.T) {
	l := newSvcLab(t, "noaff")
	l.sync(t, stickyService(0, svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)))
	for _, addr := range []string{svcWebVIP + ":80", "192.168.1.11:30080"} {
		if got := askMany(t, l.client, addr, 20, svcClientIP); len(got) != 2 {
			t.Errorf("%s: 20 connections without affinity went to %v, want both endpoints", addr, got)
		}
	}
}
