package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podnet/podnet/daemon/api"
)

// TestMain finds kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet and the images (built by make kube-node-tools and make images), then
// runs the tests in a sandbox with its own PID namespace, and fails if the
// machine's network namespace, sysctls or watched paths changed.
func TestMain(m *testing.M) { Main(m) }

// TestSmoke is issue 6's smoke test: a cluster whose only network component is
// podnet (its DaemonSet installs the CNI plugin and conflist, proxies
// Services) and whose DNS is CoreDNS behind podnet's service proxy. With
// PODNET_E2E_NETWORK=reference the same checks run on the reference network
// instead (bridge + host-local + portmap and kube-proxy in nftables mode,
// NetworkReference), the stack TestConformance measures podnet against. Two agnhost
// netexec pods on different nodes reach each other by pod IP, each seeing the
// other's own address; a third pod reaches them through a ClusterIP Service by
// its DNS name and each answers; pods/exec, pods/log and pods/proxy go through
// kubelets that authenticate the API server by its client certificate; the
// control-plane host reaches pods by their IPs.
func TestSmoke(t *testing.T) {
	sysBefore := readSysctls(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	// Only the images the smoke test runs (all of them: ~0.5 s more).
	if n, err := NodesFromEnv(); err != nil || n == 1 {
		t.Fatalf("the smoke test needs at least 2 nodes: PODNET_E2E_NODES gives %d (%v)", n, err)
	}
	c := ForTest(t, ctx, Options{Images: []string{AgnhostImage}, Network: os.Getenv(EnvNetwork)})
	for _, s := range c.Steps {
		t.Logf("bring-up: %-45s at %s", s.Name, s.At.Round(time.Millisecond))
	}
	if c.opts.Network == NetworkReference {
		t.Logf("cluster up in %s (reference network: CNI plugins %s, kube-proxy %s)",
			time.Since(start).Round(time.Millisecond), cniPluginsVersion, c.bins.KubeProxy)
	} else {
		t.Logf("cluster up in %s (podnet image %s)", time.Since(start).Round(time.Millisecond), c.images.PodnetImage())
	}
	testStart := time.Now()
	checkNodes(t, ctx, c)

	cs := c.CP.Client
	pods := cs.CoreV1().Pods("default")
	web := map[string]*corev1.Pod{} // node → server pod
	for _, n := range c.Nodes {
		p := agnhostPod("web-"+n.Name, n.Name, "netexec", "--http-port=8080")
		p.Labels = map[string]string{"app": "web"}
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1,
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	client := agnhostPod("client", c.Nodes[0].Name, "pause")
	if _, err := pods.Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		web[n.Name] = waitPodReady(t, ctx, c, "web-"+n.Name, n)
	}
	clientPod := waitPodReady(t, ctx, c, "client", c.Nodes[0])
	t.Logf("pods ready in %s: %s", time.Since(testStart).Round(time.Millisecond), podIPs(web, clientPod))

	t.Run("own address", func(t *testing.T) {
		for _, p := range append(sortedPods(web), clientPod) {
			out := execIn(t, ctx, c, p.Name, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
			if !strings.Contains(out, " "+p.Status.PodIP+"/") {
				t.Errorf("pod %s: eth0 %q lacks its pod IP %s", p.Name, strings.TrimSpace(out), p.Status.PodIP)
			}
		}
	})

	t.Run("pod to pod", func(t *testing.T) {
		// Across nodes both ways, and on one node: the server sees the client's own address.
		pairs := [][2]*corev1.Pod{{web["node1"], web["node2"]}, {web["node2"], web["node1"]}, {clientPod, web["node1"]}}
		if last := c.Nodes[len(c.Nodes)-1].Name; last != "node2" { // PODNET_E2E_NODES > 2
			pairs = append(pairs, [2]*corev1.Pod{web[last], web["node1"]}, [2]*corev1.Pod{clientPod, web[last]})
		}
		for _, pr := range pairs {
			from, to := pr[0], pr[1]
			got := execIn(t, ctx, c, from.Name, "curl", "-sS", "--max-time", "5",
				"http://"+net.JoinHostPort(to.Status.PodIP, "8080")+"/clientip")
			if host := hostOf(got); host != from.Status.PodIP {
				t.Errorf("%s → %s (%s): server saw %q, want the client's pod IP %s", from.Name, to.Name, to.Status.PodIP, got, from.Status.PodIP)
			}
		}
	})

	t.Run("service by name", func(t *testing.T) {
		// Pods are ready before their endpoints reach the EndpointSlice and
		// podnet (kube-proxy): wait until the client's node has programmed both.
		var webIPs []string
		for _, p := range web {
			webIPs = append(webIPs, p.Status.PodIP)
		}
		waitProgrammed(t, ctx, c, c.Nodes[0].Name, "default/web", "tcp/http", webIPs...)
		dns, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			t.Fatal(err)
		}
		var dnsIPs []string
		for _, p := range dns.Items {
			dnsIPs = append(dnsIPs, p.Status.PodIP)
		}
		waitProgrammed(t, ctx, c, c.Nodes[0].Name, "kube-system/kube-dns", "udp/dns", dnsIPs...)
		name := "web.default.svc.cluster.local"
		out := execIn(t, ctx, c, "client", "getent", "hosts", name)
		if f := strings.Fields(out); len(f) == 0 || f[0] != svc.Spec.ClusterIP {
			t.Fatalf("getent hosts %s: %q, want the ClusterIP %s", name, out, svc.Spec.ClusterIP)
		}
		tries := 10 * len(web) // a miss of one endpoint by chance: (1-1/n)^(10n) < 5e-5
		out = execIn(t, ctx, c, "client", "sh", "-c",
			fmt.Sprintf(`for i in $(seq %d); do curl -sS --max-time 3 http://%s/hostname || echo FAILED; echo; done`, tries, name))
		seen := map[string]int{}
		for _, l := range strings.Fields(out) {
			seen[l]++
		}
		answered := 0
		for _, p := range web {
			if seen[p.Name] == 0 {
				t.Errorf("%d connections to http://%s: none reached %s", tries, name, p.Name)
			}
			answered += seen[p.Name]
		}
		if answered != tries {
			t.Errorf("%d connections to http://%s: answers %v, want every one answered by an endpoint", tries, name, seen)
		}
		got := execIn(t, ctx, c, "client", "curl", "-sS", "--max-time", "3", "http://"+name+"/clientip")
		if host := hostOf(got); host != clientPod.Status.PodIP {
			t.Errorf("through the Service the endpoint saw %q, want the client's pod IP %s", got, clientPod.Status.PodIP)
		}
		t.Logf("%d connections through %s (%s): %v", tries, name, svc.Spec.ClusterIP, seen)
	})

	t.Run("kubelet API", func(t *testing.T) {
		// pods/log and pods/proxy go through the kubelet (exec above did too).
		logs, err := pods.GetLogs("web-node2", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil || len(logs) == 0 {
			t.Errorf("logs of web-node2: %v %q", err, logs)
		}
		body, err := pods.ProxyGet("http", "web-node2", "8080", "/hostname", nil).DoRaw(ctx)
		if err != nil || string(body) != "web-node2" {
			t.Errorf("pods/proxy web-node2:8080/hostname: %q, %v", body, err)
		}
		// Without the API server's client certificate the kubelet refuses.
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := hc.Get("https://" + net.JoinHostPort(c.Nodes[0].Addr.String(), "10250") + "/pods")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous GET /pods on node1's kubelet: %s, want 401", resp.Status)
		}
	})

	t.Run("control plane to pod", func(t *testing.T) {
		// The sandbox's own namespace routes the podCIDRs to the nodes (routePodCIDRs).
		hc := &http.Client{Timeout: 5 * time.Second}
		resp, err := hc.Get("http://" + net.JoinHostPort(web["node2"].Status.PodIP, "8080") + "/clientip")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if host := hostOf(string(b)); host != c.controlPlaneAddr().String() {
			t.Errorf("web-node2 saw the control plane as %q, want %s", b, c.controlPlaneAddr())
		}
	})
	t.Logf("smoke test took %s after bring-up", time.Since(testStart).Round(time.Millisecond))

	downStart := time.Now()
	if err := c.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("torn down in %s", time.Since(downStart).Round(time.Millisecond))
	if after := readSysctls(t); after != sysBefore {
		t.Errorf("machine-wide sysctls changed:\nbefore %s\nafter  %s", sysBefore, after)
	}
}

// checkNodes checks what podnet did to make the nodes Ready: distinct
// podCIDRs, its plugin in each node's /opt/cni/bin and its conflist, at the
// version containerd 1.6 takes, in /etc/cni/net.d. With the reference network
// it checks the reference conflist and plugins instead (checkReferenceNode).
func checkNodes(t *testing.T, ctx context.Context, c *Cluster) {
	t.Helper()
	cidrs := map[string]bool{}
	for _, n := range c.Nodes {
		node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range node.Spec.PodCIDRs {
			if cidrs[p] {
				t.Errorf("podCIDR %s given twice", p)
			}
			cidrs[p] = true
		}
		if c.opts.Network == NetworkReference {
			checkReferenceNode(t, n, node.Spec.PodCIDRs)
			continue
		}
		b, err := os.ReadFile(filepath.Join(n.CNIConfDir(), "10-podnet.conflist"))
		if err != nil {
			t.Fatalf("node %s: %v", n.Name, err)
		}
		var conf struct {
			CNIVersion string `json:"cniVersion"`
			Plugins    []struct {
				Type string `json:"type"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(b, &conf); err != nil {
			t.Fatalf("node %s: conflist: %v", n.Name, err)
		}
		if conf.CNIVersion != PodnetCNIVersion || len(conf.Plugins) == 0 || conf.Plugins[0].Type != "podnet" {
			t.Errorf("node %s: conflist %s", n.Name, b)
		}
		if fi, err := os.Stat(filepath.Join(n.CNIBinDir(), "podnet")); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("node %s: podnet's plugin not installed in /opt/cni/bin: %v", n.Name, err)
		}
	}
}

// checkReferenceNode checks the reference network's files on a node: the
// conflist (bridge with the node's podCIDR, then portmap) at the version
// containerd 1.6 takes, and the plugins in /opt/cni/bin; no podnet there.
func checkReferenceNode(t *testing.T, n *Node, podCIDRs []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.CNIConfDir(), ReferenceConflist))
	if err != nil {
		t.Fatalf("node %s: %v", n.Name, err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type string `json:"type"`
			IPAM struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("node %s: conflist: %v", n.Name, err)
	}
	if conf.CNIVersion != PodnetCNIVersion || len(conf.Plugins) != 2 || conf.Plugins[0].Type != "bridge" ||
		conf.Plugins[1].Type != "portmap" || len(conf.Plugins[0].IPAM.Ranges) != 1 ||
		len(conf.Plugins[0].IPAM.Ranges[0]) != 1 || !slices.Contains(podCIDRs, conf.Plugins[0].IPAM.Ranges[0][0].Subnet) {
		t.Errorf("node %s: conflist for podCIDRs %v: %s", n.Name, podCIDRs, b)
	}
	for _, p := range append([]string{"loopback"}, referencePlugins...) {
		if fi, err := os.Stat(filepath.Join(n.CNIBinDir(), p)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("node %s: plugin %s not installed in /opt/cni/bin: %v", n.Name, p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.CNIBinDir(), "podnet")); err == nil {
		t.Errorf("node %s: podnet's plugin installed on the reference network", n.Name)
	}
}

// waitProgrammed waits until podnetd on node has programmed the service
// (namespace/name) with exactly the given endpoints, all ready, asking it the
// way an operator does: `kubectl -n kube-system exec <podnet pod> --
// podnetctl services -o json`. On the reference network it waits until
// kube-proxy's chain for the service's port ("tcp/http") on node sends to
// exactly those endpoints (waitKubeProxy).
func waitProgrammed(t *testing.T, ctx context.Context, c *Cluster, node, service, port string, endpoints ...string) {
	t.Helper()
	if c.opts.Network == NetworkReference {
		waitKubeProxy(t, ctx, c, node, service+"/"+port, endpoints...)
		return
	}
	pods, err := c.CP.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=podnet", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("podnet's pod on %s: %v (%d pods)", node, err, len(pods.Items))
	}
	sort.Strings(endpoints)
	podnet := pods.Items[0].Name
	err = poll(ctx, "podnetd on "+node+" programs "+service, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		out, _, err := c.ExecPod(ectx, "kube-system", podnet, "podnetd", "podnetctl", "services", "-o", "json")
		if err != nil {
			return false, err
		}
		var svcs api.Services
		if err := json.Unmarshal([]byte(out), &svcs); err != nil {
			return false, fmt.Errorf("podnetctl services -o json: %w: %q", err, out)
		}
		for _, s := range svcs.Programmed {
			if s.Namespace+"/"+s.Name != service {
				continue
			}
			var got []string
			for _, e := range s.Endpoints {
				if e.Ready {
					got = append(got, e.Address)
				}
			}
			sort.Strings(got)
			if !slices.Equal(got, endpoints) {
				return false, fmt.Errorf("ready endpoints %v, want %v", got, endpoints)
			}
			return true, nil
		}
		return false, errors.New("not programmed")
	}, c.procs()...)
	if err != nil {
		t.Fatal(err)
	}
}

// waitKubeProxy waits until kube-proxy on node has a chain for servicePort
// ("default/web/tcp/http") that sends to exactly the given endpoint IPs, reading
// its nftables table in the node's namespace.
func waitKubeProxy(t *testing.T, ctx context.Context, c *Cluster, node, servicePort string, endpoints ...string) {
	t.Helper()
	var n *Node
	for _, nn := range c.Nodes {
		if nn.Name == node {
			n = nn
		}
	}
	if n == nil {
		t.Fatalf("no node %s", node)
	}
	sort.Strings(endpoints)
	err := poll(ctx, "kube-proxy on "+node+" programs "+servicePort, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		eps, err := n.ServiceChainEndpoints(ctx, servicePort)
		if err != nil {
			return false, err
		}
		var got []string
		for _, ep := range eps {
			host, _, _ := net.SplitHostPort(ep)
			got = append(got, host)
		}
		sort.Strings(got)
		if !slices.Equal(got, endpoints) {
			return false, fmt.Errorf("endpoints %v, want %v", got, endpoints)
		}
		return true, nil
	}, c.procs()...)
	if err != nil {
		t.Fatal(err)
	}
}

// agnhostPod is a pod on node running agnhost with args, no service account
// token, stopped at once.
func agnhostPod(name, node string, args ...string) *corev1.Pod {
	var zero int64
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{corev1.LabelHostname: node},
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "agnhost", Image: AgnhostImage, ImagePullPolicy: corev1.PullNever, Args: args,
			}},
		},
	}
}

// waitPodReady waits until the pod runs ready on node with an IP of node's podCIDR.
func waitPodReady(t *testing.T, ctx context.Context, c *Cluster, name string, n *Node) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := poll(ctx, "pod "+name+" ready", 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		p, err := c.CP.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Spec.NodeName != n.Name {
			return false, fmt.Errorf("scheduled to %q", p.Spec.NodeName)
		}
		ready := false
		for _, cond := range p.Status.Conditions {
			ready = ready || cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue
		}
		if !ready || p.Status.PodIP == "" {
			return false, fmt.Errorf("phase %s, not ready: %+v", p.Status.Phase, p.Status.ContainerStatuses)
		}
		pod = p
		return true, nil
	}, c.procs()...)
	if err != nil {
		t.Fatal(err)
	}
	node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(pod.Status.PodIP)
	for _, s := range node.Spec.PodCIDRs {
		if netip.MustParsePrefix(s).Contains(ip) {
			return pod
		}
	}
	t.Fatalf("pod %s: IP %s not in node %s's podCIDRs %v", name, ip, n.Name, node.Spec.PodCIDRs)
	return nil
}

// execIn runs a command in a default-namespace pod's agnhost container, bounded to 60 s.
func execIn(t *testing.T, ctx context.Context, c *Cluster, pod string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, _, err := c.ExecPod(ctx, "default", pod, "agnhost", cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hostOf is the address of netexec's /clientip answer ("10.244.1.5:43122").
func hostOf(hostPort string) string {
	host, _, err := net.SplitHostPort(strings.TrimSpace(hostPort))
	if err != nil {
		return strings.TrimSpace(hostPort)
	}
	return host
}

func sortedPods(m map[string]*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func podIPs(web map[string]*corev1.Pod, client *corev1.Pod) string {
	var parts []string
	for _, p := range append(sortedPods(web), client) {
		parts = append(parts, fmt.Sprintf("%s=%s@%s", p.Name, p.Status.PodIP, p.Spec.NodeName))
	}
	return strings.Join(parts, " ")
}

// readSysctls reads the machine-wide (not per network namespace) sysctls
// kubelet's protectKernelDefaults covers, as one line.
func readSysctls(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	var names []string
	for name := range protectedSysctls {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s ", name, strings.TrimSpace(string(v)))
	}
	return b.String()
}
