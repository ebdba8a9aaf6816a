package routing

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
	"golang.org/x/sys/unix"
)

// podOnNode is a node with an uplink, a bridge 10.244.1.1/24, a route to a
// peer's podCIDR and one pod 10.244.1.2 attached, for RouteGet and Probe.
func podOnNode(t *testing.T) (node, pod *sandbox.NetNS, m *Manager) {
	t.Helper()
	node, m = nodeWithUplink(t, "lk-node", netip.MustParsePrefix("192.0.2.11/24"))
	gw := netip.MustParsePrefix("10.244.1.1/24")
	if err := m.EnsureBridge(Bridge{Name: "podnet0", Gateways: []netip.Prefix{gw}, MTU: 1500}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SyncRoutes([]Route{{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddr("192.0.2.12")}}); err != nil {
		t.Fatal(err)
	}
	pod = sandbox.TestNetNS(t, "lk-pod")
	p := Pod{ContainerID: "ctr-lk", NetNS: pod.Path, IfName: "eth0", HostVeth: HostVethName("ctr-lk", "eth0"),
		Bridge: "podnet0", MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.2/24")}, Gateways: []netip.Addr{gw.Addr()}}
	if _, err := m.AddPod(p); err != nil {
		t.Fatal(err)
	}
	if err := node.Do(func() error { return setSysctl("net/ipv4/ip_forward", "1") }); err != nil {
		t.Fatal(err)
	}
	return node, pod, m
}

func setSysctl(name, v string) error {
	f, err := os.OpenFile("/proc/sys/"+name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(v)
	return err
}

func TestRouteGet(t *testing.T) {
	sandbox.Require(t)
	_, pod, m := podOnNode(t)
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		q       Query
		want    Decision
		wantErr string
	}{
		{"forwarded to a peer's podCIDR", Query{Dst: a("10.244.2.7"), Src: a("10.244.1.2"), Iif: "podnet0"},
			Decision{Type: "unicast", Dev: "eth0", Via: a("192.0.2.12"), Table: unix.RT_TABLE_MAIN}, ""},
		{"forwarded to a local pod", Query{Dst: a("10.244.1.9"), Src: a("10.244.1.2"), Iif: "podnet0"},
			Decision{Type: "unicast", Dev: "podnet0", Table: unix.RT_TABLE_MAIN}, ""},
		{"sent by the node to a peer", Query{Dst: a("10.244.2.7")},
			Decision{Type: "unicast", Dev: "eth0", Via: a("192.0.2.12"), PrefSrc: a("192.0.2.11"), Table: unix.RT_TABLE_MAIN}, ""},
		{"the bridge address is local", Query{Dst: a("10.244.1.1")},
			Decision{Type: "local", Dev: "lo", PrefSrc: a("10.244.1.1"), Table: unix.RT_TABLE_MAIN}, ""},
		{"in the pod: via its gateway", Query{NetNS: pod.Path, Dst: a("10.96.0.10")},
			Decision{Type: "unicast", Dev: "eth0", Via: a("10.244.1.1"), PrefSrc: a("10.244.1.2"), Table: unix.RT_TABLE_MAIN}, ""},
		{"in the pod: on-link", Query{NetNS: pod.Path, Dst: a("10.244.1.9")},
			Decision{Type: "unicast", Dev: "eth0", PrefSrc: a("10.244.1.2"), Table: unix.RT_TABLE_MAIN}, ""},
		{"no route", Query{Dst: a("203.0.113.5")}, Decision{}, "network is unreachable"},
		{"unknown input interface", Query{Dst: a("10.244.2.7"), Iif: "nosuch0"}, Decision{}, "interface nosuch0"},
		{"missing namespace", Query{NetNS: "/run/netns/nosuch", Dst: a("10.244.2.7")}, Decision{}, "network namespace not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.RouteGet(tt.q)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RouteGet = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("RouteGet = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	sandbox.Require(t)
	node, pod, m := podOnNode(t)
	var ln net.Listener
	if err := node.Do(func() (err error) { ln, err = net.Listen("tcp", "10.244.1.1:7100"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan netip.AddrPort, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c.RemoteAddr().(*net.TCPAddr).AddrPort()
			c.Close()
		}
	}()
	a := netip.MustParseAddrPort
	ctx := context.Background()
	// From the pod: the node's listener sees the probe come from the pod,
	// from the port Probe reports. The timeout outlasts a SYN retransmit (1 s):
	// right after the veth and the bridge come up, the kernel may drop the
	// first SYN until its link watcher has activated their queues (seen once
	// in CI, with a 1 s timeout).
	out, err := m.Probe(ctx, ProbeSpec{NetNS: pod.Path, Dst: a("10.244.1.1:7100"), Proto: unix.IPPROTO_TCP, Timeout: 5 * time.Second})
	if err != nil || out.Result != ProbeConnected {
		t.Fatalf("probe to a listener = %+v, %v", out, err)
	}
	select {
	case got := <-accepted:
		if got.Addr().Unmap() != netip.MustParseAddr("10.244.1.2") || got.Port() != out.Src.Port() {
			t.Errorf("listener saw %s, probe says it came from %s", got, out.Src)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the listener saw no connection")
	}
	tests := []struct {
		name string
		spec ProbeSpec
		want string
	}{
		{"closed port", ProbeSpec{NetNS: pod.Path, Dst: a("10.244.1.1:7101"), Proto: unix.IPPROTO_TCP}, ProbeRefused},
		{"nobody answers ARP", ProbeSpec{NetNS: pod.Path, Dst: a("10.244.1.77:80"), Proto: unix.IPPROTO_TCP, Timeout: 300 * time.Millisecond}, ProbeTimeout},
		{"udp", ProbeSpec{NetNS: pod.Path, Dst: a("10.244.1.1:53"), Proto: unix.IPPROTO_UDP}, ProbeSent},
		{"from the node, bound to its address", ProbeSpec{Src: netip.MustParseAddr("192.0.2.11"), Dst: a("10.244.1.2:9"), Proto: unix.IPPROTO_TCP}, ProbeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := m.Probe(ctx, tt.spec)
			if err != nil || out.Result != tt.want {
				t.Fatalf("Probe = %+v, %v; want %s", out, err, tt.want)
			}
			if tt.spec.Src.IsValid() && out.Src.Addr() != tt.spec.Src {
				t.Errorf("sent from %s, want %s", out.Src, tt.spec.Src)
			}
		})
	}
	if _, err := m.Probe(ctx, ProbeSpec{Dst: a("10.244.1.2:9"), Proto: unix.IPPROTO_SCTP}); err == nil {
		t.Error("an SCTP probe was accepted")
	}
	if _, err := m.Probe(ctx, ProbeSpec{NetNS: "/run/netns/nosuch", Dst: a("10.244.1.2:9"), Proto: unix.IPPROTO_TCP}); err == nil {
		t.Error("a probe from a missing namespace was accepted")
	}
}
