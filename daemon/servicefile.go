package daemon

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/podnet/podnet/nft"
)

// serviceFile is one entry of the cluster file's services, as written: a
// Service and its EndpointSlices folded into one, with Kubernetes' field names.
// Pointers tell an absent field from a zero one. docs/services.md describes it.
type serviceFile struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Type      string            `json:"type"`

	ClusterIPs                    []string `json:"clusterIPs"`
	ExternalIPs                   []string `json:"externalIPs"`
	LoadBalancerIPs               []string `json:"loadBalancerIPs"` // status.loadBalancer.ingress[].ip
	LoadBalancerSourceRanges      []string `json:"loadBalancerSourceRanges"`
	AllocateLoadBalancerNodePorts *bool    `json:"allocateLoadBalancerNodePorts"`

	InternalTrafficPolicy         string `json:"internalTrafficPolicy"`
	ExternalTrafficPolicy         string `json:"externalTrafficPolicy"`
	SessionAffinity               string `json:"sessionAffinity"`
	SessionAffinityTimeoutSeconds *int   `json:"sessionAffinityTimeoutSeconds"`

	Ports     []portFile     `json:"ports"`
	Endpoints []endpointFile `json:"endpoints"`
}

type portFile struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	// TargetPort is a number; Kubernetes also allows a container port name,
	// which the file cannot resolve (it lists no pods), so a string is rejected.
	TargetPort json.RawMessage `json:"targetPort"`
	NodePort   int             `json:"nodePort"`
}

type endpointFile struct {
	Addresses   []string       `json:"addresses"`
	Node        string         `json:"node"`
	Ready       *bool          `json:"ready"`
	Serving     *bool          `json:"serving"`
	Terminating *bool          `json:"terminating"`
	Ports       map[string]int `json:"ports"` // service port name -> this endpoint's port
}

// parseService checks one entry of services and translates it. It returns the
// service; or, with ignored saying why, a valid entry no proxy programs; or the
// first problem found.
func parseService(raw json.RawMessage, nodes map[string]bool) (svc nft.Service, ignored string, err *fieldError) {
	var f serviceFile
	if err := decodeStrict(raw, &f); err != nil {
		return svc, "", err
	}
	svc.Namespace, svc.Name = cmp.Or(f.Namespace, "default"), f.Name
	switch {
	case f.Name == "":
		return svc, "", bad("name", nil, "required")
	case !isDNSLabel(f.Name, true):
		return svc, "", bad("name", f.Name, "want a DNS-1035 label (a-z, 0-9 and '-', starting with a letter, at most 63)")
	case !isDNSLabel(svc.Namespace, false):
		return svc, "", bad("namespace", f.Namespace, "want a DNS-1123 label (a-z, 0-9 and '-', at most 63)")
	}
	if v, ok := f.Labels[labelServiceProxyName]; ok {
		return svc, fmt.Sprintf("labelled %s=%s: another proxy serves it", labelServiceProxyName, v), nil
	}
	typ := cmp.Or(f.Type, typeClusterIP)
	if typ != typeClusterIP && typ != typeNodePort && typ != typeLoadBalancer {
		return svc, "", bad("type", f.Type, "want ClusterIP, NodePort or LoadBalancer")
	}
	if len(f.ClusterIPs) == 0 || len(f.ClusterIPs) == 1 && f.ClusterIPs[0] == "None" {
		if typ != typeClusterIP {
			return svc, "", bad("clusterIPs", nil, "required for type %s (only a ClusterIP service can be headless)", typ)
		}
		return svc, "headless: no cluster IP", nil
	}
	if err := parseVIPs(&svc, f, typ); err != nil {
		return svc, "", err
	}
	if err := parsePolicies(&svc, f, typ); err != nil {
		return svc, "", err
	}
	targets, err := parsePorts(&svc, f, typ)
	if err != nil {
		return svc, "", err
	}
	if svc.Endpoints, err = parseEndpoints(f.Endpoints, targets, nodes); err != nil {
		return svc, "", err
	}
	return svc, "", nil
}

// parseVIPs fills the service's addresses: at most one cluster IP per family,
// no address twice, load balancer fields only for type LoadBalancer.
func parseVIPs(svc *nft.Service, f serviceFile, typ string) *fieldError {
	if typ != typeLoadBalancer {
		switch {
		case len(f.LoadBalancerIPs) > 0:
			return bad("loadBalancerIPs", nil, "only for type LoadBalancer")
		case len(f.LoadBalancerSourceRanges) > 0:
			return bad("loadBalancerSourceRanges", nil, "only for type LoadBalancer")
		case f.AllocateLoadBalancerNodePorts != nil:
			return bad("allocateLoadBalancerNodePorts", nil, "only for type LoadBalancer")
		}
	}
	if i := slices.Index(f.ClusterIPs, "None"); i >= 0 {
		return bad(fmt.Sprintf("clusterIPs[%d]", i), "None", "None (headless) must be the only cluster IP")
	}
	seen := map[netip.Addr]string{}
	var err *fieldError
	if svc.ClusterIPs, err = parseAddrs("clusterIPs", f.ClusterIPs, seen); err != nil {
		return err
	}
	if len(svc.ClusterIPs) > 2 || len(svc.ClusterIPs) == 2 && svc.ClusterIPs[0].Is4() == svc.ClusterIPs[1].Is4() {
		return bad("clusterIPs[1]", f.ClusterIPs[1], "a second cluster IP of its family (at most one IPv4 and one IPv6)")
	}
	if svc.ExternalIPs, err = parseAddrs("externalIPs", f.ExternalIPs, seen); err != nil {
		return err
	}
	if svc.LoadBalancerIPs, err = parseAddrs("loadBalancerIPs", f.LoadBalancerIPs, seen); err != nil {
		return err
	}
	for i, s := range f.LoadBalancerSourceRanges {
		field := fmt.Sprintf("loadBalancerSourceRanges[%d]", i)
		p, perr := netip.ParsePrefix(s)
		switch {
		case perr != nil:
			return bad(field, s, "not a CIDR")
		case p.Addr().Is4In6():
			return bad(field, s, "IPv4-mapped; write it as IPv4")
		case p != p.Masked():
			return bad(field, s, "must be a network prefix (want %s)", p.Masked())
		}
		svc.LoadBalancerSourceRanges = append(svc.LoadBalancerSourceRanges, p)
	}
	return nil
}

// parseAddrs parses list[i] as usable unicast addresses; seen maps the
// addresses already used (by this or another list) to their field.
func parseAddrs(list string, ss []string, seen map[netip.Addr]string) ([]netip.Addr, *fieldError) {
	var out []netip.Addr
	for i, s := range ss {
		field := fmt.Sprintf("%s[%d]", list, i)
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, bad(field, s, "not an IP address")
		}
		if why := unusable(a); why != "" {
			return nil, bad(field, s, "%s", why)
		}
		if prev, ok := seen[a]; ok {
			return nil, bad(field, s, "already listed as %s", prev)
		}
		seen[a] = field
		out = append(out, a)
	}
	return out, nil
}

// unusable says why a cannot be a service or endpoint address, or "" if it can.
func unusable(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return "has a zone"
	case a.Is4In6():
		return "IPv4-mapped; write " + a.Unmap().String()
	case a.IsUnspecified():
		return "not usable: unspecified address"
	case a.IsLoopback():
		return "not usable: loopback address"
	case a.IsMulticast():
		return "not usable: multicast address"
	case a.IsLinkLocalUnicast():
		return "not usable: link-local address"
	}
	return ""
}

// parsePolicies fills the traffic policies and session affinity.
func parsePolicies(svc *nft.Service, f serviceFile, typ string) *fieldError {
	for _, p := range []struct {
		field, value string
		dst          *nft.TrafficPolicy
	}{
		{"internalTrafficPolicy", f.InternalTrafficPolicy, &svc.InternalTrafficPolicy},
		{"externalTrafficPolicy", f.ExternalTrafficPolicy, &svc.ExternalTrafficPolicy},
	} {
		v := nft.TrafficPolicy(cmp.Or(p.value, string(nft.PolicyCluster)))
		if v != nft.PolicyCluster && v != nft.PolicyLocal {
			return bad(p.field, p.value, "want Cluster or Local")
		}
		*p.dst = v
	}
	if svc.ExternalTrafficPolicy == nft.PolicyLocal && typ == typeClusterIP && len(svc.ExternalIPs) == 0 {
		return bad("externalTrafficPolicy", f.ExternalTrafficPolicy, "only for a service reachable from outside (type NodePort or LoadBalancer, or with externalIPs)")
	}
	switch cmp.Or(f.SessionAffinity, affinityNone) {
	case affinityNone:
		if t := f.SessionAffinityTimeoutSeconds; t != nil {
			return bad("sessionAffinityTimeoutSeconds", *t, "only with sessionAffinity ClientIP")
		}
	case affinityClientIP:
		secs := int(nft.DefaultAffinityTimeout / time.Second)
		if t := f.SessionAffinityTimeoutSeconds; t != nil {
			if *t < 1 || *t > maxAffinitySeconds {
				return bad("sessionAffinityTimeoutSeconds", *t, "want 1-%d", maxAffinitySeconds)
			}
			secs = *t
		}
		svc.AffinityTimeout = time.Duration(secs) * time.Second
	default:
		return bad("sessionAffinity", f.SessionAffinity, "want None or ClientIP")
	}
	return nil
}

// parsePorts fills the service's ports and returns each port's target port by
// port name, the endpoints' default.
func parsePorts(svc *nft.Service, f serviceFile, typ string) (map[string]uint16, *fieldError) {
	if len(f.Ports) == 0 {
		return nil, bad("ports", nil, "at least one port is required")
	}
	needNodePort := typ == typeNodePort || typ == typeLoadBalancer && (f.AllocateLoadBalancerNodePorts == nil || *f.AllocateLoadBalancerNodePorts)
	targets := map[string]uint16{}
	names, ports, nodePorts := map[string]int{}, map[string]int{}, map[string]int{}
	for j, p := range f.Ports {
		field := fmt.Sprintf("ports[%d]", j)
		proto := nft.Protocol(cmp.Or(p.Protocol, string(nft.TCP)))
		switch {
		case p.Name == "" && len(f.Ports) > 1:
			return nil, bad(field+".name", nil, "required when the service has more than one port")
		case p.Name != "" && !isDNSLabel(p.Name, false):
			return nil, bad(field+".name", p.Name, "want a DNS-1123 label (a-z, 0-9 and '-', at most 63)")
		case proto != nft.TCP && proto != nft.UDP && proto != nft.SCTP:
			return nil, bad(field+".protocol", p.Protocol, "want TCP, UDP or SCTP")
		case p.Port == 0:
			return nil, bad(field+".port", nil, "required")
		case p.Port < 0 || p.Port > 65535:
			return nil, bad(field+".port", p.Port, "want 1-65535")
		case p.NodePort < 0 || p.NodePort > 65535:
			return nil, bad(field+".nodePort", p.NodePort, "want 1-65535 (any port: podnet does not enforce Kubernetes' 30000-32767)")
		case p.NodePort != 0 && typ == typeClusterIP:
			return nil, bad(field+".nodePort", p.NodePort, "only for type NodePort or LoadBalancer")
		case p.NodePort == 0 && needNodePort && typ == typeLoadBalancer:
			return nil, bad(field+".nodePort", nil, "required for type LoadBalancer unless allocateLoadBalancerNodePorts is false")
		case p.NodePort == 0 && needNodePort:
			return nil, bad(field+".nodePort", nil, "required for type NodePort")
		}
		if prev, ok := names[p.Name]; ok {
			return nil, bad(field+".name", p.Name, "duplicate of ports[%d]", prev)
		}
		if prev, ok := ports[fmt.Sprint(proto, p.Port)]; ok {
			return nil, bad(field+".port", p.Port, "%s %d is already ports[%d]", proto, p.Port, prev)
		}
		if prev, ok := nodePorts[fmt.Sprint(proto, p.NodePort)]; ok && p.NodePort != 0 {
			return nil, bad(field+".nodePort", p.NodePort, "%s node port %d is already ports[%d]", proto, p.NodePort, prev)
		}
		target, err := parseTargetPort(field+".targetPort", p.TargetPort, p.Port)
		if err != nil {
			return nil, err
		}
		names[p.Name], ports[fmt.Sprint(proto, p.Port)], nodePorts[fmt.Sprint(proto, p.NodePort)] = j, j, j
		targets[p.Name] = target
		svc.Ports = append(svc.Ports, nft.ServicePort{Name: p.Name, Protocol: proto, Port: uint16(p.Port), NodePort: uint16(p.NodePort)})
	}
	return targets, nil
}

// parseTargetPort reads a port's targetPort: a number from 1 to 65535, or
// absent for the service port itself.
func parseTargetPort(field string, raw json.RawMessage, port int) (uint16, *fieldError) {
	if len(raw) == 0 || string(raw) == "null" {
		return uint16(port), nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, bad(field, nil, "want a port number, got %s", raw)
		}
		if _, err := strconv.Atoi(s); err == nil {
			return 0, bad(field, s, "a string; write the port number without quotes")
		}
		return 0, bad(field, s, "named target ports are not supported in the cluster file (it lists no pods to resolve them); give the port number")
	}
	if n < 1 || n > 65535 {
		return 0, bad(field, n, "want 1-65535")
	}
	return uint16(n), nil
}

// parseEndpoints turns each address of each endpoint into one nft.Endpoint whose
// ports are targets with the endpoint's overrides.
func parseEndpoints(eps []endpointFile, targets map[string]uint16, nodes map[string]bool) ([]nft.Endpoint, *fieldError) {
	var out []nft.Endpoint
	seen := map[netip.Addr]string{}
	for i, e := range eps {
		field := fmt.Sprintf("endpoints[%d]", i)
		if len(e.Addresses) == 0 {
			return nil, bad(field+".addresses", nil, "at least one address is required")
		}
		if e.Node != "" && !nodes[e.Node] {
			return nil, bad(field+".node", e.Node, "not a node of the cluster file")
		}
		ports := targets // shared, read-only: at 50k services × 4 endpoints a map each would cost 40 MB
		if len(e.Ports) > 0 {
			ports = maps.Clone(targets)
		}
		for _, name := range slices.Sorted(maps.Keys(e.Ports)) {
			n, pf := e.Ports[name], field+".ports."+name
			if _, ok := targets[name]; !ok {
				return nil, bad(pf, n, "the service has no port named %q", name)
			}
			if n < 1 || n > 65535 {
				return nil, bad(pf, n, "want 1-65535")
			}
			ports[name] = uint16(n)
		}
		addrs, err := parseAddrs(field+".addresses", e.Addresses, seen)
		if err != nil {
			return nil, err
		}
		ready := deref(e.Ready, true)
		for _, a := range addrs {
			out = append(out, nft.Endpoint{Address: a, Ports: ports, NodeName: e.Node,
				Ready: ready, Serving: deref(e.Serving, ready), Terminating: deref(e.Terminating, false)})
		}
	}
	return out, nil
}

func deref(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// isDNSLabel reports whether s is an RFC 1123 label (a-z, 0-9, '-', not at
// either end, at most 63 characters) and, with letterFirst, an RFC 1035 label
// (starting with a letter), as Kubernetes names require.
func isDNSLabel(s string, letterFirst bool) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	if letterFirst && (s[0] < 'a' || s[0] > 'z') {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
