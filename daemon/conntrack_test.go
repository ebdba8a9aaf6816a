package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// ctNodes is the nodes part of the cluster files of these tests.
const ctNodes = `nodes:
- name: node-a
  addresses: [192.168.1.10]
  podCIDRs: [10.244.0.0/24]
- name: node-b
  addresses: [192.168.1.11]
  podCIDRs: [10.244.1.0/24]
`

// Endpoints of the services below, as cluster file entries: A is dual-stack on
// node-a, B dual-stack on node-b.
const (
	epA = `{addresses: [10.244.0.5, "fd00:10:244::5"], node: node-a}`
	epB = `{addresses: [10.244.1.5, "fd00:10:244:1::5"], node: node-b}`
)

// dnsService is a LoadBalancer with a UDP and a TCP port, VIPs of every kind
// (dual-stack cluster IPs, an external IP, a load balancer IP) and NodePorts.
func dnsService(externalPolicy string, endpoints ...string) string {
	return fmt.Sprintf(`- name: dns
  namespace: kube-system
  type: LoadBalancer
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalIPs: [203.0.113.10]
  loadBalancerIPs: [198.51.100.10]
  externalTrafficPolicy: %s
  ports:
  - {name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}
  - {name: dns-tcp, protocol: TCP, port: 53, targetPort: 5353, nodePort: 30054}
  endpoints: [%s]
`, externalPolicy, strings.Join(endpoints, ", "))
}

// syslogService is a single-stack ClusterIP with one UDP port.
func syslogService(targetPort int, endpoints ...string) string {
	return fmt.Sprintf(`- name: syslog
  clusterIPs: [10.96.0.20]
  ports: [{protocol: UDP, port: 514, targetPort: %d}]
  endpoints: [%s]
`, targetPort, strings.Join(endpoints, ", "))
}

// webService is a TCP-only service.
func webService(endpoints ...string) string {
	return fmt.Sprintf(`- name: web
  clusterIPs: [10.96.0.30]
  ports: [{protocol: TCP, port: 80, nodePort: 30080}]
  type: NodePort
  endpoints: [%s]
`, strings.Join(endpoints, ", "))
}

// ctCluster parses a cluster file of ctNodes and services, all valid.
func ctCluster(t *testing.T, services ...string) *Cluster {
	t.Helper()
	c, err := ParseCluster([]byte(ctNodes + "services:\n" + strings.Join(services, "")))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RejectedServices) > 0 {
		t.Fatalf("services rejected: %v", c.RejectedServices)
	}
	return c
}

// ctTestDaemon is a testDaemon deleting conntrack entries from a Fake.
type ctTestDaemon struct {
	*testDaemon
	ct *conntrack.Fake
}

func newCTTestDaemon(t *testing.T) *ctTestDaemon {
	td := newTestDaemon(t, nil)
	f := &conntrack.Fake{}
	td.ctClean = &conntrackCleaner{ct: f} // as New does with Deps.Conntrack
	td.status.ConntrackCleanup = true
	return &ctTestDaemon{testDaemon: td, ct: f}
}

// sync runs one node sync of c, which must succeed.
func (td *ctTestDaemon) sync(t *testing.T, c *Cluster) {
	t.Helper()
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatalf("syncNode: %v", err)
	}
}

// calls returns the filters of each Delete call as conntrack(8) arguments.
func (td *ctTestDaemon) calls() [][]string {
	var out [][]string
	for _, c := range td.ct.Calls() {
		var fs []string
		for _, f := range c {
			fs = append(fs, f.String())
		}
		out = append(out, fs)
	}
	return out
}

func TestConntrackStaleFilters(t *testing.T) {
	const (
		notReady            = `{addresses: [10.244.0.5, "fd00:10:244::5"], node: node-a, ready: false}`
		terminatingServing  = `{addresses: [10.244.0.5, "fd00:10:244::5"], node: node-a, ready: false, serving: true, terminating: true}`
		terminatingNotServe = `{addresses: [10.244.0.5, "fd00:10:244::5"], node: node-a, ready: false, serving: false, terminating: true}`
	)
	// A's entries on every UDP frontend of dns.
	dnsLostA := []string{
		"-p udp --orig-port-dst 30053 --reply-src 10.244.0.5",
		"-p udp --orig-port-dst 30053 --reply-src fd00:10:244::5",
		"-p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.5",
		"-p udp --orig-dst 198.51.100.10 --orig-port-dst 53 --reply-src 10.244.0.5",
		"-p udp --orig-dst 203.0.113.10 --orig-port-dst 53 --reply-src 10.244.0.5",
		"-p udp --orig-dst fd00:96::10 --orig-port-dst 53 --reply-src fd00:10:244::5",
	}
	tests := []struct {
		name          string
		before, after []string // services
		want          []string // filters of the one Delete call; none: no call
	}{{
		name:   "no change",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Cluster", epA, epB)},
	}, {
		name:   "endpoint added",
		before: []string{dnsService("Cluster", epA)},
		after:  []string{dnsService("Cluster", epA, epB)},
	}, {
		name:   "endpoint removed",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Cluster", epB)},
		want:   dnsLostA,
	}, {
		name:   "endpoint not ready (nor serving)",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Cluster", notReady, epB)},
		want:   dnsLostA,
	}, {
		name:   "endpoint terminating, no longer serving",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Cluster", terminatingNotServe, epB)},
		want:   dnsLostA,
	}, {
		// Its flows drain, as TCP connections would; new ones go to B.
		name:   "endpoint terminating but serving",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Cluster", terminatingServing, epB)},
	}, {
		// A flow keeps its endpoint while it serves, as a TCP connection would.
		name:   "traffic policy changed",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{dnsService("Local", epA, epB)},
	}, {
		name:   "service removed",
		before: []string{syslogService(514, epA, epB), webService(epA)},
		after:  []string{webService(epA)},
		want: []string{
			"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.0.5",
			"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.1.5",
		},
	}, {
		name:   "external IP removed",
		before: []string{dnsService("Cluster", epA, epB)},
		after:  []string{strings.Replace(dnsService("Cluster", epA, epB), "externalIPs: [203.0.113.10]", "externalIPs: []", 1)},
		want: []string{
			"-p udp --orig-dst 203.0.113.10 --orig-port-dst 53 --reply-src 10.244.0.5",
			"-p udp --orig-dst 203.0.113.10 --orig-port-dst 53 --reply-src 10.244.1.5",
		},
	}, {
		name:   "endpoints' port changed",
		before: []string{syslogService(514, epA, epB)},
		after:  []string{syslogService(1514, epA, epB)},
		want: []string{
			"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.0.5",
			"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.1.5",
		},
	}, {
		name:   "TCP service endpoint removed",
		before: []string{webService(epA, epB)},
		after:  []string{webService(epB)},
	}, {
		name:   "TCP service removed",
		before: []string{webService(epA, epB)},
		after:  nil,
	}, {
		// Entries made before the frontend existed would keep their clients
		// off the endpoints.
		name:   "first endpoint",
		before: []string{syslogService(514)},
		after:  []string{syslogService(514, epA)},
		want:   []string{"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514"},
	}, {
		name:   "new service",
		before: nil,
		after:  []string{dnsService("Cluster", epB)},
		want: []string{
			"-p udp --orig-port-dst 30053",
			"-p udp --orig-dst 10.96.0.10 --orig-port-dst 53",
			"-p udp --orig-dst 198.51.100.10 --orig-port-dst 53",
			"-p udp --orig-dst 203.0.113.10 --orig-port-dst 53",
			"-p udp --orig-dst fd00:96::10 --orig-port-dst 53",
		},
	}, {
		name:   "new service without endpoints",
		before: nil,
		after:  []string{syslogService(514)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := newCTTestDaemon(t)
			td.sync(t, ctCluster(t, tt.before...))
			if calls := td.calls(); len(calls) != 0 {
				t.Fatalf("the first sync deleted with %v, want no Delete", calls)
			}
			td.sync(t, ctCluster(t, tt.after...))
			var want [][]string
			if tt.want != nil {
				want = [][]string{slices.Sorted(slices.Values(tt.want))}
			}
			got := td.calls()
			for _, c := range got {
				slices.Sort(c)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Delete calls (-want +got):\n%s", diff)
			}
			if s := td.Status(); s.ConntrackFailures != 0 {
				t.Errorf("status: %d conntrack failures: %s", s.ConntrackFailures, s.ConntrackLastError)
			}
		})
	}
}

// A service the table refuses was never programmed: its changes delete nothing.
// Refused after being programmed, it has left the table like a removed one.
func TestConntrackRefusedService(t *testing.T) {
	svc := func(policy nft.TrafficPolicy, eps ...netip.Addr) nft.Service {
		s := nft.Service{Namespace: "default", Name: "syslog", ClusterIPs: []netip.Addr{addr("10.96.0.20")},
			Ports: []nft.ServicePort{{Protocol: nft.UDP, Port: 514}}, InternalTrafficPolicy: policy}
		for _, a := range eps {
			s.Endpoints = append(s.Endpoints, nft.Endpoint{Address: a, Ports: map[string]uint16{"": 514}, Ready: true})
		}
		return s
	}
	cluster := func(s nft.Service) *Cluster {
		c := ctCluster(t)
		c.Services = []*nft.Service{&s}
		return c
	}
	a, b := addr("10.244.0.5"), addr("10.244.1.5")
	td := newCTTestDaemon(t)
	td.sync(t, cluster(svc("Cluster", a, b)))
	td.sync(t, cluster(svc("Sometimes", a, b))) // refused by the table
	if v := td.services.Load(); len(v.refused) != 1 {
		t.Fatalf("the table did not refuse the service: refused %v", v.refused)
	}
	td.sync(t, cluster(svc("Sometimes", b)))
	want := [][]string{{
		"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.0.5",
		"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.1.5",
	}}
	if diff := cmp.Diff(want, td.calls()); diff != "" {
		t.Errorf("Delete calls (-want +got):\n%s", diff)
	}
}

// A failed delete is counted and logged, never fails the sync, and is retried
// at the next sync, less the filters whose endpoint serves again.
func TestConntrackDeleteFails(t *testing.T) {
	td := newCTTestDaemon(t)
	td.sync(t, ctCluster(t, syslogService(514, epA, epB)))
	td.ct.DeleteErr = errors.New("ctnetlink: boom")
	onlyB := ctCluster(t, syslogService(514, epB))
	td.sync(t, onlyB) // A removed: fails
	lostA := []string{"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.0.5"}
	if diff := cmp.Diff([][]string{lostA}, td.calls()); diff != "" {
		t.Fatalf("Delete calls (-want +got):\n%s", diff)
	}
	if s := td.Status(); s.ConntrackFailures != 1 || s.ConntrackLastError != "ctnetlink: boom" || s.LastError != "" {
		t.Errorf("status after a failed delete: failures %d, last conntrack error %q, last sync error %q",
			s.ConntrackFailures, s.ConntrackLastError, s.LastError)
	}
	if n := td.logs.FilterMessage("deleting stale conntrack entries failed; retrying at the next sync").Len(); n != 1 {
		t.Errorf("%d failure logs, want 1", n)
	}

	td.ct.DeleteErr = nil
	td.sync(t, onlyB) // a resync: the retry
	if diff := cmp.Diff([][]string{lostA, lostA}, td.calls()); diff != "" {
		t.Fatalf("Delete calls (-want +got):\n%s", diff)
	}
	if s := td.Status(); s.ConntrackFailures != 1 || s.ConntrackLastError != "" {
		t.Errorf("status after the retry: failures %d, last conntrack error %q", s.ConntrackFailures, s.ConntrackLastError)
	}
	td.sync(t, onlyB)
	td.sync(t, ctCluster(t, syslogService(514, epB))) // the same services, from a new file
	if n := len(td.calls()); n != 2 {
		t.Errorf("%d Delete calls, want no third one once the retry succeeded", n)
	}

	// A failure whose endpoint comes back before the retry is dropped.
	td.ct.DeleteErr = errors.New("ctnetlink: boom")
	td.sync(t, ctCluster(t, syslogService(514))) // B removed: fails
	td.ct.DeleteErr = nil
	td.sync(t, ctCluster(t, syslogService(514, epB))) // B back
	want := [][]string{
		{"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514 --reply-src 10.244.1.5"},
		{"-p udp --orig-dst 10.96.0.20 --orig-port-dst 514"}, // its first endpoint again, not the retry
	}
	if diff := cmp.Diff(want, td.calls()[2:]); diff != "" {
		t.Errorf("Delete calls after B left and came back (-want +got):\n%s", diff)
	}
}

// The status counts the entries deleted; entries of serving endpoints stay.
func TestConntrackStatusCounts(t *testing.T) {
	ap := netip.MustParseAddrPort
	entry := func(client, vip, ep string) conntrack.Entry {
		return conntrack.Entry{Proto: unix.IPPROTO_UDP, OrigSrc: ap(client), OrigDst: ap(vip), ReplySrc: ap(ep)}
	}
	td := newCTTestDaemon(t)
	td.ct.Add(
		entry("10.244.0.9:40001", "10.96.0.10:53", "10.244.0.5:5353"),
		entry("10.244.0.9:40002", "10.96.0.10:53", "10.244.1.5:5353"),
		entry("[fd00:10:244::9]:40001", "[fd00:96::10]:53", "[fd00:10:244::5]:5353"),
		entry("192.0.2.7:40003", "192.168.1.10:30053", "10.244.0.5:5353"),
		entry("10.244.0.9:40004", "10.96.0.20:514", "10.244.0.5:514"),
	)
	td.sync(t, ctCluster(t, dnsService("Cluster", epA, epB), syslogService(514, epA)))
	td.sync(t, ctCluster(t, dnsService("Cluster", epB), syslogService(514, epA)))
	var left []string
	for _, e := range td.ct.Entries() {
		left = append(left, e.String())
	}
	want := []string{
		"udp 10.244.0.9:40002 -> 10.96.0.10:53 reply-src 10.244.1.5:5353",
		"udp 10.244.0.9:40004 -> 10.96.0.20:514 reply-src 10.244.0.5:514",
	}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("entries left (-want +got):\n%s", diff)
	}
	if s := td.Status(); !s.ConntrackCleanup || s.ConntrackDeleted != 3 || s.ConntrackFailures != 0 {
		t.Errorf("status: cleanup %v, deleted %d, failures %d; want true, 3, 0", s.ConntrackCleanup, s.ConntrackDeleted, s.ConntrackFailures)
	}
	if logs := td.logs.FilterMessage("stale conntrack entries deleted").All(); len(logs) != 1 || logs[0].ContextMap()["deleted"] != int64(3) {
		t.Errorf("'stale conntrack entries deleted' logs = %v, want one with deleted=3", logs)
	}
}

// Deps.Conntrack turns the cleanup on; without it, syncs delete nothing.
func TestNewConntrackDeps(t *testing.T) {
	for _, tt := range []struct {
		name string
		ct   conntrack.Interface
	}{{"with conntrack", &conntrack.Fake{}}, {"without", nil}} {
		t.Run(tt.name, func(t *testing.T) {
			core, _ := observer.New(zap.DebugLevel)
			d, err := New(validConfig(), zap.New(core), Deps{Kernel: routing.NewFake(), NFT: &nft.Fake{}, Conntrack: tt.ct})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := d.Status().ConntrackCleanup, tt.ct != nil; got != want {
				t.Errorf("status conntrackCleanup = %v, want %v", got, want)
			}
			if got, want := d.ctClean != nil, tt.ct != nil; got != want {
				t.Errorf("cleaner set: %v, want %v", got, want)
			}
		})
	}
}

// The first sync that programs the table reconciles the whole conntrack table:
// what changed while podnetd was down left UDP entries that only a full look
// can find. A failed reconciliation is retried at the next sync; once done,
// syncs go back to filters.
func TestConntrackReconcileAtStart(t *testing.T) {
	ap := netip.MustParseAddrPort
	udp, tcp := uint8(unix.IPPROTO_UDP), uint8(unix.IPPROTO_TCP)
	entry := func(proto uint8, dst, reply string) conntrack.Entry {
		return conntrack.Entry{Proto: proto, OrigSrc: ap("10.244.0.9:40000"), OrigDst: ap(dst), ReplySrc: ap(reply)}
	}
	stale := []conntrack.Entry{
		entry(udp, "10.96.0.10:53", "10.244.9.9:5353"),            // DNATed to an endpoint that is gone
		entry(udp, "[fd00:96::10]:53", "[fd00:10:244:9::9]:5353"), // the same in IPv6
		entry(udp, "203.0.113.10:53", "203.0.113.10:53"),          // un-NATed, the external IP now has endpoints
		entry(udp, "192.168.1.10:30053", "10.244.9.9:5353"),       // node-a's NodePort, endpoint gone
		entry(udp, "192.168.1.10:30053", "192.168.1.10:30053"),    // node-a's NodePort, un-NATed
		entry(udp, "10.96.0.10:53", "10.244.1.5:9999"),            // B's address, but its target port changed
	}
	kept := []conntrack.Entry{
		entry(udp, "10.96.0.10:53", "10.244.1.5:5353"),         // a serving endpoint
		entry(udp, "198.51.100.10:53", "10.244.0.5:5353"),      // a serving endpoint of the LB IP
		entry(tcp, "10.96.0.10:53", "10.244.9.9:5353"),         // TCP: its client sees the failure
		entry(udp, "192.168.1.11:30053", "192.168.1.11:30053"), // another node's address: not this node's NodePort
		entry(udp, "10.96.0.99:53", "10.244.9.9:5353"),         // no such frontend
		entry(udp, "10.0.0.53:53", "10.0.0.53:53"),             // a server outside the cluster
		entry(udp, "192.168.1.10:30053", "192.168.1.10:5353"),  // a host-network endpoint: DNATed to the node itself
	}
	td := newCTTestDaemon(t)
	td.ct.Add(slices.Concat(stale, kept)...)
	td.ct.DeleteErr = errors.New("ctnetlink: boom")
	c := ctCluster(t, dnsService("Cluster", epA, epB, `{addresses: [192.168.1.10], node: node-a}`))
	td.sync(t, c)
	if got := td.ct.FuncCalls(); got != 1 || len(td.ct.Entries()) != len(stale)+len(kept) {
		t.Fatalf("after a failed reconciliation: %d DeleteFunc calls, %d entries; want 1 and all %d", got, len(td.ct.Entries()), len(stale)+len(kept))
	}
	td.ct.DeleteErr = nil
	td.sync(t, c) // the same cluster: the reconciliation is retried
	str := func(es []conntrack.Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.String())
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff(str(kept), str(td.ct.Entries())); diff != "" {
		t.Errorf("entries left by the reconciliation (-want +got):\n%s", diff)
	}
	if s := td.Status(); s.ConntrackDeleted != uint64(len(stale)) || s.ConntrackFailures != 1 {
		t.Errorf("status: %d deleted, %d failures; want %d, 1", s.ConntrackDeleted, s.ConntrackFailures, len(stale))
	}
	td.sync(t, c)
	td.sync(t, ctCluster(t, dnsService("Cluster", epB, `{addresses: [192.168.1.10], node: node-a}`)))
	if got, calls := td.ct.FuncCalls(), len(td.calls()); got != 2 || calls != 1 {
		t.Errorf("after the reconciliation: %d DeleteFunc and %d Delete calls, want 2 and 1 (filters for A's removal)", got, calls)
	}
}

// A reconciliation that failed is retried at the next sync even when the
// services changed in between, and then also deletes what that change left
// stale: the entries of a service removed meanwhile, which the current
// frontends alone would not name.
func TestConntrackReconcileAfterChange(t *testing.T) {
	ap := netip.MustParseAddrPort
	udp := uint8(unix.IPPROTO_UDP)
	syslogA := conntrack.Entry{Proto: udp, OrigSrc: ap("10.244.0.9:40000"), OrigDst: ap("10.96.0.20:514"), ReplySrc: ap("10.244.0.5:514")}
	dnsB := conntrack.Entry{Proto: udp, OrigSrc: ap("10.244.0.9:40001"), OrigDst: ap("10.96.0.10:53"), ReplySrc: ap("10.244.1.5:5353")}
	td := newCTTestDaemon(t)
	td.ct.Add(syslogA, dnsB)
	td.ct.DeleteErr = errors.New("ctnetlink: boom")
	td.sync(t, ctCluster(t, syslogService(514, epA), dnsService("Cluster", epB)))
	td.ct.DeleteErr = nil
	td.sync(t, ctCluster(t, dnsService("Cluster", epB))) // syslog removed
	if got := td.ct.Entries(); len(got) != 1 || got[0] != dnsB {
		t.Errorf("entries after the retried reconciliation: %v, want only %v", got, dnsB)
	}
	if got, calls := td.ct.FuncCalls(), len(td.calls()); got != 2 || calls != 0 {
		t.Errorf("%d DeleteFunc and %d Delete calls, want 2 and 0", got, calls)
	}
}
