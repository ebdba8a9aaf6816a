package kubesource

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/podnet/podnet/nft"
)

// Kubernetes names the translation reads.
const (
	// LabelServiceProxyName marks a Service that another proxy serves;
	// kube-proxy ignores such Services, and so does podnet (KEP-2447).
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// maxAffinitySeconds is Kubernetes' limit on
	// sessionAffinityConfig.clientIP.timeoutSeconds.
	maxAffinitySeconds = 86400
)

// serviceResult is what one Service and its EndpointSlices translate to:
// a service to program (svc), or a reason it is ignored, or the problem
// that rejects it; and the parts of it left out (skipped) either way.
type serviceResult struct {
	svc      *nft.Service
	ignored  string
	rejected *Problem
	skipped  []*Problem
}

// translateService turns a Service and its EndpointSlices (sorted by name)
// into the service podnet programs, by the rules of docs/kubernetes.md.
// The slices of other address types than IPv4 and IPv6 are not read. Revision
// is set from the resourceVersions of the Service and of its slices, or left
// empty when one of them has none.
func translateService(s *v1.Service, eps []*discoveryv1.EndpointSlice) serviceResult {
	if v, ok := s.Labels[LabelServiceProxyName]; ok {
		return serviceResult{ignored: fmt.Sprintf("labelled %s=%s: another proxy serves it", LabelServiceProxyName, v)}
	}
	if s.Spec.Type == v1.ServiceTypeExternalName {
		return serviceResult{ignored: "type ExternalName: a DNS name, nothing to proxy"}
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	if len(ips) == 0 || ips[0] == v1.ClusterIPNone {
		return serviceResult{ignored: "headless: no cluster IP"}
	}
	svc := &nft.Service{Namespace: s.Namespace, Name: s.Name}
	var res serviceResult
	reject := func(e *fieldError) serviceResult {
		return serviceResult{rejected: e.problem(KindService, s.Namespace, s.Name), skipped: res.skipped}
	}
	if e := serviceVIPs(svc, s, ips, &res.skipped); e != nil {
		return reject(e)
	}
	if e := servicePolicies(svc, s); e != nil {
		return reject(e)
	}
	if e := servicePorts(svc, s); e != nil {
		return reject(e)
	}
	svc.Endpoints = endpoints(svc.Ports, eps, &res.skipped)
	svc.Revision = revision(s, eps)
	res.svc = svc
	return res
}

// revision names the value of a Service and its slices: their
// resourceVersions, which the API server changes at every write. It is ""
// (the nft table then compares the fields) if one is missing.
func revision(s *v1.Service, eps []*discoveryv1.EndpointSlice) string {
	if s.ResourceVersion == "" {
		return ""
	}
	var b strings.Builder
	b.WriteString(s.ResourceVersion)
	for _, sl := range eps {
		if sl.ResourceVersion == "" {
			return ""
		}
		b.WriteString("," + sl.ResourceVersion)
	}
	return b.String()
}

// serviceVIPs fills the cluster, external and load balancer IPs and the
// source ranges. An address listed twice is used once. A load balancer
// ingress IP that is not usable is skipped, not the Service: its controller,
// not its owner, wrote it.
func serviceVIPs(svc *nft.Service, s *v1.Service, clusterIPs []string, skipped *[]*Problem) *fieldError {
	seen := map[netip.Addr]bool{}
	field := "spec.clusterIPs"
	if len(s.Spec.ClusterIPs) == 0 {
		field = "spec.clusterIP"
	}
	var err *fieldError
	if svc.ClusterIPs, err = addrs(field, clusterIPs, seen); err != nil {
		return err
	}
	if len(svc.ClusterIPs) > 2 || len(svc.ClusterIPs) == 2 && svc.ClusterIPs[0].Is4() == svc.ClusterIPs[1].Is4() {
		return bad(field+"[1]", clusterIPs[1], "a second cluster IP of its family (at most one IPv4 and one IPv6)")
	}
	if svc.ExternalIPs, err = addrs("spec.externalIPs", s.Spec.ExternalIPs, seen); err != nil {
		return err
	}
	if s.Spec.Type != v1.ServiceTypeLoadBalancer {
		return nil
	}
	for i, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP == "" || ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy {
			continue // a hostname, or a load balancer that proxies to the node ports itself (KEP-1860)
		}
		a, e := parseAddr(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP)
		if e != nil {
			*skipped = append(*skipped, e.problem(KindService, s.Namespace, s.Name))
			continue
		}
		if !seen[a] {
			seen[a] = true
			svc.LoadBalancerIPs = append(svc.LoadBalancerIPs, a)
		}
	}
	ranges, field := s.Spec.LoadBalancerSourceRanges, "spec.loadBalancerSourceRanges"
	if len(ranges) == 0 && s.Annotations[v1.AnnotationLoadBalancerSourceRangesKey] != "" {
		ranges = strings.Split(s.Annotations[v1.AnnotationLoadBalancerSourceRangesKey], ",")
		field = "metadata.annotations[" + v1.AnnotationLoadBalancerSourceRangesKey + "]"
	}
	for i, r := range ranges {
		// A range that cannot be read rejects the Service: serving it to
		// every client would open what its owner meant to restrict.
		p, perr := netip.ParsePrefix(strings.TrimSpace(r))
		if perr != nil || p.Addr().Zone() != "" {
			return bad(fmt.Sprintf("%s[%d]", field, i), r, "not a CIDR")
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if !slices.Contains(svc.LoadBalancerSourceRanges, p) {
			svc.LoadBalancerSourceRanges = append(svc.LoadBalancerSourceRanges, p)
		}
	}
	return nil
}

// addrs parses list as usable unicast addresses, leaving out those seen
// before (seen collects them).
func addrs(list string, ss []string, seen map[netip.Addr]bool) ([]netip.Addr, *fieldError) {
	var out []netip.Addr
	for i, s := range ss {
		a, err := parseAddr(fmt.Sprintf("%s[%d]", list, i), s)
		if err != nil {
			return nil, err
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// parseAddr parses s, the value of field, as a usable unicast address.
func parseAddr(field, s string) (netip.Addr, *fieldError) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, bad(field, s, "not an IP address")
	}
	a = a.Unmap()
	if why := unusable(a); why != "" {
		return a, bad(field, s, "%s", why)
	}
	return a, nil
}

// unusable says why a cannot be a service or endpoint address, or "" if it
// can.
func unusable(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return "has a zone"
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

// servicePolicies fills the traffic policies and ClientIP session affinity.
func servicePolicies(svc *nft.Service, s *v1.Service) *fieldError {
	itp := ""
	if s.Spec.InternalTrafficPolicy != nil {
		itp = string(*s.Spec.InternalTrafficPolicy)
	}
	for _, p := range []struct {
		field, value string
		dst          *nft.TrafficPolicy
	}{
		{"spec.internalTrafficPolicy", itp, &svc.InternalTrafficPolicy},
		{"spec.externalTrafficPolicy", string(s.Spec.ExternalTrafficPolicy), &svc.ExternalTrafficPolicy},
	} {
		switch nft.TrafficPolicy(p.value) {
		case "", nft.PolicyCluster:
			*p.dst = nft.PolicyCluster
		case nft.PolicyLocal:
			*p.dst = nft.PolicyLocal
		default:
			return bad(p.field, p.value, "want Cluster or Local")
		}
	}
	switch s.Spec.SessionAffinity {
	case "", v1.ServiceAffinityNone:
	case v1.ServiceAffinityClientIP:
		secs := int32(nft.DefaultAffinityTimeout / time.Second)
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			secs = *c.ClientIP.TimeoutSeconds
		}
		if secs < 1 || secs > maxAffinitySeconds {
			return bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds", secs, "want 1-%d", maxAffinitySeconds)
		}
		svc.AffinityTimeout = time.Duration(secs) * time.Second
	default:
		return bad("spec.sessionAffinity", string(s.Spec.SessionAffinity), "want None or ClientIP")
	}
	return nil
}

// servicePorts fills the ports. Node ports count only for the types that
// have them. The target ports are not read: the EndpointSlices carry each
// endpoint's port, with named target ports already resolved.
func servicePorts(svc *nft.Service, s *v1.Service) *fieldError {
	switch s.Spec.Type {
	case "", v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer:
	default:
		return bad("spec.type", string(s.Spec.Type), "want ClusterIP, NodePort, LoadBalancer or ExternalName")
	}
	if len(s.Spec.Ports) == 0 {
		return bad("spec.ports", nil, "at least one port is required")
	}
	nodePorts := s.Spec.Type == v1.ServiceTypeNodePort || s.Spec.Type == v1.ServiceTypeLoadBalancer
	for j, p := range s.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", j)
		proto, ok := protocol(p.Protocol)
		switch {
		case !ok:
			return bad(field+".protocol", string(p.Protocol), "want TCP, UDP or SCTP")
		case p.Port < 1 || p.Port > 65535:
			return bad(field+".port", p.Port, "want 1-65535")
		case p.NodePort < 0 || p.NodePort > 65535:
			return bad(field+".nodePort", p.NodePort, "want 1-65535")
		}
		sp := nft.ServicePort{Name: p.Name, Protocol: proto, Port: uint16(p.Port)}
		if nodePorts {
			sp.NodePort = uint16(p.NodePort)
		}
		svc.Ports = append(svc.Ports, sp)
	}
	return nil
}

// protocol maps a Kubernetes protocol ("" is TCP) to nft's.
func protocol(p v1.Protocol) (nft.Protocol, bool) {
	switch p {
	case "", v1.ProtocolTCP:
		return nft.TCP, true
	case v1.ProtocolUDP:
		return nft.UDP, true
	case v1.ProtocolSCTP:
		return nft.SCTP, true
	}
	return "", false
}

// endpoints joins the endpoints of a Service's slices, sorted by name, as
// kube-proxy does: only the first address of an endpoint counts (the API
// defines no meaning for the others); an address listed again, in the same
// or a later slice, is one endpoint, with the conditions and node of its
// first listing and the ports of every listing; a slice port counts for the
// service port of the same name and protocol. Endpoints that cannot be read
// are skipped and reported.
func endpoints(ports []nft.ServicePort, eps []*discoveryv1.EndpointSlice, skipped *[]*Problem) []nft.Endpoint {
	var out []nft.Endpoint
	index := map[netip.Addr]int{}
	for _, sl := range eps {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN: no address to proxy to
		}
		skip := func(e *fieldError) {
			*skipped = append(*skipped, e.problem(KindEndpointSlice, sl.Namespace, sl.Name))
		}
		pm := slicePorts(ports, sl, skip)
		if len(pm) == 0 {
			continue
		}
		for i, ep := range sl.Endpoints {
			field := fmt.Sprintf("endpoints[%d].addresses", i)
			if len(ep.Addresses) == 0 {
				skip(bad(field, nil, "no address"))
				continue
			}
			a, err := netip.ParseAddr(ep.Addresses[0])
			switch {
			case err != nil:
				skip(bad(field+"[0]", ep.Addresses[0], "not an IP address"))
				continue
			case a.Is4() != (sl.AddressType == discoveryv1.AddressTypeIPv4):
				skip(bad(field+"[0]", ep.Addresses[0], "not an %s address", sl.AddressType))
				continue
			case unusable(a) != "":
				skip(bad(field+"[0]", ep.Addresses[0], "%s", unusable(a)))
				continue
			}
			if j, dup := index[a]; dup {
				out[j].Ports = mergePorts(out[j].Ports, pm)
				continue
			}
			c := ep.Conditions
			ready := c.Ready == nil || *c.Ready // nil: unknown, taken as ready (API)
			e := nft.Endpoint{Address: a, Ports: pm, Ready: ready, Serving: ready,
				Terminating: c.Terminating != nil && *c.Terminating}
			if c.Serving != nil {
				e.Serving = *c.Serving
			}
			if ep.NodeName != nil {
				e.NodeName = *ep.NodeName
			}
			index[a] = len(out)
			out = append(out, e)
		}
	}
	return out
}

// slicePorts maps the name of each service port a slice serves to the
// slice's port for it; the slice's endpoints share the map.
func slicePorts(ports []nft.ServicePort, sl *discoveryv1.EndpointSlice, skip func(*fieldError)) map[string]uint16 {
	var out map[string]uint16
	for i, p := range sl.Ports {
		if p.Port == nil {
			continue // no port: "all ports", which a proxy cannot serve
		}
		name, proto := "", v1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if *p.Port < 1 || *p.Port > 65535 {
			skip(bad(fmt.Sprintf("ports[%d].port", i), *p.Port, "want 1-65535"))
			continue
		}
		np, _ := protocol(proto)
		if !slices.ContainsFunc(ports, func(sp nft.ServicePort) bool { return sp.Name == name && sp.Protocol == np }) {
			continue
		}
		if out == nil {
			out = map[string]uint16{}
		}
		if _, dup := out[name]; !dup {
			out[name] = uint16(*p.Port)
		}
	}
	return out
}

// mergePorts returns a with the names of b it lacks; a itself when b adds
// nothing (maps are shared, never changed).
func mergePorts(a, b map[string]uint16) map[string]uint16 {
	var out map[string]uint16
	for name, port := range b {
		if _, ok := a[name]; ok {
			continue
		}
		if out == nil {
			out = maps.Clone(a)
		}
		out[name] = port
	}
	if out == nil {
		return a
	}
	return out
}
