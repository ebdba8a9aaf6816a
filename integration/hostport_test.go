package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/sandbox"
)

// hostPortRT is the runtime configuration of a pod's eth0 with hostPorts, as
// containerd passes kubelet's: the portMappings capability argument.
func hostPortRT(ns *sandbox.NetNS, id, name string, mappings ...map[string]any) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: ns.Path, IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", name}},
		CapabilityArgs: map[string]any{"portMappings": mappings}}
}

// serveClientAddr answers every TCP connection to addr in ns with the client
// address it saw, until the test ends.
func serveClientAddr(t *testing.T, ns *sandbox.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			c.Close()
		}
	}()
}

// dialSaw connects from ns to dst and returns the client address the server saw.
func dialSaw(ns *sandbox.NetNS, dst string) (string, error) {
	var line string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", dst, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// TestHostPortThroughCNI attaches a pod with hostPorts through libcni, as
// containerd does for kubelet: the conflist asks for the portMappings
// capability, so libcni hands the plugin runtimeConfig.portMappings. The
// hostPort must answer from another node with that node's address, survive a
// podnetd restart, refuse a second pod asking for the same port, and be gone
// after DEL.
func TestHostPortThroughCNI(t *testing.T) {
	l := newLab(t, 2)
	n1, n2 := l.Nodes[0], l.Nodes[1]
	ctx := context.Background()
	list, err := n1.ConfList()
	if err != nil {
		t.Fatal(err)
	}
	if !list.Plugins[0].Network.Capabilities["portMappings"] {
		t.Fatalf("the conflist does not ask for portMappings: %s", list.Bytes)
	}
	hostPort := netip.AddrPortFrom(n1.Addr, 30080).String()
	if _, err := dialSaw(n2.NS, hostPort); err == nil {
		t.Fatal("before ADD, the hostPort answered: the test network leaks")
	}

	ns := sandbox.TestNetNS(t, "hp-web")
	rt := hostPortRT(ns, "hp-web", "web",
		map[string]any{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"},
		map[string]any{"hostPort": 30081, "containerPort": 8080, "protocol": "tcp", "hostIP": n1.Addr.String()})
	res, err := l.CNI().AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		t.Fatalf("ADD result: %v %v", res, err)
	}
	podIP, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	serveClientAddr(t, ns, netip.AddrPortFrom(podIP, 8080).String())

	check := func(when string) {
		t.Helper()
		for _, dst := range []string{hostPort, netip.AddrPortFrom(n1.Addr, 30081).String()} {
			saw, err := dialSaw(n2.NS, dst)
			if err != nil {
				t.Errorf("%s: %s from %s: %v", when, dst, n2.Name, err)
			} else if saw != n2.Addr.String() {
				t.Errorf("%s: the pod saw client %s, want %s's address %s", when, saw, n2.Name, n2.Addr)
			}
		}
	}
	check("after ADD")
	nftText := func() string {
		t.Helper()
		out, err := client.New(n1.Socket(), 5*time.Second).NFT(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return out.Text
	}
	if text, want := nftText(), fmt.Sprintf("tcp . 30080 : %s . 8080", podIP); !strings.Contains(text, want) {
		t.Errorf("table lacks %q:\n%s", want, text)
	}

	// A restarted podnetd programs the mappings of its pod records.
	l.StopDaemon(n1, syscall.SIGTERM)
	if err := l.StartDaemon(n1); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, n1); err != nil {
		t.Fatal(err)
	}
	check("after a podnetd restart")

	// The same hostPort for a second pod: ADD fails and leaves nothing.
	ns2 := sandbox.TestNetNS(t, "hp-other")
	rt2 := hostPortRT(ns2, "hp-other", "other", map[string]any{"hostPort": 30080, "containerPort": 80, "protocol": "TCP"})
	_, err = l.CNI().AddNetworkList(ctx, list, rt2)
	if err == nil || !strings.Contains(err.Error(), "hostPort 30080/TCP on any address is already used by pod default/web") {
		t.Errorf("ADD of a conflicting hostPort: %v, want a conflict naming default/web", err)
	}
	if allocs := allocations(t, n1); len(allocs) != 1 {
		t.Errorf("after the refused ADD: %d allocations, want 1", len(allocs))
	}
	check("after the refused ADD")

	if err := l.CNI().DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	_, err = dialSaw(n2.NS, hostPort)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after DEL: %s from %s: %v, want connection refused", hostPort, n2.Name, err)
	}
	if text := nftText(); strings.Contains(text, "30080") || strings.Contains(text, "30081") {
		t.Errorf("table still maps the hostPorts after DEL:\n%s", text)
	}
	// The port is free for another pod.
	if _, err := l.CNI().AddNetworkList(ctx, list, rt2); err != nil {
		t.Errorf("ADD of the port after DEL: %v", err)
	} else if err := l.CNI().DelNetworkList(ctx, list, rt2); err != nil {
		t.Errorf("DEL: %v", err)
	}
}
