package daemon

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// tracedDaemon is syncedDaemon (node-a, pods default/web-1 10.244.0.2 and
// default/web-2 10.244.0.3) with two services: web (10.96.0.10:80 → an
// endpoint on node-b and web-2) and empty (10.96.0.11:80, no endpoints).
func tracedDaemon(t *testing.T) *testDaemon {
	t.Helper()
	td := syncedDaemon(t)
	c := threeNodes()
	port := nft.ServicePort{Name: "http", Protocol: nft.TCP, Port: 80}
	ep := func(a, node string) nft.Endpoint {
		return nft.Endpoint{Address: netip.MustParseAddr(a), NodeName: node, Ports: map[string]uint16{"http": 8080}, Ready: true, Serving: true}
	}
	c.Services = []*nft.Service{
		{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Ports: []nft.ServicePort{port},
			Endpoints: []nft.Endpoint{ep("10.244.1.7", "node-b"), ep("10.244.0.3", "node-a")}},
		{Namespace: "default", Name: "empty", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.11")}, Ports: []nft.ServicePort{port}},
	}
	td.cluster.Store(c)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	return td
}

// events is what the kernel would report for the probe's first packet: the
// podnet chains, and the packet in postrouting sent to dnat (if valid).
func events(src, dst netip.AddrPort, chains []string, verdict string, dnat netip.AddrPort) []nft.TraceEvent {
	out := []nft.TraceEvent{{ID: 1, Family: "inet", Table: nft.TraceTableName, Chain: "prerouting", Type: "rule", RuleHandle: 2, Verdict: "continue",
		Src: src.Addr(), Dst: dst.Addr(), Proto: unix.IPPROTO_TCP, SrcPort: src.Port(), DstPort: dst.Port()}}
	for i, c := range chains {
		e := nft.TraceEvent{ID: 1, Family: "inet", Table: nft.TableName, Chain: c, Type: "rule", RuleHandle: uint64(40 + i), Verdict: "goto x"}
		if i == len(chains)-1 {
			e.Verdict = verdict
		}
		out = append(out, e)
	}
	if dnat.IsValid() {
		out = append(out, nft.TraceEvent{ID: 7, Family: "inet", Table: nft.TableName, Chain: "postrouting", Type: "policy", Verdict: "accept",
			Src: src.Addr(), Dst: dnat.Addr(), Proto: unix.IPPROTO_TCP, SrcPort: src.Port(), DstPort: dnat.Port()})
	}
	return out
}

func TestTrace(t *testing.T) {
	ap := netip.MustParseAddrPort
	pod := ap("10.244.0.2:40000") // routing.Fake probes from port 40000
	tests := []struct {
		name        string
		from, to    string
		probeResult string
		events      []nft.TraceEvent
		wantOutcome string
		wantHops    []string // texts some hop must contain, in order
		wantEps     []string
		wantAgrees  bool
		wantProbe   string // a text the probe's DNAT, skip reason or mismatches contain
	}{
		{
			name: "pod to service", from: "default/web-1", to: "web",
			events:      events(pod, ap("10.96.0.10:80"), []string{"prerouting", "services", "lb-v4-2"}, "accept", ap("10.244.1.7:8080")),
			wantOutcome: api.TraceDelivered,
			wantHops:    []string{"pod default/web-1 eth0: sends from 10.244.0.2", "bridge podnet0", "nftables services", "nftables lb-v4-2: DNAT", "pod default/web-2 eth0: receives it on port 8080", "to node node-b via 192.168.1.11"},
			wantEps:     []string{"10.244.0.3:8080", "10.244.1.7:8080"}, wantAgrees: true, wantProbe: "10.244.1.7:8080",
		},
		{
			name: "DNAT to an endpoint the table does not have", from: "default/web-1", to: "default/web:80/tcp",
			events:      events(pod, ap("10.96.0.10:80"), []string{"prerouting", "services", "lb-v4-2"}, "accept", ap("10.244.9.9:8080")),
			wantOutcome: api.TraceDelivered, wantEps: []string{"10.244.0.3:8080", "10.244.1.7:8080"},
			wantProbe: "DNAT to 10.244.9.9:8080, not one of the predicted",
		},
		{
			name: "probe skips the service chain", from: "default/web-1", to: "10.96.0.10:80",
			events:      events(pod, ap("10.96.0.10:80"), []string{"prerouting", "services"}, "continue", netip.AddrPort{}),
			wantOutcome: api.TraceDelivered, wantEps: []string{"10.244.0.3:8080", "10.244.1.7:8080"},
			wantProbe: "predicted chains prerouting → services → lb-v4-2",
		},
		{
			name: "service without endpoints", from: "default/web-1", to: "default/empty", probeResult: routing.ProbeRefused,
			events:      events(pod, ap("10.96.0.11:80"), []string{"prerouting", "services", "no-endpoints"}, "drop", netip.AddrPort{}),
			wantOutcome: api.TraceRejected, wantHops: []string{"nftables no-endpoints", "client: gets an ICMP port unreachable"}, wantAgrees: true,
		},
		{
			name: "reject predicted, but the connection went through", from: "default/web-1", to: "default/empty",
			events:      events(pod, ap("10.96.0.11:80"), []string{"prerouting", "services", "no-endpoints"}, "drop", netip.AddrPort{}),
			wantOutcome: api.TraceRejected, wantProbe: "predicted a reject; the connection was connected",
		},
		{
			name: "pod to pod on the node", from: "c1", to: "10.244.0.3:8080",
			events:      events(pod, ap("10.244.0.3:8080"), []string{"prerouting", "services", "hostports"}, "continue", netip.AddrPort{}),
			wantOutcome: api.TraceDelivered,
			wantHops:    []string{"on-link over eth0", "forwards the frame", "nftables services: no rule matches", "pod default/web-2 eth0: receives it"},
			wantAgrees:  true,
		},
		{
			name: "pod to a pod of another node", from: "10.244.0.2", to: "10.244.2.5",
			events:      events(ap("10.244.0.2:40000"), ap("10.244.2.5:80"), []string{"prerouting", "services", "hostports"}, "continue", netip.AddrPort{}),
			wantOutcome: api.TraceDelivered,
			wantHops:    []string{"to node node-c via 192.168.1.12 dev eth0; node node-c owns podCIDR 10.244.2.0/24", "node node-c: routes it to its bridge"},
			wantAgrees:  true,
		},
		{
			name: "from a pod of another node: no probe", from: "10.244.2.5", to: "10.244.0.2:80",
			wantOutcome: api.TraceDelivered, wantHops: []string{"node node-a: pod 10.244.2.5 on node node-c is not on this node"},
			wantProbe: "run the trace on the source's node",
		},
		{
			name: "nothing routes it", from: "default/web-1", to: "203.0.113.9:443",
			wantOutcome: api.TraceDropped, wantHops: []string{"no route to 203.0.113.9"},
		},
		{
			name: "nothing routes it, yet the probe connects", from: "default/web-1", to: "203.0.113.9:443",
			events:      events(pod, ap("203.0.113.9:443"), []string{"prerouting", "services", "hostports"}, "continue", netip.AddrPort{}),
			wantOutcome: api.TraceDropped, wantProbe: "predicted a drop; the connection was connected",
		},
		{
			name: "delivery predicted, but podnet's table dropped it", from: "default/web-1", to: "10.244.2.5:80", probeResult: routing.ProbeTimeout,
			events:      events(pod, ap("10.244.2.5:80"), []string{"prerouting", "services"}, "drop", netip.AddrPort{}),
			wantOutcome: api.TraceDelivered, wantProbe: "it was dropped (services: drop)",
		},
		{
			name: "delivery predicted, but unreachable", from: "default/web-1", to: "10.244.2.5:80", probeResult: routing.ProbeUnreachable,
			events:      events(pod, ap("10.244.2.5:80"), []string{"prerouting", "services", "hostports"}, "continue", netip.AddrPort{}),
			wantOutcome: api.TraceDelivered, wantProbe: "predicted delivery; the connection was unreachable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := tracedDaemon(t)
			ft := td.tracer.(*nft.FakeTracer)
			td.kernel.ProbeResult = tt.probeResult
			if tt.events != nil {
				p := nft.Probe{Src: tt.events[0].Src, Dst: tt.events[0].Dst, Proto: unix.IPPROTO_TCP, DstPort: tt.events[0].DstPort}
				ft.Events = map[nft.Probe][]nft.TraceEvent{p: tt.events}
			}
			tr, err := td.trace(context.Background(), api.TraceQuery{From: tt.from, To: tt.to}, true)
			if err != nil {
				t.Fatal(err)
			}
			var hops []string
			for _, h := range tr.Hops {
				hops = append(hops, h.Where+": "+h.What)
			}
			all := strings.Join(hops, "\n")
			i := 0
			for _, h := range hops {
				if i < len(tt.wantHops) && strings.Contains(h, tt.wantHops[i]) {
					i++
				}
			}
			if i < len(tt.wantHops) {
				t.Errorf("hops lack %q (in order):\n%s", tt.wantHops[i], all)
			}
			if tr.Outcome != tt.wantOutcome {
				t.Errorf("outcome %s, want %s\n%s", tr.Outcome, tt.wantOutcome, all)
			}
			if got := slices.Sorted(slices.Values(tr.Endpoints)); !slices.Equal(got, tt.wantEps) {
				t.Errorf("endpoints %v, want %v", got, tt.wantEps)
			}
			p := tr.Probe
			if p == nil {
				t.Fatal("no probe result")
			}
			if p.Agrees != tt.wantAgrees {
				t.Errorf("probe agrees = %v, want %v: %+v", p.Agrees, tt.wantAgrees, p)
			}
			if got := p.DNAT + " " + p.Skipped + " " + strings.Join(p.Mismatches, "; "); !strings.Contains(got, tt.wantProbe) {
				t.Errorf("probe %q, want it to say %q", got, tt.wantProbe)
			}
		})
	}
}

// TestTraceWithoutRoot: a caller who may only read gets the prediction, and
// no probe is sent.
func TestTraceWithoutRoot(t *testing.T) {
	td := tracedDaemon(t)
	tr, err := td.trace(context.Background(), api.TraceQuery{From: "default/web-1", To: "web"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Probe == nil || tr.Probe.Sent || !strings.Contains(tr.Probe.Skipped, "needs root") || len(td.kernel.Probes) != 0 {
		t.Errorf("probe = %+v, sent %d; want none sent, skipped for root", tr.Probe, len(td.kernel.Probes))
	}
	if tr, err := td.trace(context.Background(), api.TraceQuery{From: "default/web-1", To: "web", NoProbe: true}, true); err != nil || tr.Probe != nil {
		t.Errorf("NoProbe: %+v, %v", tr, err)
	}
}

// TestTraceToPodWithoutRecord: a pod whose record is missing (attached by an
// older podnetd) is still found on the bridge, by IPAM and its host veth.
func TestTraceToPodWithoutRecord(t *testing.T) {
	td := tracedDaemon(t)
	if err := td.pods.remove("c2", "eth0"); err != nil {
		t.Fatal(err)
	}
	tr, err := td.trace(context.Background(), api.TraceQuery{From: "default/web-1", To: "10.244.0.3:8080", NoProbe: true}, true)
	if err != nil {
		t.Fatal(err)
	}
	last := tr.Hops[len(tr.Hops)-1]
	if tr.Outcome != api.TraceDelivered || last.Where != "pod c2 eth0" || !strings.Contains(last.What, "receives it on port 8080") {
		t.Errorf("outcome %s, last hop %+v", tr.Outcome, last)
	}
}

// TestTraceMultiPortVIP: a service address with several ports needs one.
func TestTraceMultiPortVIP(t *testing.T) {
	td := tracedDaemon(t)
	c := td.cluster.Load()
	svc := *c.Services[0]
	svc.Ports = append(svc.Ports, nft.ServicePort{Name: "metrics", Protocol: nft.TCP, Port: 9090})
	c2 := *c
	c2.Services = []*nft.Service{&svc, c.Services[1]}
	td.cluster.Store(&c2)
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	_, err := td.trace(context.Background(), api.TraceQuery{From: "default/web-1", To: "10.96.0.10", NoProbe: true}, true)
	if err == nil || !strings.Contains(err.Error(), "has several ports") {
		t.Errorf("trace to a two-port VIP without a port: %v", err)
	}
	tr, err := td.trace(context.Background(), api.TraceQuery{From: "default/web-1", To: "10.96.0.10:9090", NoProbe: true}, true)
	if err != nil || tr.Port != 9090 || tr.To.Service != "default/web" {
		t.Errorf("with the port: %+v, %v", tr, err)
	}
}
