package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// family is one IP family of the service sets and chains.
type family struct {
	v4     bool
	suffix string // set and chain name suffix: "v4" or "v6"
}

var families = []family{{v4: true, suffix: "v4"}, {v4: false, suffix: "v6"}}

func (f family) has(a netip.Addr) bool { return a.Is4() == f.v4 }

func (f family) name(base string) string { return base + "-" + f.suffix }

// svcDesired is the service part of the table: the elements of every service
// set and map (by set name), and the endpoint-count chains they jump to.
type svcDesired struct {
	elems  map[string][]element
	chains map[string]countChain
}

// countChain is a chain that DNATs to one of n endpoints at random. With
// affinity (seconds), a client's new connection goes to the slot its last one
// picked, if the affinity set still has it. A cluster chain takes its
// endpoints from the -cluster backends maps: those of an externalTrafficPolicy
// Local VIP port or NodePort for clients inside the cluster, which that policy
// does not apply to.
type countChain struct {
	fam      family
	nodePort bool
	cluster  bool
	n        int
	affinity uint32
}

// name is the chain's name: lb-v4-3 picks one of 3 endpoints of a VIP port,
// np-v4-3 one of 3 endpoints of a NodePort; lbc-v4-3 and npc-v4-3 do the same
// from the cluster backends; lba-v4-3-10800, lbca-v4-3-10800, … do the same
// with 10800 s of ClientIP affinity.
func (c countChain) name() string {
	kind := "lb"
	if c.nodePort {
		kind = "np"
	}
	if c.cluster {
		kind += "c"
	}
	if c.affinity > 0 {
		return fmt.Sprintf("%sa-%s-%d-%d", kind, c.fam.suffix, c.n, c.affinity)
	}
	return fmt.Sprintf("%s-%s-%d", kind, c.fam.suffix, c.n)
}

// backendsSet is the name of the map the chain takes its endpoints from.
func (c countChain) backendsSet() string {
	set := setBackends
	if c.nodePort {
		set = setNPBackends
	}
	if c.cluster {
		set += "-cluster"
	}
	return c.fam.name(set)
}

// parseCountChain returns the countChain named name, and false if name is not
// the name of one.
func parseCountChain(name string) (countChain, bool) {
	parts := strings.Split(name, "-")
	if len(parts) < 3 || len(parts) > 4 {
		return countChain{}, false
	}
	var c countChain
	switch strings.TrimSuffix(parts[0], "a") {
	case "lb":
	case "lbc":
		c.cluster = true
	case "np":
		c.nodePort = true
	case "npc":
		c.nodePort, c.cluster = true, true
	default:
		return countChain{}, false
	}
	i := slices.IndexFunc(families, func(f family) bool { return f.suffix == parts[1] })
	if i < 0 {
		return countChain{}, false
	}
	c.fam = families[i]
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 {
		return countChain{}, false
	}
	c.n = n
	if len(parts) == 4 {
		a, err := strconv.ParseUint(parts[3], 10, 32)
		if err != nil || a < 1 || a > uint64(MaxAffinityTimeout/time.Second) {
			return countChain{}, false
		}
		c.affinity = uint32(a)
	}
	return c, c.name() == name
}

var protocols = map[Protocol]uint8{TCP: unix.IPPROTO_TCP, UDP: unix.IPPROTO_UDP, SCTP: unix.IPPROTO_SCTP}

// svcKey identifies what one service port claims: a VIP (or, for NodePorts, the
// invalid Addr) with protocol and port.
type svcKey struct {
	vip   netip.Addr
	proto uint8
	port  uint16
}

// normalizeServices validates the services of s and returns the elements and
// chains that program them; problems names each service left out (see
// svcIndex.update).
func normalizeServices(s State) (svcDesired, []string) {
	x := newSvcIndex()
	_, problems := x.update(s)
	return x.union(), problems
}

func vipOrNodePort(k svcKey) string {
	if k.vip.IsValid() {
		return "VIP " + k.vip.String()
	}
	return "NodePort"
}

// checkService validates svc and returns the VIP ports and NodePorts it claims.
func checkService(svc Service) ([]svcKey, error) {
	if svc.Name == "" {
		return nil, fmt.Errorf("no name")
	}
	if len(svc.Ports) == 0 {
		return nil, fmt.Errorf("no ports")
	}
	for _, p := range []TrafficPolicy{svc.InternalTrafficPolicy, svc.ExternalTrafficPolicy} {
		if p != "" && p != PolicyCluster && p != PolicyLocal {
			return nil, fmt.Errorf("traffic policy %q: want Cluster or Local", p)
		}
	}
	if t := svc.AffinityTimeout; t != 0 && (t < time.Second || t > MaxAffinityTimeout || t%time.Second != 0) {
		return nil, fmt.Errorf("affinity timeout %v: want whole seconds from 1s to %v", t, MaxAffinityTimeout)
	}
	vips := slices.Concat(svc.ClusterIPs, svc.ExternalIPs, svc.LoadBalancerIPs)
	for _, a := range vips {
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() {
			return nil, fmt.Errorf("VIP %s: not a usable address", a)
		}
	}
	if n4, n6 := countFamily(svc.ClusterIPs, true), countFamily(svc.ClusterIPs, false); n4 > 1 || n6 > 1 {
		return nil, fmt.Errorf("ClusterIPs %v: at most one per family", svc.ClusterIPs)
	}
	for _, p := range svc.LoadBalancerSourceRanges {
		if !p.IsValid() || p != p.Masked() {
			return nil, fmt.Errorf("LoadBalancerSourceRanges: %s is not a masked prefix", p)
		}
	}
	var keys []svcKey
	names := map[string]bool{}
	for i, p := range svc.Ports {
		proto, ok := protocols[p.Protocol]
		switch {
		case !ok:
			return nil, fmt.Errorf("Ports[%d] protocol %q: want TCP, UDP or SCTP", i, p.Protocol)
		case p.Port == 0:
			return nil, fmt.Errorf("Ports[%d]: port 0", i)
		case names[p.Name]:
			return nil, fmt.Errorf("Ports[%d]: name %q used twice", i, p.Name)
		case p.Name == "" && len(svc.Ports) > 1:
			return nil, fmt.Errorf("Ports[%d]: a service with several ports needs port names", i)
		}
		names[p.Name] = true
		for _, vip := range vips {
			k := svcKey{vip: vip, proto: proto, port: p.Port}
			if slices.Contains(keys, k) {
				return nil, fmt.Errorf("Ports[%d]: %s port %d/%s listed twice", i, vip, p.Port, p.Protocol)
			}
			keys = append(keys, k)
		}
		if p.NodePort != 0 {
			k := svcKey{proto: proto, port: p.NodePort}
			if slices.Contains(keys, k) {
				return nil, fmt.Errorf("Ports[%d]: NodePort %d/%s listed twice", i, p.NodePort, p.Protocol)
			}
			keys = append(keys, k)
		}
	}
	for i, ep := range svc.Endpoints {
		if !ep.Address.IsValid() || ep.Address.Zone() != "" || ep.Address.IsUnspecified() {
			return nil, fmt.Errorf("Endpoints[%d] address %s: not a usable address", i, ep.Address)
		}
		for name, port := range ep.Ports {
			if port == 0 {
				return nil, fmt.Errorf("Endpoints[%d] port %q: port 0", i, name)
			}
		}
	}
	return keys, nil
}

func countFamily(as []netip.Addr, v4 bool) int {
	n := 0
	for _, a := range as {
		if a.Is4() == v4 {
			n++
		}
	}
	return n
}

// backend is one endpoint address and port a service port DNATs to.
type backend struct {
	addr netip.Addr
	port uint16
}

// usableEndpoints returns the endpoints of family f serving port, sorted: the
// ready ones, or if there is none the serving and terminating ones.
func usableEndpoints(svc Service, port ServicePort, f family) []Endpoint {
	var ready, fallback []Endpoint
	for _, ep := range svc.Endpoints {
		if _, ok := ep.Ports[port.Name]; !ok || !f.has(ep.Address) {
			continue
		}
		switch {
		case ep.Ready:
			ready = append(ready, ep)
		case ep.Serving && ep.Terminating:
			fallback = append(fallback, ep)
		}
	}
	if len(ready) == 0 {
		ready = fallback
	}
	slices.SortFunc(ready, func(a, b Endpoint) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return int(a.Ports[port.Name]) - int(b.Ports[port.Name])
	})
	return ready
}

// pick applies a traffic policy: the verdict for the port and its backends.
func pick(eps []Endpoint, port ServicePort, policy TrafficPolicy, node string, chain func(int) countChain) (expr.Verdict, []backend) {
	if len(eps) == 0 {
		return expr.Verdict{Kind: expr.VerdictGoto, Chain: chainNoEndpoints}, nil
	}
	var bs []backend
	for _, ep := range eps {
		if policy == PolicyLocal && ep.NodeName != node {
			continue
		}
		bs = append(bs, backend{addr: ep.Address, port: ep.Ports[port.Name]})
	}
	bs = slices.Compact(bs)
	if len(bs) == 0 {
		return expr.Verdict{Kind: expr.VerdictDrop}, nil
	}
	return expr.Verdict{Kind: expr.VerdictGoto, Chain: chain(len(bs)).name()}, bs
}

// add queues the elements and chains of one valid service.
func (d *svcDesired) add(svc Service, node string, localIPs []netip.Addr) {
	restricted := len(svc.LoadBalancerSourceRanges) > 0
	affinity := uint32(svc.AffinityTimeout / time.Second)
	for _, f := range families {
		hasFamily := false
		for _, ip := range svc.ClusterIPs {
			if f.has(ip) {
				hasFamily = true
				d.put(f.name(setClusterIPs), setElem(newKey().addr(ip)))
			}
		}
		for _, port := range svc.Ports {
			proto := protocols[port.Protocol]
			eps := usableEndpoints(svc, port, f)
			for _, ep := range eps {
				d.put(f.name(setHairpin), setElem(newKey().addr(ep.Address).addr(ep.Address)))
			}
			vip := func(ip netip.Addr, policy TrafficPolicy, masq, lb bool) {
				if !f.has(ip) {
					return
				}
				key := func() *keyBuilder { return newKey().addr(ip).proto(proto).port(port.Port) }
				chain := func(n int) countChain { return countChain{fam: f, n: n, affinity: affinity} }
				v, bs := pick(eps, port, policy, node, chain)
				d.put(f.name(setServiceIPs), vmapElem(key(), v))
				d.backends(chain(len(bs)), key, bs)
				if policy == PolicyLocal && !svc.isClusterIP(ip) {
					// Clients inside the cluster reach an external VIP with
					// every endpoint, as kube-proxy does.
					cluster := func(n int) countChain { return countChain{fam: f, cluster: true, n: n, affinity: affinity} }
					v, bs := pick(eps, port, PolicyCluster, node, cluster)
					d.put(f.name(setServiceIPsCluster), vmapElem(key(), v))
					d.backends(cluster(len(bs)), key, bs)
				}
				if masq {
					d.put(f.name(setMasqVIPs), setElem(key()))
				}
				if lb && restricted {
					d.put(f.name(setLBRestricted), setElem(key()))
					// Overlapping ranges would be overlapping intervals,
					// which the kernel refuses: keep the outermost.
					for _, r := range outermost(svc.LoadBalancerSourceRanges) {
						if f.has(r.Addr()) {
							d.put(f.name(setLBSourceRanges), rangeElem(key(), r))
						}
					}
				}
			}
			for _, ip := range svc.ClusterIPs {
				vip(ip, svc.InternalTrafficPolicy, true, false)
			}
			extMasq := svc.ExternalTrafficPolicy != PolicyLocal
			for _, ip := range svc.ExternalIPs {
				vip(ip, svc.ExternalTrafficPolicy, extMasq, false)
			}
			for _, ip := range svc.LoadBalancerIPs {
				vip(ip, svc.ExternalTrafficPolicy, extMasq, true)
			}
			if port.NodePort != 0 && (hasFamily || countFamily(localIPs, f.v4) > 0 && len(svc.ClusterIPs) == 0) {
				key := func() *keyBuilder { return newKey().proto(proto).port(port.NodePort) }
				chain := func(n int) countChain { return countChain{fam: f, nodePort: true, n: n, affinity: affinity} }
				v, bs := pick(eps, port, svc.ExternalTrafficPolicy, node, chain)
				d.put(f.name(setServiceNodePorts), vmapElem(key(), v))
				d.backends(chain(len(bs)), key, bs)
				if extMasq {
					d.put(f.name(setMasqNodePorts), setElem(key()))
				} else {
					cluster := func(n int) countChain {
						return countChain{fam: f, nodePort: true, cluster: true, n: n, affinity: affinity}
					}
					v, bs := pick(eps, port, PolicyCluster, node, cluster)
					d.put(f.name(setNodePortsCluster), vmapElem(key(), v))
					d.backends(cluster(len(bs)), key, bs)
				}
			}
		}
	}
}

// backends queues the slot → endpoint elements of one VIP port or NodePort and
// the chain c that picks a slot.
func (d *svcDesired) backends(c countChain, key func() *keyBuilder, bs []backend) {
	if len(bs) == 0 {
		return
	}
	d.chains[c.name()] = c
	for i, b := range bs {
		d.put(c.backendsSet(), mapElem(key().slot(uint32(i)), newKey().addr(b.addr).port(b.port)))
	}
}

func (d *svcDesired) put(set string, e element) {
	d.elems[set] = append(d.elems[set], e)
}
