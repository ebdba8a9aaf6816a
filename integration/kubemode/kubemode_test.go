// Package kubemode tests podnetd in Kubernetes mode against a real
// kube-apiserver (integration/kube): Nodes, Services and EndpointSlices made
// with client-go become routes and service rules in a node namespace, and real
// TCP connections through the ClusterIP follow them, also across an API
// server outage.
package kubemode

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// TestMain builds kube-apiserver once per machine, then runs the tests in a
// sandbox.
func TestMain(m *testing.M) { kube.Main(m) }

var (
	hostAddr = netip.MustParseAddr("192.0.2.1") // the sandbox's own namespace on the underlay: the API server
	vip      = "10.96.0.10"
)

// node is a node namespace on the underlay.
type node struct {
	name   string
	ns     *sandbox.NetNS
	addr   netip.Addr
	dir    string
	daemon *exec.Cmd
}

// TestKubernetesMode runs podnetd on node1 with --kubeconfig and the least
// privilege podnetd needs, and checks that it waits for its podCIDR, routes
// to the other Nodes' podCIDRs, serves a Service's ClusterIP from its
// EndpointSlices as they are scaled up and down, keeps connections working
// while the API server is away and applies changes made after it returns,
// follows Nodes that come and go, and removes a deleted Service.
func TestKubernetesMode(t *testing.T) {
	token := kube.NewToken("podnetd")
	cp := kube.ForTest(t, kube.Options{Tokens: []kube.Token{token}, ServingIPs: []netip.Addr{hostAddr}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildPodnetd(t)
	grantReadOnly(t, ctx, cp.Client, token.User)
	underlay(t)
	n1 := addNode(t, "node1", "192.0.2.11")
	n2 := addNode(t, "node2", "192.0.2.12")
	k := cp.Client

	createNode(t, ctx, k, n1)
	createNode(t, ctx, k, n2, "10.244.2.0/24")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	server := fmt.Sprintf("https://%s:%d", hostAddr, cp.Port)
	if err := cp.WriteKubeconfig(kubeconfig, server, token.Token); err != nil {
		t.Fatal(err)
	}
	startPodnetd(t, bin, n1, kubeconfig)
	c := client.New(filepath.Join(n1.dir, "podnet.sock"), 2*time.Second)

	// No podCIDR yet: podnetd says it waits, and programs nothing.
	eventually(t, "podnetd waiting for node1's podCIDR", 60*time.Second, func() error {
		b, _ := os.ReadFile(filepath.Join(n1.dir, "podnetd.log"))
		if !strings.Contains(string(b), "waiting for this node's podCIDR") {
			return fmt.Errorf("no wait logged")
		}
		return nil
	})
	if st, err := c.Status(ctx); err != nil || st.Ready || st.Source != "kube:"+server {
		t.Fatalf("status while waiting = %+v, %v; want not ready, source kube:%s", st, err, server)
	}
	setPodCIDR(t, ctx, k, "node1", "10.244.1.0/24")
	eventually(t, "node1 ready with a route to node2", 30*time.Second, func() error {
		if st, err := c.Status(ctx); err != nil || !st.Ready {
			return fmt.Errorf("status %+v, %v", st, err)
		}
		return wantRoute(n1, "10.244.2.0/24", "192.0.2.12")
	})

	// A Service with an endpoint on node2, then on both nodes, then on node1 only.
	serve(t, n1)
	serve(t, n2)
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{ClusterIP: vip, ClusterIPs: []string{vip},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}}}
	if _, err := k.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setEndpoints(t, ctx, k, n2)
	eventually(t, "the VIP served by node2", 30*time.Second, func() error { return wantServedBy(n1, 10, "node2") })
	setEndpoints(t, ctx, k, n1, n2)
	eventually(t, "the VIP served by both nodes", 30*time.Second, func() error { return wantServedBy(n1, 40, "node1", "node2") })
	setEndpoints(t, ctx, k, n1)
	eventually(t, "the VIP served by node1 only", 30*time.Second, func() error { return wantServedBy(n1, 20, "node1") })

	// The API server goes away for a while: the datapath stays, an open
	// connection and new ones work; a change made after it returns applies.
	long := dialVIP(t, n1)
	defer long.Close()
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	for time.Since(outage) < 30*time.Second { // the acceptance outage
		if err := long.echo("during the outage"); err != nil {
			t.Fatalf("open connection during the outage: %v", err)
		}
		if err := wantServedBy(n1, 5, "node1"); err != nil {
			t.Fatalf("new connections during the outage: %v", err)
		}
		time.Sleep(time.Second)
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := long.echo("after the outage"); err != nil {
		t.Fatalf("open connection after the outage: %v", err)
	}
	setEndpoints(t, ctx, k, n2)
	eventually(t, "the change after the outage applied", 90*time.Second, func() error { return wantServedBy(n1, 10, "node2") })

	// A Node comes and goes: its route follows.
	node3 := &node{name: "node3", addr: netip.MustParseAddr("192.0.2.13")}
	createNode(t, ctx, k, node3, "10.244.3.0/24")
	// 90 s, not 30: each informer's reflector backs off on its own during
	// the outage (client-go: 0.8 s doubling to 30 s, with jitter), so the
	// Nodes watch may come back up to about a minute after the Services one
	// that the step above waited for (seen: 2 runs in 3 missed 30 s).
	eventually(t, "a route to node3", 90*time.Second, func() error { return wantRoute(n1, "10.244.3.0/24", "192.0.2.13") })
	if err := k.CoreV1().Nodes().Delete(ctx, "node3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node3's route gone", 30*time.Second, func() error {
		if wantRoute(n1, "10.244.3.0/24", "192.0.2.13") == nil {
			return fmt.Errorf("still routed")
		}
		return nil
	})

	// The Service goes: so do its rules.
	if err := k.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VIP no longer served", 30*time.Second, func() error {
		if got := connect(n1, 300*time.Millisecond); got != "" {
			return fmt.Errorf("still served by %s", got)
		}
		svcs, err := c.Services(ctx)
		if err != nil {
			return err
		}
		for _, s := range svcs.Programmed {
			if s.Name == "web" {
				return fmt.Errorf("web still programmed")
			}
		}
		return nil
	})
}

// grantReadOnly gives user the ClusterRole docs/kubernetes.md asks for:
// get, list and watch on Nodes, Services and EndpointSlices, nothing more.
func grantReadOnly(t *testing.T, ctx context.Context, k kubernetes.Interface, user string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "podnetd"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}}
	if _, err := k.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "podnetd"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "podnetd"},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}}}
	if _, err := k.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// buildPodnetd builds podnetd for the test (the module cache is on disk: no
// network needed).
func buildPodnetd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "podnetd")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/podnetd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build podnetd: %v\n%s", err, out)
	}
	return bin
}

// underlay makes bridge "underlay" in the sandbox's own namespace, with
// hostAddr, where the API server listens.
func underlay(t *testing.T) {
	t.Helper()
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: "underlay", Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &driver.Bridge{}}}})
	if err != nil {
		t.Fatalf("underlay bridge: %v", err)
	}
	if err := sandbox.SetLinkUp(-1, "underlay"); err != nil {
		t.Fatal(err)
	}
	ifi, err := net.InterfaceByName("underlay")
	if err != nil {
		t.Fatal(err)
	}
	ip := net.IP(hostAddr.AsSlice())
	err = c.Address.New(&rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: 24, Index: uint32(ifi.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD}})
	if err != nil {
		t.Fatalf("underlay address: %v", err)
	}
	t.Cleanup(func() { sandbox.DeleteLink(-1, "underlay") })
}

// addNode makes a node namespace on the underlay, with a default route to
// the sandbox's own namespace (a node reaches a ClusterIP only if it has a
// route for it, as real nodes have).
func addNode(t *testing.T, name, address string) *node {
	t.Helper()
	n := &node{name: name, addr: netip.MustParseAddr(address), dir: t.TempDir()}
	n.ns = sandbox.TestNetNS(t, name)
	if err := sandbox.Uplink(n.ns, "u-"+name, "underlay", netip.PrefixFrom(n.addr, 24)); err != nil {
		t.Fatal(err)
	}
	c, err := n.ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Route.Add(&rtnetlink.RouteMessage{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST, Attributes: rtnetlink.RouteAttributes{Gateway: net.IP(hostAddr.AsSlice())}})
	if err != nil {
		t.Fatalf("%s default route: %v", name, err)
	}
	return n
}

func createNode(t *testing.T, ctx context.Context, k kubernetes.Interface, n *node, podCIDRs ...string) {
	t.Helper()
	obj := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}, Spec: v1.NodeSpec{PodCIDRs: podCIDRs},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.addr.String()}, {Type: v1.NodeHostName, Address: n.name}}}}
	if len(podCIDRs) > 0 {
		obj.Spec.PodCIDR = podCIDRs[0]
	}
	created, err := k.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Node status is a subresource: addresses are set through it, as the kubelet does.
	created.Status = obj.Status
	if _, err := k.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func setPodCIDR(t *testing.T, ctx context.Context, k kubernetes.Interface, name, cidr string) {
	t.Helper()
	n, err := k.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	if _, err := k.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setEndpoints makes web's endpoints the addresses of nodes, port 8080: one
// EndpointSlice per node (several slices per Service, as large Services
// have); slices of other nodes are deleted.
func setEndpoints(t *testing.T, ctx context.Context, k kubernetes.Interface, nodes ...*node) {
	t.Helper()
	api := k.DiscoveryV1().EndpointSlices("default")
	want := map[string]bool{}
	for _, n := range nodes {
		name := "web-" + n.name
		want[name] = true
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{n.addr.String()}, NodeName: ptr.To(n.name),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}
		if _, err := api.Create(ctx, sl, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatal(err)
		}
	}
	list, err := api.List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, sl := range list.Items {
		if !want[sl.Name] {
			if err := api.Delete(ctx, sl.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// startPodnetd runs podnetd on n in Kubernetes mode until the test ends,
// showing the end of its log if the test failed or runs with -v.
func startPodnetd(t *testing.T, bin string, n *node, kubeconfig string) {
	t.Helper()
	logPath := filepath.Join(n.dir, "podnetd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--node-name", n.name, "--kubeconfig", kubeconfig,
		"--socket", filepath.Join(n.dir, "podnet.sock"), "--state-dir", filepath.Join(n.dir, "state"),
		"--cni-conf-dir", filepath.Join(n.dir, "net.d"), "--cni-bin-dir", n.dir, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	n.daemon = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() || testing.Verbose() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("--- %s podnetd.log (tail)\n%s", n.name, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
}

// serve runs a TCP server on n's address, port 8080: it writes n's name and
// a newline, then echoes.
func serve(t *testing.T, n *node) {
	t.Helper()
	var ln net.Listener
	err := n.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(n.addr, 8080).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				fmt.Fprintln(conn, n.name)
				io.Copy(conn, conn)
			})
		}
	})
}

// conn is a connection through the VIP.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func (c *conn) echo(msg string) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", line, msg)
	}
	return nil
}

// dial connects from n's namespace to the VIP, port 80, and reads the name
// of the server.
func dial(n *node, timeout time.Duration) (*conn, string, error) {
	var c net.Conn
	err := n.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", vip+":80", timeout)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return &conn{Conn: c, r: r}, strings.TrimSpace(name), nil
}

func dialVIP(t *testing.T, n *node) *conn {
	t.Helper()
	c, _, err := dial(n, 2*time.Second)
	if err != nil {
		t.Fatalf("connect to %s:80 from %s: %v", vip, n.name, err)
	}
	return c
}

// connect makes one connection through the VIP and returns the server's
// name, or "" when it fails.
func connect(n *node, timeout time.Duration) string {
	c, name, err := dial(n, timeout)
	if err != nil {
		return ""
	}
	c.Close()
	return name
}

// wantServedBy makes count connections through the VIP from n: every one
// must succeed, each served by one of names, and each of names must serve
// some.
func wantServedBy(n *node, count int, names ...string) error {
	seen := map[string]int{}
	for range count {
		seen[connect(n, time.Second)]++
	}
	for name := range seen {
		if !contains(names, name) {
			return fmt.Errorf("connections by server (\"\": failed): %v; want only %v", seen, names)
		}
	}
	for _, name := range names {
		if seen[name] == 0 {
			return fmt.Errorf("connections by server: %v; want some to each of %v", seen, names)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// wantRoute reports whether n has podnet's route (protocol 90) to dst via via.
func wantRoute(n *node, dst, via string) error {
	c, err := n.ns.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	routes, err := c.Route.List()
	if err != nil {
		return err
	}
	want := netip.MustParsePrefix(dst)
	for _, r := range routes {
		if r.Protocol != 90 || r.DstLength != uint8(want.Bits()) {
			continue
		}
		d, _ := netip.AddrFromSlice(r.Attributes.Dst)
		g, _ := netip.AddrFromSlice(r.Attributes.Gateway)
		if d.Unmap() == want.Addr() {
			if g.Unmap().String() != via {
				return fmt.Errorf("route to %s via %s, want via %s", dst, g, via)
			}
			return nil
		}
	}
	return fmt.Errorf("no podnet route to %s", dst)
}

// eventually retries check until it succeeds or timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
