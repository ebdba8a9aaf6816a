package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
)

// errBadTrace marks trace requests that cannot be understood (HTTP 400).
var errBadTrace = errors.New("bad trace request")

func badTrace(format string, a ...any) error {
	for i, v := range a { // echo long inputs clipped
		if s, ok := v.(string); ok && len(s) > 80 {
			a[i] = s[:80] + "…"
		}
	}
	return fmt.Errorf("%w: %s", errBadTrace, fmt.Sprintf(format, a...))
}

// target is the parsed --to: a host (address or service name), an optional
// port (number or service port name) and protocol.
type target struct {
	host  string
	addr  netip.Addr // valid when host is an address
	port  string     // "" when not given
	proto string     // tcp, udp, sctp; "" when not given
}

// parseTarget reads "host[:port][/proto]"; an IPv6 address with a port is
// written in brackets.
func parseTarget(s string) (target, error) {
	var t target
	if s == "" {
		return t, badTrace("--to is required")
	}
	// A trailing /tcp, /udp or /sctp is the protocol; any other "/x" is
	// part of a service's namespace/name, unless a port came before it.
	if i := strings.LastIndexByte(s, '/'); i >= 0 && !strings.ContainsAny(s[i:], ":]") {
		proto := strings.ToLower(s[i+1:])
		switch {
		case proto == "tcp" || proto == "udp" || proto == "sctp":
			t.proto, s = proto, s[:i]
		case looksLikeAddrPort(s[:i]):
			return t, badTrace("protocol %q: want tcp, udp or sctp", proto)
		}
	}
	host := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return t, badTrace("%q: missing ]", s)
		}
		host, s = s[1:end], s[end+1:]
		if s != "" && !strings.HasPrefix(s, ":") {
			return t, badTrace("%q: want [address]:port", s)
		}
		t.port = strings.TrimPrefix(s, ":")
	} else if strings.Count(s, ":") == 1 {
		host, t.port, _ = strings.Cut(s, ":")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		t.addr = a.Unmap()
	} else if strings.Count(host, ":") > 1 {
		return t, badTrace("%q is not an address", host)
	}
	if host == "" {
		return t, badTrace("no destination host in %q", s)
	}
	if t.port != "" && t.addr.IsValid() {
		if _, err := portNumber(t.port); err != nil {
			return t, err
		}
	}
	t.host = host
	return t, nil
}

// looksLikeAddrPort: s is an address, or anything with a port.
func looksLikeAddrPort(s string) bool {
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return true
	}
	return strings.Count(s, ":") == 1 || strings.HasPrefix(s, "[")
}

func portNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, badTrace("port %q: want 1..65535", s)
	}
	return uint16(n), nil
}

// where is what an address is, as seen from this node.
type where struct {
	kind string // pod, remote-pod, node, external
	node string // the node it belongs to (pods, nodes)
	pod  *podRecord
	// alloc is the IPAM allocation of a local pod without a record.
	alloc *ipam.Allocation
}

// locate tells what an address is: a pod of this node (by IPAM), an address
// of a node (this one, or a peer), an address inside a peer's podCIDR, or
// something outside the cluster.
func (d *Daemon) locate(c *Cluster, a netip.Addr) where {
	if d.ipam != nil {
		for _, al := range d.ipam.List() {
			if al.Addr.Addr() == a {
				w := where{kind: "pod", node: d.cfg.NodeName, alloc: &al}
				for _, r := range d.pods.list() {
					if r.ContainerID == al.ContainerID && r.IfName == al.IfName {
						w.pod = &r
					}
				}
				return w
			}
		}
	}
	for _, n := range c.Nodes {
		for _, na := range n.Addresses {
			if na == a {
				return where{kind: "node", node: n.Name}
			}
		}
		for _, p := range n.PodCIDRs {
			if n.Name == d.cfg.NodeName && ipam.Gateway(p) == a {
				return where{kind: "node", node: n.Name} // the bridge's address
			}
		}
	}
	for _, n := range c.Nodes {
		for _, p := range n.PodCIDRs {
			if p.Contains(a) {
				kind := "remote-pod"
				if n.Name == d.cfg.NodeName {
					kind = "pod" // in this node's range, but no pod has it
				}
				return where{kind: kind, node: n.Name}
			}
		}
	}
	return where{kind: "external"}
}

// findPod finds a pod of this node by container ID (or a prefix of at least
// 6 characters), "namespace/name", or a name unique on the node.
func (d *Daemon) findPod(s string) (*podRecord, error) {
	var match []podRecord
	for _, r := range d.pods.list() {
		full := r.Namespace + "/" + r.Name
		if r.ContainerID == s || full == s || (r.Name != "" && r.Name == s) ||
			(len(s) >= 6 && strings.HasPrefix(r.ContainerID, s)) {
			match = append(match, r)
		}
	}
	switch len(match) {
	case 0:
		return nil, nil
	case 1:
		return &match[0], nil
	}
	var names []string
	for _, r := range match {
		names = append(names, r.Namespace+"/"+r.Name+" ("+short(r.ContainerID)+")")
	}
	return nil, badTrace("%q matches several pods: %s", s, strings.Join(names, ", "))
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// findService finds a programmed service by "namespace/name" or a name unique
// in the cluster.
func findService(v *serviceView, s string) (*nft.Service, error) {
	if v == nil {
		return nil, badTrace("no services programmed yet")
	}
	var match []*nft.Service
	for _, svc := range v.programmed {
		if svc.Namespace+"/"+svc.Name == s || (!strings.Contains(s, "/") && svc.Name == s) {
			match = append(match, svc)
		}
	}
	switch len(match) {
	case 0:
		for _, r := range append(v.rejected, v.refused...) {
			if r.Namespace+"/"+r.Name == s || r.Name == s {
				return nil, badTrace("service %s/%s is not programmed: %s", r.Namespace, r.Name, r.Reason)
			}
		}
		return nil, badTrace("no service %q is programmed (podnetctl services lists them)", s)
	case 1:
		return match[0], nil
	}
	var names []string
	for _, svc := range match {
		names = append(names, svc.Namespace+"/"+svc.Name)
	}
	return nil, badTrace("%q names several services: %s; give namespace/name", s, strings.Join(names, ", "))
}

// serviceByAddr finds the programmed service port that dst:port/proto
// reaches: a VIP of the service, or a NodePort on an address of this node.
func serviceByAddr(v *serviceView, dst netip.Addr, port uint16, proto string, selfAddr bool) (*nft.Service, *nft.ServicePort, string) {
	if v == nil {
		return nil, nil, ""
	}
	for _, svc := range v.programmed {
		kind := ""
		switch {
		case slices.Contains(svc.ClusterIPs, dst):
			kind = "clusterIP"
		case slices.Contains(svc.ExternalIPs, dst):
			kind = "externalIP"
		case slices.Contains(svc.LoadBalancerIPs, dst):
			kind = "loadBalancerIP"
		}
		for i, p := range svc.Ports {
			if !strings.EqualFold(string(p.Protocol), proto) {
				continue
			}
			if kind != "" && p.Port == port {
				return svc, &svc.Ports[i], kind
			}
			if kind == "" && selfAddr && p.NodePort != 0 && p.NodePort == port {
				return svc, &svc.Ports[i], "nodePort"
			}
		}
		if kind == "clusterIP" {
			return svc, nil, kind // a ClusterIP, but not this port: rejected
		}
	}
	return nil, nil, ""
}

// svcName is "namespace/name".
func svcName(s *nft.Service) string { return s.Namespace + "/" + s.Name }
