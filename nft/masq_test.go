package nft

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// TestMasqueradeTraffic proves the rules on packets. Topology, all namespaces of
// the sandbox:
//
//	pod 10.244.1.2 ── 10.244.1.1 node 203.0.113.1 ── 203.0.113.2 ext
//	                             node 10.244.2.1  ── 10.244.2.2  peer
//
// ext has no route back to the pod network: it can answer only a masqueraded
// connection. peer routes back through node and must see the pod's own address.
func TestMasqueradeTraffic(t *testing.T) {
	sandbox.Require(t)
	pod, node := sandbox.TestNetNS(t, "mq-pod"), sandbox.TestNetNS(t, "mq-node")
	ext, peer := sandbox.TestNetNS(t, "mq-ext"), sandbox.TestNetNS(t, "mq-peer")
	veth(t, node, "to-pod", pod, "eth0")
	veth(t, node, "to-ext", ext, "eth0")
	veth(t, node, "to-peer", peer, "eth0")
	addAddr(t, pod, "eth0", netip.MustParsePrefix("10.244.1.2/24"))
	addAddr(t, node, "to-pod", netip.MustParsePrefix("10.244.1.1/24"))
	addAddr(t, node, "to-ext", netip.MustParsePrefix("203.0.113.1/24"))
	addAddr(t, ext, "eth0", netip.MustParsePrefix("203.0.113.2/24"))
	addAddr(t, node, "to-peer", netip.MustParsePrefix("10.244.2.1/24"))
	addAddr(t, peer, "eth0", netip.MustParsePrefix("10.244.2.2/24"))
	addDefaultRoute(t, pod, "eth0", netip.MustParseAddr("10.244.1.1"))
	addDefaultRoute(t, peer, "eth0", netip.MustParseAddr("10.244.2.1"))
	err := node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) })
	if err != nil {
		t.Fatalf("enable forwarding in node: %v", err)
	}
	extAddr := listen(t, ext, "203.0.113.2:8080")
	peerAddr := listen(t, peer, "10.244.2.2:8080")

	// Without the table, ext cannot answer the pod.
	if got, err := clientAddr(pod, extAddr); err == nil {
		t.Fatalf("before Sync, ext saw the pod as %s: the test network leaks", got)
	}

	tbl := newTable(t, node)
	err = tbl.Sync(State{
		ClusterCIDRs: prefixes("10.244.1.0/24", "10.244.2.0/24"),
		NodeIPs:      addrs("203.0.113.1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		srv  *server
		want string
	}{
		{"pod to outside world is masqueraded", extAddr, "203.0.113.1"},
		{"pod to pod on another node is not", peerAddr, "10.244.1.2"},
	} {
		got, err := clientAddr(pod, tc.srv)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if got != tc.want {
			t.Errorf("%s: server saw client %s, want %s", tc.name, got, tc.want)
		}
	}
}

// server is a TCP listener in a namespace that reports each client's address.
type server struct {
	ln      *net.TCPListener
	clients chan string
}

// listen starts a server on addr in ns; it stops when the test ends.
func listen(t *testing.T, ns *sandbox.NetNS, addr string) *server {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", addr) // the socket stays in ns
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	s := &server{ln: ln.(*net.TCPListener), clients: make(chan string, 4)}
	t.Cleanup(func() { ln.Close() })
	if err := s.ln.SetDeadline(time.Now().Add(time.Minute)); err != nil { // bounds Accept
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return // closed
			}
			s.clients <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	return s
}

// clientAddr connects from ns to srv and returns the client address srv saw.
func clientAddr(ns *sandbox.NetNS, srv *server) (string, error) {
	const timeout = 2 * time.Second
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp4", srv.ln.Addr().String(), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return "", fmt.Errorf("dial %s from %s: %w", srv.ln.Addr(), ns.Name, err)
	}
	select {
	case ip := <-srv.clients:
		return ip, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s accepted nothing within %s", srv.ln.Addr(), timeout)
	}
}
