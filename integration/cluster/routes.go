package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// routePodCIDRs adds, in the sandbox's own namespace (the control-plane host),
// a route to each node's podCIDRs (from its Node object) via the node's
// underlay address, as a router next to a cluster would hold. The API server
// connects to pod IPs itself for the pods/proxy and services/proxy
// subresources, and for webhooks and aggregated APIs with
// --enable-aggregator-routing; everything else it does on nodes goes through
// kubelets at their node addresses.
//
// The control plane is not a kubelet node here, so podnet does not run on it:
// a podnetd there would need a Node with a podCIDR for a host without a
// kubelet, which stays NotReady (the e2e framework refuses to start with
// NotReady nodes) and would get a DaemonSet pod that never runs. The nodes
// are fixed for the cluster's life, so the routes are added once, after every
// Node has its podCIDRs; they go with the underlay bridge at Down.
func (c *Cluster) routePodCIDRs(ctx context.Context) error {
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer conn.Close()
	for _, n := range c.Nodes {
		node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("routes: %w", err)
		}
		for _, s := range node.Spec.PodCIDRs {
			dst, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("routes: node %s: podCIDR %q: %w", n.Name, s, err)
			}
			if dst.Addr().Is4() != n.Addr.Is4() {
				continue // the underlay is IPv4 only
			}
			err = conn.Route.Replace(&rtnetlink.RouteMessage{
				Family:    unix.AF_INET,
				DstLength: uint8(dst.Bits()),
				Table:     unix.RT_TABLE_MAIN,
				Protocol:  unix.RTPROT_STATIC,
				Scope:     unix.RT_SCOPE_UNIVERSE,
				Type:      unix.RTN_UNICAST,
				Attributes: rtnetlink.RouteAttributes{
					Dst:     net.IP(dst.Addr().AsSlice()),
					Gateway: net.IP(n.Addr.AsSlice()),
				},
			})
			if err != nil {
				return fmt.Errorf("routes: %s via %s: %w", dst, n.Addr, err)
			}
		}
	}
	return nil
}
