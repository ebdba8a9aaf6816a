package nft

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// Real packets through hostPort mappings, in the topology of
// svc_traffic_test.go: the node's address 192.168.1.11 (on lo) and its
// addresses on each link are local; pod-a and pod-b are the node's pods
// (State.ClusterCIDRs holds only their subnets, so the client is outside
// the cluster).

const hpNodeIP = "192.168.1.11"

// syncHostPorts programs the node with hps and no services.
func (l *svcLab) syncHostPorts(t *testing.T, hps ...HostPort) {
	t.Helper()
	err := l.tbl.Sync(State{
		ClusterCIDRs: prefixes("10.244.2.0/24", "10.244.3.0/24", "fd00:10:244:2::/64", "fd00:10:244:3::/64"),
		NodeIPs:      addrs(hpNodeIP),
		NodeName:     "node1",
		LocalIPs:     addrs(hpNodeIP),
		HostPorts:    hps,
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func mapping(hostIP string, proto Protocol, port uint16, pod string, podPort uint16) HostPort {
	h := HostPort{Protocol: proto, Port: port, PodIP: netip.MustParseAddr(pod), PodPort: podPort}
	if hostIP != "" {
		h.HostIP = netip.MustParseAddr(hostIP)
	}
	return h
}

// askBound is ask from the local address local, as `curl --interface`.
func askBound(ns *sandbox.NetNS, network, local, addr string) (reply, error) {
	var text string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: svcTimeout}
		if strings.HasPrefix(network, "udp") {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(local)}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.Dial(network, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(svcTimeout))
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			text = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		text = string(b)
		return err
	})
	if err != nil {
		return reply{}, fmt.Errorf("%s %s from %s in %s: %w", network, addr, local, ns.Name, err)
	}
	server, client, _ := strings.Cut(text, " ")
	return reply{server, client}, nil
}

// wantReply checks one answer: from server, which saw client ("" for any
// client but notClient).
func wantReply(t *testing.T, what string, r reply, err error, server, client, notClient string) {
	t.Helper()
	switch {
	case err != nil:
		t.Errorf("%s: %v", what, err)
	case r.server != server:
		t.Errorf("%s: answered by %s, want %s", what, r.server, server)
	case client != "" && r.client != client:
		t.Errorf("%s: %s saw client %s, want %s", what, r.server, r.client, client)
	case notClient != "" && r.client == notClient:
		t.Errorf("%s: %s saw client %s: not masqueraded", what, r.server, r.client)
	}
}

// wantRefused wants a TCP connection refused: no DNAT, and nothing listens
// on the node.
func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s: got %v, want connection refused (not translated)", what, err)
	}
}

func TestHostPortTraffic(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "hp")
	anyTCP := net.JoinHostPort(hpNodeIP, "30000")
	if _, err := ask(l.client, "tcp4", anyTCP); err == nil {
		t.Fatal("before Sync, the hostPort answered: the test network leaks")
	}
	l.syncHostPorts(t,
		mapping("", TCP, 30000, svcPodAIP, 8080),
		mapping("", UDP, 30053, svcPodAIP, 5353),
		mapping(hpNodeIP, TCP, 30001, svcPodBIP, 8080),
		// Kubernetes' conformance test "validates that there is no conflict
		// between pods with same hostPort but different hostIP and protocol".
		mapping("127.0.0.1", TCP, 30002, svcPodAIP, 8080),
		mapping(hpNodeIP, TCP, 30002, svcPodBIP, 8080),
		mapping(hpNodeIP, UDP, 30002, svcPodAIP, 5353),
	)

	r, err := ask(l.client, "tcp4", anyTCP)
	wantReply(t, "outside client to the node address", r, err, "pod-a", svcClientIP, "")
	r, err = ask(l.client, "tcp4", "10.244.1.1:30000")
	wantReply(t, "outside client to another local address", r, err, "pod-a", svcClientIP, "")
	r, err = ask(l.client, "udp4", net.JoinHostPort(hpNodeIP, "30053"))
	wantReply(t, "outside client, UDP", r, err, "pod-a", svcClientIP, "")
	r, err = ask(l.node, "tcp4", anyTCP)
	wantReply(t, "the node itself", r, err, "pod-a", hpNodeIP, "")
	r, err = ask(l.podB, "tcp4", anyTCP)
	wantReply(t, "another pod of the node", r, err, "pod-a", svcPodBIP, "")
	r, err = ask(l.podA, "tcp4", anyTCP)
	wantReply(t, "the pod itself (hairpin)", r, err, "pod-a", "10.244.2.1", svcPodAIP)
	r, err = ask(l.podA, "udp4", net.JoinHostPort(hpNodeIP, "30053"))
	wantReply(t, "the pod itself, UDP", r, err, "pod-a", "10.244.2.1", svcPodAIP)

	r, err = ask(l.client, "tcp4", net.JoinHostPort(hpNodeIP, "30001"))
	wantReply(t, "hostIP mapping on its address", r, err, "pod-b", svcClientIP, "")
	_, err = ask(l.client, "tcp4", "10.244.1.1:30001")
	wantRefused(t, "hostIP mapping on another local address", err)

	r, err = askBound(l.node, "tcp4", hpNodeIP, "127.0.0.1:30002")
	wantReply(t, "hostIP 127.0.0.1 from the node address", r, err, "pod-a", hpNodeIP, "")
	r, err = ask(l.node, "tcp4", net.JoinHostPort(hpNodeIP, "30002"))
	wantReply(t, "same port, hostIP the node address", r, err, "pod-b", hpNodeIP, "")
	r, err = ask(l.node, "udp4", net.JoinHostPort(hpNodeIP, "30002"))
	wantReply(t, "same port and hostIP, UDP", r, err, "pod-a", hpNodeIP, "")
	_, err = ask(l.node, "tcp4", "127.0.0.1:30000")
	wantRefused(t, "from a loopback source", err)

	l.syncHostPorts(t)
	_, err = ask(l.client, "tcp4", anyTCP)
	wantRefused(t, "after the mapping is removed", err)
}

func TestHostPortIPv6(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "hp6")
	for _, p := range []struct {
		ns   *sandbox.NetNS
		link string
		net  string
	}{{l.client, "to-client", "fd00:10:244:1::"}, {l.podA, "to-a", "fd00:10:244:2::"}, {l.podB, "to-b", "fd00:10:244:3::"}} {
		for _, a := range []struct {
			ns   *sandbox.NetNS
			link string
			host string
		}{{l.node, p.link, "1"}, {p.ns, "eth0", "2"}} {
			if err := sandbox.AddAddr(a.ns, a.link, netip.MustParsePrefix(p.net+a.host+"/64")); err != nil {
				t.Fatalf("%s: %v", a.ns.Name, err)
			}
		}
		addDefaultRoute6(t, p.ns, "eth0", netip.MustParseAddr(p.net+"1"))
	}
	waitDAD(t, l.client, l.node, l.podA, l.podB)
	if err := l.node.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	}); err != nil {
		t.Fatalf("enable IPv6 forwarding in node: %v", err)
	}
	const podA6, podB6, client6, node6, other6 = "fd00:10:244:2::2", "fd00:10:244:3::2", "fd00:10:244:1::2", "fd00:10:244:1::1", "fd00:10:244:2::1"
	serveTCP(t, l.podA, "pod-a", net.JoinHostPort(podA6, "8080"))
	serveTCP(t, l.podB, "pod-b", net.JoinHostPort(podB6, "8080"))
	serveUDP(t, l.podA, "pod-a", net.JoinHostPort(podA6, "5353"))
	if _, err := ask(l.client, "tcp6", net.JoinHostPort(node6, "30000")); err == nil {
		t.Fatal("before Sync, the hostPort answered: the test network leaks")
	}
	l.syncHostPorts(t,
		mapping("", TCP, 30000, podA6, 8080),
		mapping("", UDP, 30053, podA6, 5353),
		mapping(node6, TCP, 30001, podB6, 8080),
	)
	r, err := ask(l.client, "tcp6", net.JoinHostPort(node6, "30000"))
	wantReply(t, "outside client", r, err, "pod-a", client6, "")
	r, err = ask(l.client, "udp6", net.JoinHostPort(node6, "30053"))
	wantReply(t, "outside client, UDP", r, err, "pod-a", client6, "")
	r, err = ask(l.podB, "tcp6", net.JoinHostPort(other6, "30000"))
	wantReply(t, "another pod of the node", r, err, "pod-a", podB6, "")
	r, err = ask(l.podA, "tcp6", net.JoinHostPort(node6, "30000"))
	wantReply(t, "the pod itself (hairpin)", r, err, "pod-a", other6, podA6)
	r, err = ask(l.node, "tcp6", net.JoinHostPort(node6, "30000"))
	wantReply(t, "the node itself", r, err, "pod-a", node6, "")
	r, err = ask(l.client, "tcp6", net.JoinHostPort(node6, "30001"))
	wantReply(t, "hostIP mapping on its address", r, err, "pod-b", client6, "")
	_, err = ask(l.client, "tcp6", net.JoinHostPort(other6, "30001"))
	wantRefused(t, "hostIP mapping on another local address", err)
	_, err = ask(l.node, "tcp6", "[::1]:30000")
	wantRefused(t, "from ::1", err)
}

func TestHostPortSCTP(t *testing.T) {
	sandbox.Require(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		t.Skipf("no SCTP sockets in this kernel: %v (TestTableSyncHostPorts checks SCTP mappings are programmed)", err)
	}
	unix.Close(fd)
	l := newSvcLab(t, "hp-sctp")
	serveSCTP(t, l.podA, "pod-a", svcPodAIP)
	l.syncHostPorts(t, mapping("", SCTP, 80, svcPodAIP, 8080))
	r, err := askSCTP(l.client, hpNodeIP)
	wantReply(t, "SCTP hostPort", r, err, "pod-a", svcClientIP, "")
}
