package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
)

// The debug API's views (GET /v1/...). Each reads the daemon's state and,
// where the issue is what the kernel holds, the kernel itself; none changes
// anything.

// ipamView lists the ranges with their occupancy and every allocation.
func (d *Daemon) ipamView() api.IPAM {
	out := api.IPAM{Ranges: []api.IPAMRange{}, Allocations: []api.Allocation{}}
	if d.ipam == nil {
		return out
	}
	for _, s := range d.ipam.Stats() {
		out.Ranges = append(out.Ranges, api.IPAMRange{Range: s.Range.String(), Gateway: ipam.Gateway(s.Range).String(),
			Size: s.Size, Used: s.Used, Free: s.Size - min(s.Size, uint64(s.Used))})
	}
	for _, a := range d.ipam.List() {
		out.Allocations = append(out.Allocations, api.Allocation{ContainerID: a.ContainerID, IfName: a.IfName,
			Address: a.Addr.String(), Range: a.Range.String(), Created: a.Created})
	}
	return out
}

// podsView joins the pod records, IPAM's allocations and the host veths in
// the kernel: an attachment any of them knows is listed, with what the others
// lack as its problems.
func (d *Daemon) podsView() ([]api.Pod, error) {
	type entry struct {
		pod          api.Pod
		record, addr bool
		link         string
	}
	byKey := map[podKey]*entry{}
	get := func(cid, ifName string) *entry {
		k := podKey{cid, ifName}
		if e, ok := byKey[k]; ok {
			return e
		}
		e := &entry{pod: api.Pod{ContainerID: cid, IfName: ifName, Addresses: []string{}}}
		byKey[k] = e
		return e
	}
	for _, r := range d.pods.list() {
		e := get(r.ContainerID, r.IfName)
		e.record = true
		e.pod.Namespace, e.pod.Name, e.pod.NetNS, e.pod.HostVeth, e.pod.Created = r.Namespace, r.Name, r.NetNS, r.HostVeth, r.Created
		for _, m := range r.PortMappings {
			e.pod.HostPorts = append(e.pod.HostPorts, fmt.Sprintf("%s → %d", m, m.ContainerPort))
		}
	}
	if d.ipam != nil {
		for _, a := range d.ipam.List() {
			e := get(a.ContainerID, a.IfName)
			e.addr = true
			e.pod.Addresses = append(e.pod.Addresses, a.Addr.Addr().String())
			if e.pod.Created.IsZero() || a.Created.Before(e.pod.Created) {
				e.pod.Created = a.Created
			}
		}
	}
	links, err := d.kernel.ListHostLinks()
	if err != nil {
		return nil, fmt.Errorf("list host veths: %w", err)
	}
	for _, l := range links {
		e := get(l.ContainerID, l.IfName)
		e.link = l.Name
	}
	out := make([]api.Pod, 0, len(byKey))
	for _, e := range byKey {
		p := e.pod
		if e.link == "" {
			p.Problems = append(p.Problems, "no host veth in the kernel")
		} else {
			p.HostVeth = e.link
		}
		if !e.addr {
			p.Problems = append(p.Problems, "no address allocated")
		}
		if !e.record {
			p.Problems = append(p.Problems, "no record of its CNI ADD (namespace and name unknown)")
		} else if _, err := os.Stat(p.NetNS); err != nil {
			p.Problems = append(p.Problems, "network namespace "+p.NetNS+" is gone")
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b api.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
	return out, nil
}

// routesView compares the routes the current cluster state wants with the
// podnet routes in the kernel.
func (d *Daemon) routesView() (api.Routes, error) {
	out := api.Routes{Routes: []api.Route{}}
	c := d.cluster.Load()
	if c == nil {
		return out, errors.New("no cluster state yet")
	}
	desired, skipped := desiredRoutes(c, d.cfg.NodeName)
	for _, e := range skipped {
		out.Skipped = append(out.Skipped, e.Error())
	}
	have, err := d.kernel.ListRoutes()
	if err != nil {
		return out, fmt.Errorf("list kernel routes: %w", err)
	}
	kernel := map[netip.Prefix]netip.Addr{}
	for _, r := range have {
		kernel[r.Dst] = r.Via
	}
	owner := podCIDROwners(c)
	for _, r := range desired {
		row := api.Route{Dst: r.Dst.String(), Node: owner[r.Dst], Via: r.Via.String()}
		via, ok := kernel[r.Dst]
		switch {
		case !ok:
			row.State = api.RouteMissing
		case via != r.Via:
			row.State, row.Kernel = api.RouteWrong, via.String()
		default:
			row.State, row.Kernel = api.RouteOK, via.String()
		}
		delete(kernel, r.Dst)
		out.Routes = append(out.Routes, row)
	}
	for dst, via := range kernel {
		out.Routes = append(out.Routes, api.Route{Dst: dst.String(), Node: owner[dst], Kernel: via.String(), State: api.RouteExtra})
	}
	for _, r := range out.Routes {
		if r.State != api.RouteOK {
			out.Drift++
		}
	}
	slices.SortFunc(out.Routes, func(a, b api.Route) int { return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Dst, b.Dst)) })
	return out, nil
}

// podCIDROwners maps every podCIDR of the cluster to its node.
func podCIDROwners(c *Cluster) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	for _, n := range c.Nodes {
		for _, p := range n.PodCIDRs {
			out[p] = n.Name
		}
	}
	return out
}

// serveTrace answers GET /v1/trace?from=…&to=…[&probe=false].
func (d *Daemon) serveTrace(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "from" && k != "to" && k != "probe" {
			writeJSON(w, http.StatusBadRequest, &api.Error{Msg: "malformed request", Details: "unknown parameter " + strconv.Quote(k) + " (want from, to, probe)"})
			return
		}
	}
	tq := api.TraceQuery{From: q.Get("from"), To: q.Get("to")}
	switch q.Get("probe") {
	case "", "true":
	case "false":
		tq.NoProbe = true
	default:
		writeJSON(w, http.StatusBadRequest, &api.Error{Msg: "malformed request", Details: "probe: want true or false"})
		return
	}
	p, ok := r.Context().Value(peerKey{}).(peer)
	tr, err := d.trace(r.Context(), tq, ok && accessOf(p, d.socketGID) == accessRoot)
	switch {
	case errors.Is(err, errBadTrace):
		writeJSON(w, http.StatusBadRequest, &api.Error{Msg: "bad trace request", Details: strings.TrimPrefix(err.Error(), errBadTrace.Error()+": ")})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, &api.Error{Msg: "trace failed", Details: err.Error()})
	default:
		writeJSON(w, http.StatusOK, tr)
	}
}

// nftView reads podnet's table from the kernel (nft.Table.List).
func (d *Daemon) nftView() (api.NFT, error) {
	l, ok := d.nft.(nft.Lister)
	if !ok {
		return api.NFT{}, errors.New("this nftables backend cannot list its table")
	}
	listing, err := l.List()
	if err != nil {
		return api.NFT{}, err
	}
	out := api.NFT{Table: "inet " + nft.TableName, Text: listing.Text, Sets: []api.NFTSet{}, Rules: []api.NFTRule{}}
	for _, s := range listing.Sets {
		out.Sets = append(out.Sets, api.NFTSet{Name: s.Name, Elements: s.Elements})
	}
	for _, r := range listing.Rules {
		out.Rules = append(out.Rules, api.NFTRule{Chain: r.Chain, Handle: r.Handle, Text: r.Text})
	}
	return out, nil
}
