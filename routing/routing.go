// Package routing owns the node side of the pod network in the kernel: the node
// bridge with its gateway addresses, one veth pair per pod attachment, and a host
// route to every peer node's podCIDR. It talks rtnetlink directly (no `ip`
// subprocess), knows nothing of Kubernetes, and never logs.
//
// Everything it creates is marked so it can be told apart from what others own:
// routes carry protocol Proto, host veths carry an alias "podnet:<container>/<if>".
package routing

import (
	"errors"
	"net/netip"
)

// Proto is the route protocol number podnet stamps on its routes (`ip route show
// proto 90`). Only routes with this protocol are ever changed or removed.
const Proto = 90

// AliasPrefix starts the alias of every host-side veth podnet creates.
const AliasPrefix = "podnet:"

// ErrLinkExists is returned by AddPod when the pod's namespace already has an
// interface with the requested name (CNI: ADD fails if the interface exists).
var ErrLinkExists = errors.New("interface already exists")

// ErrNetNSGone is returned when a pod's network namespace cannot be opened.
var ErrNetNSGone = errors.New("network namespace not found")

// Bridge is the desired node bridge.
type Bridge struct {
	Name string
	// Gateways are the gateway addresses with their range's prefix length
	// (10.244.1.1/24). Other addresses found on the bridge are removed.
	Gateways []netip.Prefix
	MTU      int
}

// Route is a host route to a peer node's podCIDR through that node's address.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// RouteChanges reports what SyncRoutes did.
type RouteChanges struct {
	Added, Replaced, Removed []Route
	// Conflicts are desired routes left alone because a route to the same
	// destination that podnet does not own is present.
	Conflicts []Route
}

// Pod describes one pod attachment: a veth whose host end joins Bridge and whose
// other end becomes IfName inside the namespace at NetNS.
type Pod struct {
	ContainerID string
	NetNS       string // path of the pod's network namespace
	IfName      string // name inside the pod, e.g. eth0
	HostVeth    string // host-side name, at most 15 bytes
	Bridge      string
	MTU         int
	Addrs       []netip.Prefix // pod addresses with prefix length
	Gateways    []netip.Addr   // default gateway per family
}

// PodLinks is what AddPod created, for the CNI result.
type PodLinks struct {
	HostVeth  string
	HostMAC   string
	PodMAC    string
	PodIfName string
}

// HostLink is a host-side veth found on the node with a podnet alias.
type HostLink struct {
	Name        string
	ContainerID string
	IfName      string
}

// Interface is what the daemon needs from the kernel. The real implementation is
// *Manager; *Fake serves unit tests.
type Interface interface {
	EnsureBridge(b Bridge) error
	SyncRoutes(desired []Route) (RouteChanges, error)
	ListRoutes() ([]Route, error)
	AddPod(p Pod) (PodLinks, error)
	CheckPod(p Pod) error
	DelPod(p Pod) error
	ListHostLinks() ([]HostLink, error)
	MTUOf(addr netip.Addr) (int, error)
}
