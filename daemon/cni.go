package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/routing"
)

// podNet is the part of the node state the CNI handler needs, swapped whole by
// the node controller.
type podNet struct {
	Ready  bool
	Bridge string
	MTU    int
	Reason string // why not ready
}

// cniHandler serves CNI calls: IPAM plus veth wiring, with rollback.
type cniHandler struct {
	ipam    *ipam.Allocator
	kernel  routing.Interface
	state   func() podNet
	stripes [64]sync.Mutex // serialises calls for one attachment
	// pods records each attachment's namespace and pod name for the debug
	// API; nil keeps no records. warn reports a record that could not be
	// written or removed (the CNI call still succeeds).
	pods *podStore
	warn func(msg string, err error)
	// hostPorts and trigger let a call wait until the sync loop programmed
	// the records' hostPorts (hostports.go); nil hostPorts: no wait.
	hostPorts    *hostPortSync
	trigger      func()
	hostPortWait time.Duration // 0: hostPortWait
}

func (h *cniHandler) warnf(msg string, err error) {
	if err != nil && h.warn != nil {
		h.warn(msg, err)
	}
}

func (h *cniHandler) lock(containerID, ifName string) func() {
	f := fnv.New32a()
	f.Write([]byte(containerID + "/" + ifName))
	m := &h.stripes[f.Sum32()%uint32(len(h.stripes))]
	m.Lock()
	return m.Unlock
}

func cniErr(code uint, msg string, err error) *api.Error {
	e := &api.Error{Code: code, Msg: msg}
	if err != nil {
		e.Details = err.Error()
	}
	return e
}

// gcConf is the part of the network configuration GC reads; the spec's key and
// the older one libcni also sends (cni#1101).
type gcConf struct {
	types.PluginConf
	Attachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// Serve runs one CNI call. Bad requests fail alone with the spec's error codes.
func (h *cniHandler) Serve(req api.CNIRequest) (*api.CNIResponse, *api.Error) {
	var conf gcConf
	if err := json.Unmarshal(req.Config, &conf); err != nil {
		return nil, cniErr(types.ErrDecodingFailure, "decode network configuration", err)
	}
	switch req.Command {
	case "ADD", "DEL", "CHECK":
		if req.ContainerID == "" {
			return nil, cniErr(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is required", nil)
		}
		if !ifNameRE.MatchString(req.IfName) || req.IfName == "." || req.IfName == ".." {
			return nil, cniErr(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME %q is not a valid interface name", req.IfName), nil)
		}
		if req.Command != "DEL" && req.NetNS == "" {
			return nil, cniErr(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required for "+req.Command, nil)
		}
	}
	switch req.Command {
	case "ADD":
		return h.add(req)
	case "DEL":
		return nil, h.del(req)
	case "CHECK":
		return nil, h.check(req)
	case "STATUS":
		return nil, h.status()
	case "GC":
		return nil, h.gc(append(conf.ValidAttachments, conf.Attachments...))
	default:
		return nil, cniErr(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI command %q", req.Command), nil)
	}
}

func (h *cniHandler) pod(req api.CNIRequest, allocs []ipam.Allocation, st podNet) routing.Pod {
	p := routing.Pod{
		ContainerID: req.ContainerID, NetNS: req.NetNS, IfName: req.IfName,
		HostVeth: routing.HostVethName(req.ContainerID, req.IfName), Bridge: st.Bridge, MTU: st.MTU,
	}
	for _, a := range allocs {
		p.Addrs = append(p.Addrs, a.Addr)
		p.Gateways = append(p.Gateways, ipam.Gateway(a.Range))
	}
	return p
}

func (h *cniHandler) add(req api.CNIRequest) (resp *api.CNIResponse, cerr *api.Error) {
	st := h.state()
	if !st.Ready {
		return nil, cniErr(types.ErrTryAgainLater, "podnetd is not ready: "+st.Reason, nil)
	}
	mappings, err := parsePortMappings(req.Config)
	if err != nil {
		return nil, cniErr(types.ErrInvalidNetworkConfig, "invalid port mappings", err)
	}
	if len(mappings) > 0 && h.pods == nil {
		return nil, cniErr(types.ErrInternal, "port mappings need pod records, which this podnetd does not keep", nil)
	}
	defer h.lock(req.ContainerID, req.IfName)()
	fresh := h.ipam.Get(req.ContainerID, req.IfName) == nil
	allocs, err := h.ipam.Allocate(req.ContainerID, req.IfName)
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return nil, cniErr(types.ErrTryAgainLater, "no pod addresses left on this node", err)
		}
		return nil, cniErr(types.ErrIOFailure, "allocate pod address", err)
	}
	p := h.pod(req, allocs, st)
	links, err := h.kernel.AddPod(p)
	if err != nil {
		if fresh { // roll back: never leak the address of a failed ADD
			h.ipam.Release(req.ContainerID, req.IfName)
		}
		if errors.Is(err, routing.ErrLinkExists) {
			return nil, cniErr(types.ErrInternal, "interface already exists", err)
		}
		if errors.Is(err, routing.ErrNetNSGone) {
			return nil, cniErr(types.ErrInvalidNetNS, "pod network namespace not found", err)
		}
		return nil, cniErr(types.ErrInternal, "wire pod interface", err)
	}
	b, err := json.Marshal(buildResult(p, links))
	if err != nil {
		return nil, cniErr(types.ErrInternal, "encode result", err)
	}
	ns, name := cniArgs(req.Args)
	rec := podRecord{ContainerID: req.ContainerID, IfName: req.IfName, NetNS: req.NetNS, Namespace: ns, Name: name,
		HostVeth: links.HostVeth, Created: time.Now().UTC(), PortMappings: mappings}
	for _, a := range allocs {
		rec.Addresses = append(rec.Addresses, a.Addr.Addr().String())
		rec.Created = a.Created
	}
	if len(mappings) == 0 {
		h.warnf("recording the pod for the debug API failed", h.pods.put(rec))
		return &api.CNIResponse{Result: b}, nil
	}
	// The hostPorts: recorded (the table is programmed from the records),
	// then programmed, or the ADD is undone.
	rollback := func(release bool) {
		if !fresh {
			return
		}
		if err := h.kernel.DelPod(p); err != nil {
			h.warnf("rolling back a failed ADD: removing the pod interface failed", err)
		}
		if release {
			h.ipam.Release(req.ContainerID, req.IfName)
		}
	}
	if err := h.pods.put(rec); err != nil {
		rollback(true)
		if errors.Is(err, ErrHostPortConflict) {
			return nil, cniErr(types.ErrInternal, "hostPort conflict", err)
		}
		return nil, cniErr(types.ErrIOFailure, "record the pod's port mappings", err)
	}
	if err := h.awaitHostPorts(); err != nil {
		h.warnf("removing the record of a failed ADD failed", h.pods.remove(req.ContainerID, req.IfName))
		// The address goes back only once no mapping points at it; if that
		// is not known, the runtime's DEL frees it.
		werr := h.awaitHostPorts()
		h.warnf("the hostPorts of a failed ADD may still be programmed; its address stays allocated until DEL", werr)
		rollback(werr == nil)
		return nil, cniErr(types.ErrTryAgainLater, "program the pod's hostPorts", err)
	}
	return &api.CNIResponse{Result: b}, nil
}

// buildResult lists the host veth and the pod's interface (with its sandbox);
// each IP names the pod interface by its index, as runtimes expect.
func buildResult(p routing.Pod, links routing.PodLinks) *current.Result {
	podIdx := 1
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: links.HostVeth, Mac: links.HostMAC},
			{Name: links.PodIfName, Mac: links.PodMAC, Sandbox: p.NetNS, Mtu: p.MTU},
		},
	}
	for i, a := range p.Addrs {
		gw := p.Gateways[i]
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: &podIdx,
			Address:   net.IPNet{IP: net.IP(a.Addr().AsSlice()), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())},
			Gateway:   net.IP(gw.AsSlice()),
		})
		r.Routes = append(r.Routes, &types.Route{Dst: defaultDst(gw), GW: net.IP(gw.AsSlice())})
	}
	return r
}

func defaultDst(gw netip.Addr) net.IPNet {
	if gw.Is4() {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// del removes the pod's hostPorts from the table (if any), the veth pair (if
// any), and then releases the addresses, so an address is never handed out
// while its old interface or a mapping to it still exists. It succeeds when
// everything is already gone or CNI_NETNS is empty.
func (h *cniHandler) del(req api.CNIRequest) *api.Error {
	defer h.lock(req.ContainerID, req.IfName)()
	if rec, ok := h.pods.get(req.ContainerID, req.IfName); ok && len(rec.PortMappings) > 0 {
		if err := h.pods.remove(req.ContainerID, req.IfName); err != nil {
			return cniErr(types.ErrIOFailure, "remove the pod's port mappings", err)
		}
	}
	// Also after a DEL that failed here: its record is gone, its mapping
	// maybe not.
	if err := h.awaitHostPorts(); err != nil {
		return cniErr(types.ErrTryAgainLater, "remove the pod's hostPorts", err)
	}
	p := h.pod(req, nil, h.state())
	if err := h.kernel.DelPod(p); err != nil {
		return cniErr(types.ErrInternal, "remove pod interface", err)
	}
	if _, err := h.ipam.Release(req.ContainerID, req.IfName); err != nil {
		return cniErr(types.ErrIOFailure, "release pod address", err)
	}
	h.warnf("removing the pod's debug record failed", h.pods.remove(req.ContainerID, req.IfName))
	return nil
}

func (h *cniHandler) check(req api.CNIRequest) *api.Error {
	defer h.lock(req.ContainerID, req.IfName)()
	allocs := h.ipam.Get(req.ContainerID, req.IfName)
	if allocs == nil {
		return cniErr(types.ErrUnknownContainer, "no addresses allocated for this attachment", nil)
	}
	if err := h.kernel.CheckPod(h.pod(req, allocs, h.state())); err != nil {
		return cniErr(types.ErrInternal, "check failed", err)
	}
	return nil
}

// status answers whether ADD can succeed now.
func (h *cniHandler) status() *api.Error {
	st := h.state()
	if !st.Ready {
		return cniErr(types.ErrPluginNotAvailable, "podnetd is not ready: "+st.Reason, nil)
	}
	for _, s := range h.ipam.Stats() {
		if uint64(s.Used) < s.Size {
			return nil
		}
	}
	return cniErr(types.ErrPluginNotAvailable, "no pod addresses left on this node", nil)
}

// gc frees the addresses and host veths of every attachment not in valid.
func (h *cniHandler) gc(valid []types.GCAttachment) *api.Error {
	keep := map[types.GCAttachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	links, err := h.kernel.ListHostLinks()
	if err != nil {
		return cniErr(types.ErrInternal, "list pod links", err)
	}
	var errs []error
	for _, l := range links {
		if keep[types.GCAttachment{ContainerID: l.ContainerID, IfName: l.IfName}] {
			continue
		}
		unlock := h.lock(l.ContainerID, l.IfName)
		err := h.kernel.DelPod(routing.Pod{ContainerID: l.ContainerID, IfName: l.IfName, HostVeth: l.Name})
		unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range h.pods.list() {
		if !keep[types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName}] {
			unlock := h.lock(r.ContainerID, r.IfName)
			err := h.pods.remove(r.ContainerID, r.IfName)
			unlock()
			if err != nil && len(r.PortMappings) > 0 {
				errs = append(errs, err) // its address must stay: the mapping stays
				keep[types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName}] = true
			} else {
				h.warnf("removing a pod's debug record failed", err)
			}
		}
	}
	// Addresses are freed only once no hostPort points at them.
	if err := h.awaitHostPorts(); err != nil {
		return cniErr(types.ErrInternal, "garbage collection incomplete", errors.Join(append(errs, err)...))
	}
	_, err = h.ipam.GC(func(cid, ifName string) bool {
		return keep[types.GCAttachment{ContainerID: cid, IfName: ifName}]
	})
	if err = errors.Join(append(errs, err)...); err != nil {
		return cniErr(types.ErrInternal, "garbage collection incomplete", err)
	}
	return nil
}
