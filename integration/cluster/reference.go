package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/integration/sandbox"
)

// The networks a cluster can have (Options.Network).
const (
	// NetworkPodnet: podnet's DaemonSet from deploy/kubernetes/ is the CNI
	// plugin and the service proxy; no kube-proxy.
	NetworkPodnet = "podnet"
	// NetworkReference: the stack podnet replaces, to measure podnet against
	// on the same machine (docs/conformance-reference.md). Per node, the
	// reference CNI plugins of containernetworking/plugins (bridge +
	// host-local + portmap, and loopback as in both modes) with a conflist
	// the harness writes once the node has its podCIDR, static routes to
	// the other nodes' podCIDRs (as kindnet keeps), and kube-proxy in
	// nftables mode as a child process in the node's namespaces. No podnet
	// object is created.
	NetworkReference = "reference"
)

// kubeProxyUser is kube-proxy's identity: the bootstrap ClusterRoleBinding
// system:node-proxier gives it the ClusterRole of that name (Services,
// EndpointSlices, Nodes, events), what kube-proxy needs and no more.
const kubeProxyUser = "system:kube-proxy"

// referencePlugins are the plugins NetworkReference installs besides loopback.
var referencePlugins = []string{"bridge", "host-local", "portmap"}

// ReferenceConflist is the name of the conflist NetworkReference writes into
// each node's CNIConfDir, and ReferenceBridge the bridge it names.
const (
	ReferenceConflist = "10-reference.conflist"
	ReferenceBridge   = "cni0"
)

// kubeProxyHealthzPort is kube-proxy's default --healthz-bind-address port
// (0.0.0.0:10256 in the node's namespace).
const kubeProxyHealthzPort = "10256"

// referenceConflist is the node's conflist for podCIDR, at PodnetCNIVersion
// (containerd 1.6 takes 1.0.0 at most):
//   - bridge cni0 with isGateway (the bridge holds the podCIDR's first
//     address, the pods' default route) and hairpinMode (a pod reaching
//     itself through a Service: kube-proxy DNATs the packet back out of the
//     port it came in by, and masquerades it);
//   - ipMasq false: the bridge plugin's ipMasq masquerades everything leaving
//     the node's /24, pod-to-pod traffic across nodes too, which breaks the
//     Kubernetes model (a pod sees its peer's own IP) and the smoke test's
//     checks; clusters that masquerade (kindnet, ip-masq-agent) do it only for
//     destinations outside the cluster CIDR, with ipMasq false on the
//     plugin. Here no such destination needs it: the underlay's hosts (the
//     control plane, the nodes) route every podCIDR back (routePodCIDRs,
//     the nodes' routes), and nothing beyond the underlay is reachable.
//     Leaving it out also keeps the bridge plugin away from iptables, which
//     this machine does not have;
//   - host-local IPAM with the podCIDR and a default route via the gateway;
//   - portmap with the portMappings capability (hostPort pods; a
//     conformance spec needs them), nftables backend (kube-proxy's, and no
//     iptables here; the plugin picks it when iptables is missing anyway).
func referenceConflist(podCIDR netip.Prefix) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": PodnetCNIVersion,
		"name":       "reference",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      ReferenceBridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": podCIDR.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				"backend":      "nftables",
			},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	return append(b, '\n'), err
}

// startReference sets up NetworkReference once every Node has its podCIDR:
// on each node the conflist (referenceConflist; the node turns Ready when
// containerd finds it), a route to every other node's podCIDR via that node's
// underlay address, and kube-proxy; then it waits until every kube-proxy
// answers its healthz (it has synced its rules).
func (c *Cluster) startReference(ctx context.Context) error {
	cidrs := map[string][]netip.Prefix{}
	for _, n := range c.Nodes {
		node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reference network: %w", err)
		}
		for _, s := range node.Spec.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("reference network: node %s: podCIDR %q: %w", n.Name, s, err)
			}
			if p.Addr().Is4() { // the underlay and the conflist are IPv4 only
				cidrs[n.Name] = append(cidrs[n.Name], p)
			}
		}
		if len(cidrs[n.Name]) == 0 {
			return fmt.Errorf("reference network: node %s has no IPv4 podCIDR: %v", n.Name, node.Spec.PodCIDRs)
		}
	}
	for _, n := range c.Nodes {
		conf, err := referenceConflist(cidrs[n.Name][0])
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.CNIConfDir(), ReferenceConflist), conf, 0o644); err != nil {
			return fmt.Errorf("reference network: node %s: %w", n.Name, err)
		}
		for _, other := range c.Nodes {
			if other == n {
				continue
			}
			for _, p := range cidrs[other.Name] {
				if _, err := n.Exec(ctx, "ip", "route", "replace", p.String(), "via", other.Addr.String(), "dev", "eth0"); err != nil {
					return fmt.Errorf("reference network: %w", err)
				}
			}
		}
		if err := n.startKubeProxy(c); err != nil {
			return err
		}
	}
	c.mark("reference network: conflists, routes, kube-proxy started")
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, n := range c.Nodes {
		url := "http://" + n.Addr.String() + ":" + kubeProxyHealthzPort + "/healthz"
		err := poll(ctx, "kube-proxy on "+n.Name+" healthy", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			resp, err := hc.Get(url)
			if err != nil {
				return false, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false, fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return true, nil
		}, c.procs()...)
		if err != nil {
			return fmt.Errorf("reference network: %w", err)
		}
	}
	c.mark("kube-proxy healthy on every node")
	return nil
}

// startKubeProxy starts kube-proxy in the node's network and mount namespaces,
// as kubelet runs:
//   - --proxy-mode=nftables (table ip kube-proxy through the nft command; no
//     iptables on this machine, and its best-effort cleanup of iptables and
//     IPVS leftovers finds neither iptables nor modprobe);
//   - --hostname-override: its Node (podCIDR, addresses; NodePorts on the
//     node's primary address, the nftables default);
//   - --cluster-cidr: traffic from outside it to a ClusterIP is masqueraded;
//   - --conntrack-max-per-core=0: nf_conntrack_max and the conntrack
//     hashsize are machine-wide (init namespace; the module parameter), and
//     with 0 kube-proxy leaves both alone. The conntrack timeouts it sets
//     (TCP established and close-wait) are per network namespace: the node's.
//
// It writes no other sysctl in nftables mode (route_localnet is iptables
// mode's, for localhost NodePorts). Its oom_score_adj of -999 fails without
// CAP_SYS_RESOURCE (logged at V(2)), which changes nothing.
func (n *Node) startKubeProxy(c *Cluster) error {
	kubeconfig := filepath.Join(n.Dir, "kube-proxy.kubeconfig")
	if err := c.cp.WriteKubeconfig(kubeconfig, c.apiServerURL(), c.proxyToken.Token); err != nil {
		return err
	}
	var err error
	n.kubeProxy, err = sandbox.StartProcess(n.Name+" kube-proxy", n.holder.PID(), c.bins.KubeProxy, []string{
		"--kubeconfig=" + kubeconfig,
		"--proxy-mode=nftables",
		"--hostname-override=" + n.Name,
		"--cluster-cidr=" + c.opts.ClusterCIDR.String(),
		"--conntrack-max-per-core=0",
		"--v=2",
	}, filepath.Join(n.Dir, "kube-proxy.log"))
	return err
}

// ServiceChainEndpoints returns the endpoints (IP:port) kube-proxy on node n
// sends one service port to (namespace/name/protocol/port name, as in
// kube-proxy's chain names: "default/web/tcp/http"), read from its service
// chain in `nft list table ip kube-proxy` in the node's namespace; an error
// when the chain is not there. kube-proxy v1.37 writes the chain one of three
// ways: "dnat to IP:PORT" (one endpoint), "dnat ip addr . port to numgen random
// mod N map { 0 : IP . PORT, ... }" (several), or, with ClientIP affinity,
// "goto endpoint-HASH-...__IP/PORT" jumps.
func (n *Node) ServiceChainEndpoints(ctx context.Context, servicePort string) ([]string, error) {
	out, err := n.Exec(ctx, "nft", "list", "table", "ip", "kube-proxy")
	if err != nil {
		return nil, err
	}
	var in, found bool
	var eps []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "chain" && f[2] == "{":
			// chain service-HASH8-default/web/tcp/http {
			name := strings.Trim(f[1], `"`)
			const prefix = "service-12345678-"
			in = strings.HasPrefix(name, "service-") && len(name) > len(prefix) && name[len(prefix):] == servicePort
			found = found || in
		case in && len(f) == 1 && f[0] == "}":
			in = false
		case in:
			for _, m := range chainEndpoint.FindAllStringSubmatch(line, -1) {
				ep := ""
				for i := 1; i+1 < len(m); i += 2 {
					if m[i] != "" {
						ep = m[i] + ":" + m[i+1]
					}
				}
				if ep != "" && !seen[ep] {
					seen[ep] = true
					eps = append(eps, ep)
				}
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("node %s: no kube-proxy chain for %s", n.Name, servicePort)
	}
	return eps, nil
}

// chainEndpoint matches an endpoint in a kube-proxy service chain's rule in
// each of its three forms (ServiceChainEndpoints), as pairs of IP and port.
var chainEndpoint = regexp.MustCompile(`dnat to (\d+\.\d+\.\d+\.\d+):(\d+)|(\d+\.\d+\.\d+\.\d+) \. (\d+)|__(\d+\.\d+\.\d+\.\d+)/(\d+)`)
