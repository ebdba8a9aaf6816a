package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// Trace: the path of a new connection from a pod or address to an address or
// service, hop by hop, read from this node's live kernel state (the route in
// the pod's namespace, podnet's nftables table, the node's routing), then
// confirmed with a probe packet traced by nftables (traceprobe.go).

// tracePacket is the first packet of the traced connection.
type tracePacket struct {
	src, dst netip.Addr
	proto    uint8
	port     uint16
	local    bool // sent by this node itself: nftables output hook
}

// nftDecision is what podnet's table does with a packet (tracenft.go).
type nftDecision struct {
	verdict  string // dnat, reject, drop, none
	hops     []api.Hop
	chains   []string // podnet chains traversed, in order
	backends []netip.AddrPort
	masq     string // why postrouting masquerades it; "" when it does not
}

// maxTracedEndpoints bounds the endpoints whose routes a trace follows.
const maxTracedEndpoints = 8

// tracer holds one trace's state while it is built.
type tracer struct {
	d     *Daemon
	c     *Cluster
	view  *serviceView
	tr    *api.Trace
	pkt   tracePacket
	rec   *podRecord // the source pod's record, when it is a pod of this node
	nftOK bool       // the nftables hop was read
	pred  nftDecision
	// unroutable: the node has no route to the destination itself, so its
	// own packet fails before nftables sees it.
	unroutable bool
}

// trace builds the trace of q; root says whether the caller may send a probe.
// A request that cannot be understood returns an error matching errBadTrace.
func (d *Daemon) trace(ctx context.Context, q api.TraceQuery, root bool) (*api.Trace, error) {
	c := d.cluster.Load()
	if c == nil {
		return nil, errors.New("no cluster state yet")
	}
	t := &tracer{d: d, c: c, view: d.services.Load(), tr: &api.Trace{Hops: []api.Hop{}}}
	srcAddrs, err := t.resolveFrom(q.From)
	if err != nil {
		return nil, err
	}
	to, err := parseTarget(q.To)
	if err != nil {
		return nil, err
	}
	if err := t.resolveTo(to, srcAddrs); err != nil {
		return nil, err
	}
	t.sourceHops()
	if t.pkt.local && !t.routable() {
		t.tr.Outcome = api.TraceDropped
	} else {
		if err := t.nftHops(); err != nil {
			return nil, err
		}
		t.routeHops()
		if !t.nftOK { // the routing shown may be right, but not what nftables does first
			t.tr.Outcome = api.TraceUnknown
		}
	}
	if !q.NoProbe {
		t.tr.Probe = t.probe(ctx, root)
	}
	return t.tr, nil
}

// resolveFrom fills tr.From and returns the source's candidate addresses.
func (t *tracer) resolveFrom(from string) ([]netip.Addr, error) {
	if from == "" {
		return nil, badTrace("--from is required")
	}
	t.tr.From.Input = from
	if a, err := netip.ParseAddr(from); err == nil {
		a = a.Unmap()
		w := t.d.locate(t.c, a)
		t.tr.From.Kind, t.tr.From.Node = w.kind, w.node
		if w.pod != nil {
			t.rec = w.pod
			t.tr.From.Pod = podName(*w.pod)
		} else if w.alloc != nil {
			t.tr.From.Pod = short(w.alloc.ContainerID)
		}
		t.pkt.local = w.kind == "node" && w.node == t.d.cfg.NodeName
		return []netip.Addr{a}, nil
	}
	rec, err := t.d.findPod(from)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, badTrace("no pod %q on node %s (podnetctl pods lists them); a pod elsewhere is traced by its address, or on its node", from, t.d.cfg.NodeName)
	}
	t.rec = rec
	t.tr.From.Kind, t.tr.From.Node, t.tr.From.Pod = "pod", t.d.cfg.NodeName, podName(*rec)
	var out []netip.Addr
	for _, s := range rec.Addresses {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, badTrace("pod %s has no address", podName(*rec))
	}
	return out, nil
}

func podName(r podRecord) string {
	if r.Name == "" {
		return short(r.ContainerID)
	}
	return r.Namespace + "/" + r.Name
}

// resolveTo fills tr.To, the packet's destination, port and protocol, and
// picks the source address of the destination's family.
func (t *tracer) resolveTo(to target, srcAddrs []netip.Addr) error {
	tr := t.tr
	tr.To.Input = t.trInputTo(to)
	proto := to.proto
	var svc *nft.Service
	var sp *nft.ServicePort
	if !to.addr.IsValid() { // a service name
		var err error
		if svc, err = findService(t.view, to.host); err != nil {
			return err
		}
		if sp, err = pickPort(svc, to.port, proto); err != nil {
			return err
		}
		proto = strings.ToLower(string(sp.Protocol))
		for _, vip := range svc.ClusterIPs {
			if slices.ContainsFunc(srcAddrs, func(a netip.Addr) bool { return a.Is4() == vip.Is4() }) {
				t.pkt.dst = vip
				break
			}
		}
		if !t.pkt.dst.IsValid() {
			return badTrace("service %s has no cluster IP of the source's family", svcName(svc))
		}
		t.pkt.port = sp.Port
		tr.To.Kind, tr.To.Service, tr.To.Address = "service", svcName(svc), t.pkt.dst.String()
	} else {
		t.pkt.dst = to.addr
		proto = cmp.Or(proto, "tcp")
		w := t.d.locate(t.c, to.addr)
		self := w.kind == "node" && w.node == t.d.cfg.NodeName
		port := uint16(0)
		if to.port != "" {
			port, _ = portNumber(to.port) // checked by parseTarget
		}
		var kind string
		svc, sp, kind = serviceByAddr(t.view, to.addr, port, proto, self)
		if port == 0 && svc != nil && kind != "nodePort" {
			p, err := pickPort(svc, "", to.proto) // the only port: else say which
			if err != nil {
				return err
			}
			sp, port = p, p.Port
			proto = strings.ToLower(string(p.Protocol))
		}
		if port == 0 {
			port = 80
		}
		t.pkt.port = port
		tr.To.Address, tr.To.Kind, tr.To.Node = to.addr.String(), w.kind, w.node
		if svc != nil {
			tr.To.Kind, tr.To.Service = "service", svcName(svc)
		}
		if w.pod != nil {
			tr.To.Pod = podName(*w.pod)
		}
	}
	tr.Proto, tr.Port = proto, int(t.pkt.port)
	t.pkt.proto = protoNumber(proto)
	for _, a := range srcAddrs {
		if a.Is4() == t.pkt.dst.Is4() {
			t.pkt.src = a
			break
		}
	}
	if !t.pkt.src.IsValid() {
		return badTrace("the source has no address of the destination's family (%s)", t.pkt.dst)
	}
	tr.From.Address = t.pkt.src.String()
	return nil
}

func (t *tracer) trInputTo(to target) string {
	s := to.host
	if to.port != "" {
		if to.addr.Is6() {
			s = "[" + s + "]"
		}
		s += ":" + to.port
	}
	if to.proto != "" {
		s += "/" + to.proto
	}
	return s
}

// pickPort finds the service port a trace names: by number or name, or the
// only port (of proto, if given).
func pickPort(svc *nft.Service, port, proto string) (*nft.ServicePort, error) {
	var match []*nft.ServicePort
	for i, p := range svc.Ports {
		if proto != "" && !strings.EqualFold(string(p.Protocol), proto) {
			continue
		}
		if port == "" || port == p.Name || port == fmt.Sprint(p.Port) {
			match = append(match, &svc.Ports[i])
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	var have []string
	for _, p := range svc.Ports {
		s := fmt.Sprintf("%d/%s", p.Port, strings.ToLower(string(p.Protocol)))
		if p.Name != "" {
			s = p.Name + " " + s
		}
		have = append(have, s)
	}
	if len(match) == 0 {
		return nil, badTrace("service %s has no port %q%s; it has %s", svcName(svc), port, protoSuffix(proto), strings.Join(have, ", "))
	}
	return nil, badTrace("service %s has several ports (%s): give one, e.g. %s:%d", svcName(svc), strings.Join(have, ", "), svc.Name, svc.Ports[0].Port)
}

func protoSuffix(p string) string {
	if p == "" {
		return ""
	}
	return "/" + p
}

func protoNumber(p string) uint8 {
	switch p {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

func (t *tracer) hop(where, what, rule string) {
	t.tr.Hops = append(t.tr.Hops, api.Hop{Where: where, What: what, Rule: rule})
}

// sourceHops: from the pod's eth0 through its veth to the bridge, or the
// node's own stack, or a packet arriving from elsewhere.
func (t *tracer) sourceHops() {
	self, bridge := t.d.cfg.NodeName, t.d.cfg.Bridge
	switch {
	case t.rec != nil:
		r := t.rec
		where := "pod " + podName(*r) + " " + r.IfName
		dec, err := t.d.looker().RouteGet(routing.Query{NetNS: r.NetNS, Dst: t.pkt.dst})
		onLink := false
		switch {
		case err != nil:
			t.hop(where, "the pod's own routing cannot be read: "+err.Error(), "")
		case dec.Via.IsValid():
			t.hop(where, fmt.Sprintf("sends from %s; its routing table sends %s via %s (the bridge's address) over %s", t.pkt.src, t.pkt.dst, dec.Via, dec.Dev), "")
		default:
			onLink = true
			t.hop(where, fmt.Sprintf("sends from %s; %s is on-link over %s (same subnet): it asks ARP/ND for %s itself", t.pkt.src, t.pkt.dst, dec.Dev, t.pkt.dst), "")
		}
		t.hop("veth "+r.HostVeth, fmt.Sprintf("the pod's %s is one end of a veth pair; the node's end, %s, is a port of bridge %s", r.IfName, r.HostVeth, bridge), "")
		if onLink {
			t.hop("bridge "+bridge, "forwards the frame to the port that has the destination's MAC; with br_netfilter the packet still passes the node's netfilter hooks (prerouting, forward, postrouting)", "")
		} else {
			t.hop("bridge "+bridge, "the frame is for the bridge's own MAC: the node's IP stack takes the packet (prerouting, then routing)", "")
		}
	case t.tr.From.Kind == "pod":
		t.hop("pod "+t.pkt.src.String(), "an address of this node's pod range with no record of its CNI ADD: its namespace is unknown", "")
		t.hop("bridge "+bridge, "the packet enters the node's IP stack from the bridge", "")
	case t.pkt.local:
		t.hop("node "+self, fmt.Sprintf("sent by the node's own stack from %s: nftables output hook, then routing", t.pkt.src), "")
	default:
		t.hop("node "+self, fmt.Sprintf("%s is not on this node: this is what node %s does with such a packet when it arrives here", t.tr.From.String(), self), "")
	}
}

// routable checks, for a packet the node sends itself, that the node has a
// route to the destination as addressed: the kernel routes a local packet
// before the output hook's DNAT (and again after it), so a VIP needs a route
// too (a default route usually gives it one).
func (t *tracer) routable() bool {
	if _, err := t.d.looker().RouteGet(routing.Query{Dst: t.pkt.dst}); err != nil {
		t.unroutable = true
		t.hop("routing", fmt.Sprintf("no route to %s itself (%v): the node routes its own packet before nftables' output hook translates it, so the connection fails (network unreachable); a default route, or one covering the service range, fixes that", t.pkt.dst, err), "")
		return false
	}
	return true
}

// nftHops adds podnet's nftables decision.
func (t *tracer) nftHops() error {
	dec, err := t.d.explainNFT(t.pkt)
	if err != nil {
		t.hop("nftables", "podnet's table cannot be read: "+err.Error(), "")
		return nil
	}
	t.nftOK, t.pred = true, dec
	t.tr.Hops = append(t.tr.Hops, dec.hops...)
	for _, b := range dec.backends {
		t.tr.Endpoints = append(t.tr.Endpoints, b.String())
	}
	return nil
}

// routeHops follows the packet (or each endpoint the DNAT may choose) through
// the node's routing to its destination.
func (t *tracer) routeHops() {
	switch t.pred.verdict {
	case "reject":
		t.tr.Outcome = api.TraceRejected
		t.hop("client", "gets an ICMP port unreachable (TCP: connection refused) from the node: the service has no endpoint for this port", "")
		return
	case "drop":
		t.tr.Outcome = api.TraceDropped
		return
	}
	dsts := []netip.AddrPort{netip.AddrPortFrom(t.pkt.dst, t.pkt.port)}
	if t.pred.verdict == "dnat" {
		dsts = t.pred.backends
	}
	t.tr.Outcome = api.TraceDelivered
	if len(dsts) > maxTracedEndpoints {
		t.hop("routing", fmt.Sprintf("the routes of the first %d of %d endpoints follow", maxTracedEndpoints, len(dsts)), "")
		dsts = dsts[:maxTracedEndpoints]
	}
	reached := 0
	for _, dst := range dsts {
		if t.routeTo(dst, len(dsts) > 1) {
			reached++
		}
	}
	if reached == 0 {
		t.tr.Outcome = api.TraceDropped
	}
}

// routeTo adds the routing decision for dst and where it ends; it reports
// whether dst is reachable.
func (t *tracer) routeTo(dst netip.AddrPort, several bool) bool {
	q := routing.Query{Dst: dst.Addr()}
	if !t.pkt.local {
		q.Src = t.pkt.src
		q.Iif = t.arrivesOn()
	}
	where := "routing"
	if several {
		where = "routing → " + dst.String()
	}
	dec, err := t.d.looker().RouteGet(q)
	if err != nil {
		t.hop(where, fmt.Sprintf("no route to %s: %v", dst.Addr(), err), "")
		return false
	}
	w := t.d.locate(t.c, dst.Addr())
	name := api.TraceEnd{Kind: w.kind, Node: w.node, Address: dst.Addr().String(), Pod: podOf(w)}.String()
	switch {
	case dec.Type == "local":
		t.hop(where, fmt.Sprintf("%s is an address of this node: delivered locally (input hook), port %d", dst.Addr(), dst.Port()), "")
	case dec.Type != "unicast":
		t.hop(where, fmt.Sprintf("route type %s: the kernel does not forward it", dec.Type), "")
		return false
	case dec.Dev == t.d.cfg.Bridge:
		t.hop(where, fmt.Sprintf("%s is in this node's pod range: out of bridge %s", dst.Addr(), dec.Dev), "")
		if veth, pod, ok := t.localPod(w); ok {
			t.hop("veth "+veth, fmt.Sprintf("the bridge sends the frame out of the port of %s, across the veth pair", name), "")
			t.hop("pod "+pod, fmt.Sprintf("receives it on port %d: %s", dst.Port(), name), "")
		} else {
			t.hop("bridge "+t.d.cfg.Bridge, fmt.Sprintf("no pod of this node has %s: ARP/ND will go unanswered", dst.Addr()), "")
			return false
		}
	case dec.Via.IsValid():
		peer := t.d.locate(t.c, dec.Via)
		how := fmt.Sprintf("via %s dev %s", dec.Via, dec.Dev)
		if peer.kind == "node" && peer.node != t.d.cfg.NodeName {
			owner := ""
			for p, n := range podCIDROwners(t.c) {
				if n == peer.node && p.Contains(dst.Addr()) {
					owner = fmt.Sprintf("; node %s owns podCIDR %s (podnet's host route)", n, p)
				}
			}
			t.hop(where, fmt.Sprintf("to node %s %s%s", peer.node, how, owner), "")
			t.hop("node "+peer.node, fmt.Sprintf("routes it to its bridge, which delivers it to %s on port %d", name, dst.Port()), "")
		} else {
			t.hop(where, fmt.Sprintf("%s: %s", how, name), "")
		}
	default:
		t.hop(where, fmt.Sprintf("on-link out of %s: %s, port %d", dec.Dev, name, dst.Port()), "")
	}
	return true
}

// arrivesOn is the interface a packet from the source arrives on at this
// node: the bridge for its pods; for other sources, the interface the node
// would send back to them through (the kernel refuses a forwarding decision
// for a foreign source without one).
func (t *tracer) arrivesOn() string {
	if t.tr.From.Kind == "pod" {
		return t.d.cfg.Bridge
	}
	back, err := t.d.looker().RouteGet(routing.Query{Dst: t.pkt.src})
	if err != nil || back.Type != "unicast" {
		return ""
	}
	return back.Dev
}

// localPod finds the host veth and name of a pod of this node: from its
// record, or, for a pod without one (attached before records were kept, or
// whose record was lost), from the kernel's host links.
func (t *tracer) localPod(w where) (veth, name string, ok bool) {
	if w.pod != nil {
		return w.pod.HostVeth, podName(*w.pod) + " " + w.pod.IfName, true
	}
	if w.alloc == nil {
		return "", "", false
	}
	links, err := t.d.kernel.ListHostLinks()
	if err != nil {
		return "", "", false
	}
	for _, l := range links {
		if l.ContainerID == w.alloc.ContainerID && l.IfName == w.alloc.IfName {
			return l.Name, short(l.ContainerID) + " " + l.IfName, true
		}
	}
	return "", "", false
}

func podOf(w where) string {
	if w.pod != nil {
		return podName(*w.pod)
	}
	return ""
}

// looker answers routing questions: the kernel part, when it can.
func (d *Daemon) looker() routing.Looker {
	if l, ok := d.kernel.(routing.Looker); ok {
		return l
	}
	return noLooker{}
}

type noLooker struct{}

func (noLooker) RouteGet(routing.Query) (routing.Decision, error) {
	return routing.Decision{}, errors.New("this kernel backend cannot answer routing queries")
}
