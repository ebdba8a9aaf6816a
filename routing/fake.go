package routing

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// Fake is an in-memory Interface for unit tests. It keeps the bridge, podnet's
// routes and the pod attachments; tests may edit Routes to simulate drift.
type Fake struct {
	mu     sync.Mutex
	Bridge *Bridge
	Routes map[netip.Prefix]netip.Addr
	Pods   map[string]Pod // by host veth name
	// FailAddPod, when set, is returned by AddPod (to test rollback).
	FailAddPod error
	Syncs      int
	// Probes are the probes Probe was asked to send; ProbeResult is the
	// outcome it reports.
	Probes      []ProbeSpec
	ProbeResult string
	// LocalAddrs are the node's own addresses besides the bridge's, for
	// RouteGet.
	LocalAddrs []netip.Addr
}

var _ Interface = (*Fake)(nil)

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{Routes: map[netip.Prefix]netip.Addr{}, Pods: map[string]Pod{}}
}

// EnsureBridge records b.
func (f *Fake) EnsureBridge(b Bridge) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Bridge = &b
	return nil
}

// SyncRoutes makes Routes equal desired and reports the changes.
func (f *Fake) SyncRoutes(desired []Route) (RouteChanges, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Syncs++
	var ch RouteChanges
	want := map[netip.Prefix]bool{}
	for _, r := range desired {
		want[r.Dst] = true
		via, ok := f.Routes[r.Dst]
		switch {
		case !ok:
			ch.Added = append(ch.Added, r)
		case via != r.Via:
			ch.Replaced = append(ch.Replaced, r)
		default:
			continue
		}
		f.Routes[r.Dst] = r.Via
	}
	for _, dst := range slices.Collect(maps.Keys(f.Routes)) {
		if !want[dst] {
			ch.Removed = append(ch.Removed, Route{Dst: dst, Via: f.Routes[dst]})
			delete(f.Routes, dst)
		}
	}
	return ch, nil
}

// DeleteRoute deletes the route to dst, as someone changing the kernel
// behind podnet's back would; safe while the Fake is in use.
func (f *Fake) DeleteRoute(dst netip.Prefix) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Routes, dst)
}

// ListRoutes returns Routes.
func (f *Fake) ListRoutes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for dst, via := range f.Routes {
		out = append(out, Route{Dst: dst, Via: via})
	}
	return out, nil
}

// AddPod records p, failing like the kernel when the host veth exists.
func (f *Fake) AddPod(p Pod) (PodLinks, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailAddPod != nil {
		return PodLinks{}, f.FailAddPod
	}
	if old, ok := f.Pods[p.HostVeth]; ok && old.ContainerID == p.ContainerID && old.IfName == p.IfName {
		return PodLinks{}, fmt.Errorf("%w: %s", ErrLinkExists, p.IfName)
	}
	f.Pods[p.HostVeth] = p
	return PodLinks{HostVeth: p.HostVeth, HostMAC: "02:00:00:00:00:01", PodMAC: "02:00:00:00:00:02", PodIfName: p.IfName}, nil
}

// CheckPod succeeds when p was added.
func (f *Fake) CheckPod(p Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.Pods[p.HostVeth]; !ok {
		return fmt.Errorf("host veth %s not found", p.HostVeth)
	}
	return nil
}

// DelPod forgets p; it is not an error if p is unknown.
func (f *Fake) DelPod(p Pod) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Pods, p.HostVeth)
	return nil
}

// ListHostLinks lists the recorded pods.
func (f *Fake) ListHostLinks() ([]HostLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []HostLink
	for name, p := range f.Pods {
		out = append(out, HostLink{Name: name, ContainerID: p.ContainerID, IfName: p.IfName})
	}
	return out, nil
}

// MTUOf returns 1500.
func (f *Fake) MTUOf(netip.Addr) (int, error) { return 1500, nil }

var _ Looker = (*Fake)(nil)

// RouteGet answers from the fake's state: a pod's namespace sends everything
// to its gateway, a bridge gateway address is local, an address inside a
// bridge range is on the bridge, one inside a route's destination goes via
// its gateway (the longest prefix wins); anything else is unreachable.
func (f *Fake) RouteGet(q Query) (Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q.NetNS != "" {
		for _, p := range f.Pods {
			if p.NetNS != q.NetNS {
				continue
			}
			for i, a := range p.Addrs {
				if a.Addr().Is4() == q.Dst.Is4() {
					if a.Contains(q.Dst) {
						return Decision{Type: "unicast", Dev: p.IfName, PrefSrc: a.Addr()}, nil
					}
					return Decision{Type: "unicast", Dev: p.IfName, Via: p.Gateways[i], PrefSrc: a.Addr()}, nil
				}
			}
		}
		return Decision{}, fmt.Errorf("route get %s in %s: network is unreachable", q.Dst, q.NetNS)
	}
	if q.Src.IsValid() && q.Iif == "" && !f.local(q.Src) {
		// The kernel refuses an output decision from a foreign source.
		return Decision{}, fmt.Errorf("route get %s from %s: network is unreachable", q.Dst, q.Src)
	}
	if f.Bridge != nil {
		for _, g := range f.Bridge.Gateways {
			if g.Addr() == q.Dst {
				return Decision{Type: "local", Dev: "lo", PrefSrc: g.Addr()}, nil
			}
			if g.Contains(q.Dst) {
				return Decision{Type: "unicast", Dev: f.Bridge.Name, PrefSrc: g.Addr()}, nil
			}
		}
	}
	best := -1
	var d Decision
	for dst, via := range f.Routes {
		if dst.Contains(q.Dst) && dst.Bits() > best {
			best, d = dst.Bits(), Decision{Type: "unicast", Dev: "eth0", Via: via}
		}
	}
	if best < 0 {
		return Decision{}, fmt.Errorf("route get %s: network is unreachable", q.Dst)
	}
	return d, nil
}

// local: a is an address of the fake node (a bridge gateway or one of
// LocalAddrs).
func (f *Fake) local(a netip.Addr) bool {
	if slices.Contains(f.LocalAddrs, a) {
		return true
	}
	if f.Bridge != nil {
		for _, g := range f.Bridge.Gateways {
			if g.Addr() == a {
				return true
			}
		}
	}
	return false
}

var _ Prober = (*Fake)(nil)

// Probe records p and answers ProbeResult (ProbeConnected when it is empty)
// from port 40000 of p.Src.
func (f *Fake) Probe(_ context.Context, p ProbeSpec) (ProbeOutcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Probes = append(f.Probes, p)
	out := ProbeOutcome{Result: ProbeConnected, Src: netip.AddrPortFrom(p.Src, 40000)}
	if f.ProbeResult != "" {
		out.Result = f.ProbeResult
	}
	return out, nil
}
