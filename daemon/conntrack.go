package daemon

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/nft"
)

// Stale conntrack entries (docs/services.md, "Stale UDP conntrack entries").
//
// A UDP flow keeps the DNAT its first packet got for as long as its client
// keeps sending, whatever the table says since. After every sync that
// programmed the nft table, the daemon compares the services programmed before
// and after, frontend by frontend (a VIP and port, or a NodePort), and deletes
// the entries that can only be stale:
//
//   - entries DNATed to an endpoint address that no longer serves the
//     frontend (endpoint removed, no longer ready nor serving-and-terminating,
//     its port changed, service or port or VIP removed);
//   - every entry of a frontend that had no serving endpoint, or did not
//     exist, and now has some. While a frontend has no endpoint the table
//     rejects its packets and no entry is confirmed; but before it existed, a
//     client's packets may have been routed elsewhere, or delivered to a node
//     address without a listener, and that un-NATed entry would keep them off
//     the new endpoints.
//
// The first sync that programs the table after podnetd starts has nothing to
// compare with: services and endpoints may have changed while podnetd was
// down (or before its restart), and their UDP flows would keep their stale
// DNAT forever. That sync reconciles the whole table instead (staleAtStart):
// it deletes every entry of a frontend that is DNATed to an address no longer
// serving it, and every un-NATed entry of a frontend that now has serving
// endpoints. A failed reconciliation is retried, whole, at the next sync.
//
// Like kube-proxy (kubernetes pkg/proxy/conntrack), the comparison ignores
// traffic policies and which endpoints the table prefers (ready ones over
// terminating ones): a flow keeps its endpoint for as long as that endpoint
// serves, as a TCP connection would.

// ctProtocols are the protocols whose stale entries are deleted. Only UDP, as
// in kube-proxy: a UDP flow has no end, so only a deleted entry moves it. TCP
// and SCTP are connection-oriented: a client whose endpoint vanished sees its
// connection fail and opens a new one, which takes the current rules.
var ctProtocols = map[nft.Protocol]uint8{nft.UDP: unix.IPPROTO_UDP}

// frontend is where clients send one service port's traffic.
type frontend struct {
	proto uint8
	vip   netip.Addr // a cluster, external or load balancer IP; invalid for a NodePort
	port  uint16     // the service port, or the NodePort
}

// endpointPort is one endpoint address with its port for one service port.
type endpointPort struct {
	addr netip.Addr
	port uint16
}

// frontends maps every frontend of ctProtocols to the endpoints serving it,
// possibly none.
type frontends map[frontend]map[endpointPort]bool

// frontendsOf lists the frontends of services, as programmed by the table. A
// VIP is served by the endpoints of its family, a NodePort by those of both.
func frontendsOf(services []*nft.Service) frontends {
	out := frontends{}
	for _, svc := range services {
		if !slices.ContainsFunc(svc.Ports, func(p nft.ServicePort) bool { _, ok := ctProtocols[p.Protocol]; return ok }) {
			continue // the common case at scale: a TCP service
		}
		vips := slices.Concat(svc.ClusterIPs, svc.ExternalIPs, svc.LoadBalancerIPs)
		for _, p := range svc.Ports {
			proto, ok := ctProtocols[p.Protocol]
			if !ok {
				continue
			}
			for _, vip := range vips {
				out[frontend{proto: proto, vip: vip, port: p.Port}] = servingEndpoints(svc, p, func(a netip.Addr) bool { return a.Is4() == vip.Is4() })
			}
			if p.NodePort != 0 {
				out[frontend{proto: proto, port: p.NodePort}] = servingEndpoints(svc, p, func(netip.Addr) bool { return true })
			}
		}
	}
	return out
}

// addHostPorts adds the UDP hostPorts to fs: a mapping on one address is the
// frontend of that address and port, one on any address that of the port
// alone (as a NodePort), served by the pod. A frontend a service also has
// (a NodePort and a hostPort of one number) is served by both's endpoints.
func (fs frontends) addHostPorts(hps []nft.HostPort) {
	for _, h := range hps {
		proto, ok := ctProtocols[h.Protocol]
		if !ok {
			continue
		}
		fe := frontend{proto: proto, port: h.Port}
		if !h.Any() {
			fe.vip = h.HostIP
		}
		if fs[fe] == nil {
			fs[fe] = map[endpointPort]bool{}
		}
		fs[fe][endpointPort{h.PodIP, h.PodPort}] = true
	}
}

// servingEndpoints are the endpoints of svc whose address keep passes that the
// table may send port's traffic to: those with the port that are ready, or
// serving and terminating (nft.Endpoint).
func servingEndpoints(svc *nft.Service, port nft.ServicePort, keep func(netip.Addr) bool) map[endpointPort]bool {
	out := map[endpointPort]bool{}
	for _, ep := range svc.Endpoints {
		target, ok := ep.Ports[port.Name]
		if ok && keep(ep.Address) && (ep.Ready || ep.Serving && ep.Terminating) {
			out[endpointPort{ep.Address, target}] = true
		}
	}
	return out
}

// filter selects the entries of fe DNATed to ep, or all of fe's entries if ep
// is invalid. A NodePort's filter has no address: it matches the port on every
// local address, and on any other address too, which the few entries that
// share the port and endpoint without going through the NodePort pay for.
func (fe frontend) filter(ep netip.Addr) conntrack.Filter {
	return conntrack.Filter{Proto: fe.proto, OrigDst: fe.vip, OrigPort: fe.port, ReplySrc: ep}
}

// staleFilters selects the entries that the change from prev to cur leaves
// stale: those DNATed to an endpoint address that no longer serves their
// frontend, and all those of a frontend that got its first serving endpoint.
// An endpoint whose port changed counts as gone. The filters are sorted.
func staleFilters(prev, cur frontends) []conntrack.Filter {
	var out []conntrack.Filter
	for fe, was := range prev {
		now := cur[fe]
		for ep := range was {
			if !now[ep] {
				out = append(out, fe.filter(ep.addr))
			}
		}
	}
	for fe, now := range cur {
		if len(now) > 0 && len(prev[fe]) == 0 {
			out = append(out, fe.filter(netip.Addr{}))
		}
	}
	return sortFilters(out)
}

// sortFilters sorts filters and drops duplicates.
func sortFilters(fs []conntrack.Filter) []conntrack.Filter {
	slices.SortFunc(fs, func(a, b conntrack.Filter) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), a.OrigDst.Compare(b.OrigDst),
			cmp.Compare(a.OrigPort, b.OrigPort), a.ReplySrc.Compare(b.ReplySrc))
	})
	return slices.Compact(fs)
}

// conntrackCleaner remembers the frontends of the last programmed sync and the
// filters of a failed delete. Only syncNode uses it.
type conntrackCleaner struct {
	ct      conntrack.Interface
	source  *Cluster  // the cluster whose services last came from
	hpGen   uint64    // the generation of the pod records' hostPorts last seen
	last    frontends // nil before the first sync that programmed the table
	pending []conntrack.Filter
	// reconcilePending: the last reconciliation of the whole table failed.
	reconcilePending bool
}

// next records the services and hostPorts the table now holds, the services
// programmed from c and the hostPorts of generation hpGen of the pod records,
// and returns the filters to delete with: those of the change since the last
// call, and those of a failed delete that still select stale entries. The
// first call, and every call while a reconciliation failed, returns no
// filters but reconcile, which selects the stale entries of the whole table
// (see staleAtStart; local are the node's own addresses, where NodePorts
// are) and, after a failed one, also those of the change since. A Cluster is
// never changed once stored, and the table programs the same services from
// the same cluster, so a resync of the same cluster and hostPorts only
// retries.
func (cl *conntrackCleaner) next(c *Cluster, programmed []*nft.Service, hostPorts []nft.HostPort, hpGen uint64, local []netip.Addr) (filters []conntrack.Filter, reconcile func(conntrack.Entry) bool) {
	if cl.last != nil && c == cl.source && hpGen == cl.hpGen {
		if cl.reconcilePending {
			return nil, cl.last.staleAtStart(local)
		}
		return cl.retries(cl.last), nil
	}
	prev, cur := cl.last, frontendsOf(programmed)
	cur.addHostPorts(hostPorts)
	cl.source, cl.hpGen, cl.last = c, hpGen, cur
	switch {
	case prev == nil:
		return nil, cur.staleAtStart(local)
	case cl.reconcilePending:
		stale, changed := cur.staleAtStart(local), staleFilters(prev, cur)
		return nil, func(e conntrack.Entry) bool {
			return stale(e) || slices.ContainsFunc(changed, func(f conntrack.Filter) bool { return f.Matches(e) })
		}
	}
	return sortFilters(append(cl.retries(cur), staleFilters(prev, cur)...)), nil
}

// staleAtStart returns a function that reports whether a conntrack entry found
// in the table, whatever made it, can only be stale now that fs are the
// frontends: one to a frontend (a VIP and port exactly, or a NodePort or
// any-address hostPort on one of the local addresses) that is DNATed to an
// endpoint address and port not serving it, or not DNATed although the
// frontend has serving endpoints. Entries of other protocols or destinations
// are never selected: entries of a frontend gone while podnetd was down are
// not found (they live until their clients pause for the UDP timeout).
func (fs frontends) staleAtStart(local []netip.Addr) func(conntrack.Entry) bool {
	return func(e conntrack.Entry) bool {
		dst, port := e.OrigDst.Addr(), e.OrigDst.Port()
		serving, ok := fs[frontend{proto: e.Proto, vip: dst, port: port}]
		if !ok && slices.Contains(local, dst) {
			serving, ok = fs[frontend{proto: e.Proto, port: port}]
		}
		if !ok {
			return false
		}
		if e.ReplySrc == e.OrigDst { // never DNATed
			return len(serving) > 0
		}
		// DNATed: to the node itself too (a host-network endpoint), so the
		// port tells, and a changed targetPort leaves the entry stale.
		return !serving[endpointPort{e.ReplySrc.Addr(), e.ReplySrc.Port()}]
	}
}

// retries are the filters of a failed delete that still select stale entries
// now that the frontends are cur.
func (cl *conntrackCleaner) retries(cur frontends) []conntrack.Filter {
	var out []conntrack.Filter
	for _, f := range cl.pending {
		fe := frontend{proto: f.Proto, vip: f.OrigDst, port: f.OrigPort}
		if stillStale(f, cur[fe]) {
			out = append(out, f)
		}
	}
	return out
}

// stillStale reports whether f, from a failed delete, still selects only stale
// entries of a frontend now served by serving: its endpoint does not serve it
// again, or (f without endpoint) the frontend still has endpoints to move to.
func stillStale(f conntrack.Filter, serving map[endpointPort]bool) bool {
	if !f.ReplySrc.IsValid() {
		return len(serving) > 0
	}
	for ep := range serving {
		if ep.addr == f.ReplySrc {
			return false
		}
	}
	return true
}

// cleanConntrack deletes the conntrack entries left stale by the change to the
// programmed services, after a sync that programmed the table from c. Failures are
// logged, counted in the status and returned for the metrics only: they do not
// fail the sync, and the filters are retried at the next one.
func (d *Daemon) cleanConntrack(c *Cluster, programmed []*nft.Service, hostPorts []nft.HostPort, hpGen uint64) error {
	cl := d.ctClean
	if cl == nil {
		return nil
	}
	var local []netip.Addr
	if n, ok := c.Node(d.cfg.NodeName); ok {
		local = n.Addresses
	}
	filters, reconcile := cl.next(c, programmed, hostPorts, hpGen, local)
	if len(filters) == 0 && reconcile == nil {
		return nil
	}
	start := time.Now()
	var n int
	var err error
	if reconcile != nil {
		n, err = cl.ct.DeleteFunc(reconcile)
		cl.reconcilePending = err != nil // then reconcile again at the next sync
	} else {
		n, err = cl.ct.Delete(filters)
	}
	cl.pending = nil
	d.metrics.ctDeleted.Add(float64(n))
	d.mu.Lock()
	d.status.ConntrackDeleted += uint64(n)
	d.status.ConntrackLastError = ""
	if err != nil {
		d.status.ConntrackFailures++
		d.status.ConntrackLastError = err.Error()
	}
	d.mu.Unlock()
	fields := []zap.Field{zap.Int("deleted", n), zap.Int("filters", len(filters)), zap.Duration("took", time.Since(start))}
	if reconcile != nil {
		fields[1] = zap.Bool("reconcile", true) // the first sync: the whole table
	}
	switch {
	case errors.Is(err, conntrack.ErrInvalidFilter): // a bug here: retrying cannot help
		d.log.Error("stale conntrack entries not deleted: invalid filter", append(fields, zap.Error(err))...)
	case err != nil:
		cl.pending = filters
		d.log.Warn("deleting stale conntrack entries failed; retrying at the next sync", append(fields, zap.Error(err))...)
	case n > 0:
		d.log.Info("stale conntrack entries deleted", fields...)
	}
	d.log.Debug("conntrack delete filters", zap.Stringers("filters", filters))
	return err
}
