package nft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// Kernel tests of Tracer: real packets between the namespaces of svcLab (see
// svc_traffic_test.go), traced in the node.

const traceTimeout = 20 * time.Second // bounds every Trace of these tests

func newTracer(t *testing.T, ns *sandbox.NetNS) *Tracer {
	t.Helper()
	tr, err := NewTracer(WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func traceCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), traceTimeout)
	t.Cleanup(cancel)
	return ctx
}

func tcpProbe(src, dst string, port uint16) Probe {
	return Probe{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: unix.IPPROTO_TCP, DstPort: port}
}

// checkNoTraceTable fails the test if table inet podnet-trace is in ns.
func checkNoTraceTable(t *testing.T, ns *sandbox.NetNS, when string) {
	t.Helper()
	if out := nft(t, ns, "list", "tables"); strings.Contains(out, TraceTableName) {
		t.Errorf("%s: table %s still there:\n%s", when, TraceTableName, out)
	}
}

var prognameRE = regexp.MustCompile(` # progname \S+`)

// traceListing returns `nft list table inet podnet-trace` in ns, without the
// comment naming the owning program.
func traceListing(ns *sandbox.NetNS) (string, error) {
	out, err := runNft(ns, "", "list", "table", "inet", TraceTableName)
	return trimTrailing(prognameRE.ReplaceAllString(out, "")), err
}

// traceTableText is the listing of the trace table whose two chains hold rule
// (→ stands for a tab).
func traceTableText(rule string) string {
	text := `table inet podnet-trace {
→flags owner

→chain prerouting {
→→type filter hook prerouting priority -350; policy accept;
→→RULE
→}

→chain output {
→→type filter hook output priority -350; policy accept;
→→RULE
→}
}`
	return strings.ReplaceAll(strings.ReplaceAll(text, "→", "\t"), "RULE", rule)
}

// firstPacket returns the events of the first traced packet: those with the
// first event's ID, up to the trace rule marking a later packet with that ID
// (the kernel's IDs hash the packet buffer's address, which later packets of
// the flow reuse).
func firstPacket(events []TraceEvent) []TraceEvent {
	var out []TraceEvent
	for i, e := range events {
		if e.ID != events[0].ID {
			continue
		}
		if i > 0 && isTraceMark(e) {
			break
		}
		out = append(out, e)
	}
	return out
}

// path is the route of events through the chains, one line per event:
// "table chain (hook) type verdict".
func path(events []TraceEvent) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "%s %s (%s) %s %s\n", e.Table, e.Chain, e.Hook, e.Type, e.Verdict)
	}
	return b.String()
}

// packet is the interfaces and headers of an event, the source port left out.
func packet(e TraceEvent) string {
	return fmt.Sprintf("iif=%s oif=%s %s %s:sport > %s", e.Iif, e.Oif, traceProtoName(e.Proto), e.Src, hostPort(e.Dst, e.DstPort))
}

// ruleHandle returns the handle of the only rule of chain in table inet podnet.
func ruleHandle(t *testing.T, ns *sandbox.NetNS, chain string) string {
	t.Helper()
	out := nft(t, ns, "-a", "list", "chain", "inet", TableName, chain)
	hs := handleRE.FindAllStringSubmatch(out, -1)
	if len(hs) != 2 {
		t.Fatalf("want the handles of chain %s and of one rule in:\n%s", chain, out)
	}
	return hs[1][1]
}

// TestTracePaths traces real connections through the podnet table of a node
// and checks each packet's path, hooks, interfaces and headers, the trace table
// while it exists, and that it is gone after.
func TestTracePaths(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "tr-path")
	l.sync(t,
		webService(svcEndpoint(svcPodAIP)),
		Service{Namespace: "default", Name: "empty", ClusterIPs: addrs(svcEmptyVIP), Ports: []ServicePort{{Protocol: TCP, Port: 80}}},
	)
	podnetBefore := nft(t, l.node, "-a", "list", "table", "inet", TableName)
	tr := newTracer(t, l.node)

	for _, tc := range []struct {
		name      string
		from      *sandbox.NetNS
		probe     Probe
		rule      string // as nft lists it
		wantPath  string // of the first packet
		wantError bool   // the connection fails
		check     func(t *testing.T, first []TraceEvent)
	}{
		{
			name:  "ClusterIP",
			from:  l.client,
			probe: tcpProbe(svcClientIP, svcWebVIP, 80),
			rule:  "ip saddr 10.244.1.2 ip daddr 10.96.0.10 tcp dport 80 meta nftrace set 1",
			wantPath: `podnet-trace prerouting (prerouting) rule continue
podnet-trace prerouting (prerouting) return continue
podnet-trace prerouting (prerouting) policy accept
podnet prerouting (prerouting) rule jump services
podnet services (prerouting) rule goto lb-v4-1
podnet lb-v4-1 (prerouting) rule accept
podnet postrouting (postrouting) return continue
podnet postrouting (postrouting) policy accept
`,
			check: func(t *testing.T, first []TraceEvent) {
				arrived, dnat, post := first[0], first[5], first[6]
				if got, want := fmt.Sprint(dnat.RuleHandle), ruleHandle(t, l.node, "lb-v4-1"); got != want {
					t.Errorf("DNAT event has rule handle %s, want %s (the rule of lb-v4-1)", got, want)
				}
				if got, want := packet(arrived), "iif=to-client oif= tcp 10.244.1.2:sport > 10.96.0.10:80"; got != want {
					t.Errorf("first event: %s, want the packet as it arrived: %s", got, want)
				}
				if got, want := packet(post), "iif=to-client oif=to-a tcp 10.244.1.2:sport > 10.244.2.2:8080"; got != want {
					t.Errorf("postrouting: %s, want the packet after DNAT: %s", got, want)
				}
				if arrived.SrcPort == 0 || post.SrcPort != arrived.SrcPort {
					t.Errorf("source port %d in prerouting, %d in postrouting, want the same", arrived.SrcPort, post.SrcPort)
				}
			},
		},
		{
			name:  "service without endpoints",
			from:  l.client,
			probe: tcpProbe(svcClientIP, svcEmptyVIP, 80),
			rule:  "ip saddr 10.244.1.2 ip daddr 10.96.0.13 tcp dport 80 meta nftrace set 1",
			wantPath: `podnet-trace prerouting (prerouting) rule continue
podnet-trace prerouting (prerouting) return continue
podnet-trace prerouting (prerouting) policy accept
podnet prerouting (prerouting) rule jump services
podnet services (prerouting) rule goto no-endpoints
podnet no-endpoints (prerouting) rule drop
`,
			wantError: true,
		},
		{
			name:  "no service: nothing matches",
			from:  l.client,
			probe: tcpProbe(svcClientIP, svcPodBIP, 8080),
			rule:  "ip saddr 10.244.1.2 ip daddr 10.244.3.2 tcp dport 8080 meta nftrace set 1",
			wantPath: `podnet-trace prerouting (prerouting) rule continue
podnet-trace prerouting (prerouting) return continue
podnet-trace prerouting (prerouting) policy accept
podnet prerouting (prerouting) rule jump services
podnet services (prerouting) return continue
podnet prerouting (prerouting) rule jump hostports
podnet hostports (prerouting) return continue
podnet prerouting (prerouting) return continue
podnet prerouting (prerouting) policy accept
podnet postrouting (postrouting) return continue
podnet postrouting (postrouting) policy accept
`,
			check: func(t *testing.T, first []TraceEvent) {
				if got, want := packet(first[9]), "iif=to-client oif=to-b tcp 10.244.1.2:sport > 10.244.3.2:8080"; got != want {
					t.Errorf("postrouting: %s, want the packet unchanged: %s", got, want)
				}
			},
		},
		{
			name:  "sent by the node: output hook",
			from:  l.node,
			probe: tcpProbe("10.244.3.1", svcPodBIP, 8080),
			rule:  "ip saddr 10.244.3.1 ip daddr 10.244.3.2 tcp dport 8080 meta nftrace set 1",
			wantPath: `podnet-trace output (output) rule continue
podnet-trace output (output) return continue
podnet-trace output (output) policy accept
podnet output (output) rule jump services
podnet services (output) return continue
podnet output (output) rule jump hostports
podnet hostports (output) return continue
podnet output (output) return continue
podnet output (output) policy accept
podnet postrouting (postrouting) return continue
podnet postrouting (postrouting) policy accept
`,
			check: func(t *testing.T, first []TraceEvent) {
				if got, want := packet(first[0]), "iif= oif=to-b tcp 10.244.3.1:sport > 10.244.3.2:8080"; got != want {
					t.Errorf("first event: %s, want %s", got, want)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var listing string
			var listErr, sendErr error
			events, err := tr.Trace(traceCtx(t), tc.probe, func(context.Context) error {
				listing, listErr = traceListing(l.node)
				_, sendErr = ask(tc.from, "tcp4", netip.AddrPortFrom(tc.probe.Dst, tc.probe.DstPort).String())
				return sendErr
			})
			for _, e := range events {
				t.Log(e)
			}
			switch {
			case tc.wantError && sendErr == nil:
				t.Errorf("the connection succeeded")
			case !errors.Is(err, sendErr) || (sendErr == nil) != (err == nil):
				t.Errorf("Trace: %v, want the send error %v", err, sendErr)
			}
			if listErr != nil {
				t.Error(listErr)
			} else if diff := cmp.Diff(traceTableText(tc.rule), listing); diff != "" {
				t.Errorf("trace table during the trace (-want +got):\n%s", diff)
			}
			checkNoTraceTable(t, l.node, "after Trace")
			if len(events) == 0 {
				t.Fatal("no events")
			}
			first := firstPacket(events)
			if diff := cmp.Diff(tc.wantPath, path(first)); diff != "" {
				t.Fatalf("path of the first packet (-want +got):\n%s", diff)
			}
			if tc.check != nil {
				tc.check(t, first)
			}
			for _, e := range events {
				if e.HasPacket() && e.SrcPort != first[0].SrcPort {
					t.Errorf("event of another connection: %v", e)
				}
			}
		})
	}
	if got := nft(t, l.node, "-a", "list", "table", "inet", TableName); got != podnetBefore {
		t.Errorf("table inet podnet changed during the traces:\n%s", cmp.Diff(podnetBefore, got))
	}
}

// TestTraceRules: the trace rule as the kernel holds it, for each kind of probe.
func TestTraceRules(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-rules")
	tr := newTracer(t, ns)
	a := netip.MustParseAddr
	for _, tc := range []struct {
		probe Probe
		want  string
	}{
		{Probe{a("10.0.0.1"), a("10.0.0.2"), unix.IPPROTO_TCP, 443}, "ip saddr 10.0.0.1 ip daddr 10.0.0.2 tcp dport 443 meta nftrace set 1"},
		{Probe{a("10.0.0.1"), a("10.0.0.2"), unix.IPPROTO_UDP, 0}, "ip saddr 10.0.0.1 ip daddr 10.0.0.2 meta l4proto udp meta nftrace set 1"},
		{Probe{a("10.0.0.1"), a("10.0.0.2"), unix.IPPROTO_SCTP, 9}, "ip saddr 10.0.0.1 ip daddr 10.0.0.2 sctp dport 9 meta nftrace set 1"},
		{Probe{a("10.0.0.1"), a("10.0.0.2"), unix.IPPROTO_ICMP, 0}, "ip saddr 10.0.0.1 ip daddr 10.0.0.2 meta l4proto icmp meta nftrace set 1"},
		{Probe{a("fd00::1"), a("fd00::2"), unix.IPPROTO_UDP, 53}, "ip6 saddr fd00::1 ip6 daddr fd00::2 udp dport 53 meta nftrace set 1"},
		{Probe{a("fd00::1"), a("fd00::2"), unix.IPPROTO_ICMPV6, 0}, "ip6 saddr fd00::1 ip6 daddr fd00::2 meta l4proto ipv6-icmp meta nftrace set 1"},
	} {
		var listing string
		var listErr error
		if _, err := tr.Trace(traceCtx(t), tc.probe, func(context.Context) error {
			listing, listErr = traceListing(ns)
			return listErr
		}); err != nil {
			t.Errorf("%v: %v", tc.probe, err)
			continue
		}
		if diff := cmp.Diff(traceTableText(tc.want), listing); diff != "" {
			t.Errorf("%v: (-want +got):\n%s", tc.probe, diff)
		}
	}
	checkNoTraceTable(t, ns, "after the traces")
}

// TestTraceIPv6: an IPv6 UDP datagram over loopback, traced at output and again
// at prerouting when lo delivers it.
func TestTraceIPv6(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-ip6")
	tr := newTracer(t, ns)
	lo := netip.MustParseAddr("::1")
	events, err := tr.Trace(traceCtx(t), Probe{Src: lo, Dst: lo, Proto: unix.IPPROTO_UDP, DstPort: 9999}, func(context.Context) error {
		return ns.Do(func() error {
			c, err := net.Dial("udp6", "[::1]:9999") // nobody listens: one datagram
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("?"))
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	hooks := map[string]TraceEvent{}
	for _, e := range events {
		t.Log(e)
		if isTraceMark(e) {
			hooks[e.Hook] = e
		}
	}
	for hook, dev := range map[string]string{"output": "oif", "prerouting": "iif"} {
		e, ok := hooks[hook]
		if !ok {
			t.Errorf("no trace rule event at %s", hook)
			continue
		}
		if e.Src != lo || e.Dst != lo || e.Proto != unix.IPPROTO_UDP || e.DstPort != 9999 || e.SrcPort == 0 {
			t.Errorf("%s: %v, want udp [::1]:* > [::1]:9999", hook, e)
		}
		if got := map[string]string{"oif": e.Oif, "iif": e.Iif}[dev]; got != "lo" {
			t.Errorf("%s: %s %q, want lo", hook, dev, got)
		}
	}
	checkNoTraceTable(t, ns, "after Trace")
}

// TestTraceUnrelated: another table traces other packets (a pod's own
// connection to the same service); their events, which also cross the trace
// table's chains, are not returned.
func TestTraceUnrelated(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "tr-unrel")
	l.sync(t, webService(svcEndpoint(svcPodBIP)))
	const other = `table inet other {
	chain pre {
		type filter hook prerouting priority -400; policy accept;
		ip saddr 10.244.2.2 meta nftrace set 1
	}
}
`
	if _, err := runNft(l.node, other, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	// A second subscriber sees everything the kernel reports.
	all, err := listenTrace(l.node.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer all.close()

	tr := newTracer(t, l.node)
	vip := net.JoinHostPort(svcWebVIP, "80")
	events, err := tr.Trace(traceCtx(t), tcpProbe(svcClientIP, svcWebVIP, 80), func(context.Context) error {
		if _, err := ask(l.podA, "tcp4", vip); err != nil {
			return err
		}
		_, err := ask(l.client, "tcp4", vip)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	all.close()
	podA := netip.MustParseAddr(svcPodAIP)
	var unrelated int
	for _, e := range all.events {
		if e.Src == podA && e.Table == TraceTableName {
			unrelated++
		}
	}
	if unrelated == 0 {
		t.Fatalf("the kernel reported no event of pod-a's packets in %s: the test proves nothing", TraceTableName)
	}
	ours := map[uint32]bool{}
	for _, e := range events {
		if isTraceMark(e) {
			ours[e.ID] = true
		}
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	for _, e := range events {
		if e.Src == podA || e.Table == "other" || !ours[e.ID] {
			t.Errorf("unrelated event returned: %v", e)
		}
	}
}
