package api

import (
	"errors"
	"time"
)

// ErrAccessDenied is wrapped by the client when podnetd refuses a caller that is
// neither root nor a member of the socket's group (HTTP 403), or when the
// socket's file mode keeps the caller from connecting at all.
var ErrAccessDenied = errors.New("access denied")

// IPAM is the address management of the node: its ranges with their occupancy,
// and every allocation.
type IPAM struct {
	Ranges      []IPAMRange  `json:"ranges"`
	Allocations []Allocation `json:"allocations"`
}

// IPAMRange is one configured pod range. Size counts the addresses pods can
// get (network, gateway and broadcast excluded); Free is Size - Used.
type IPAMRange struct {
	Range   string `json:"range"`
	Gateway string `json:"gateway"`
	Size    uint64 `json:"size"`
	Used    int    `json:"used"`
	Free    uint64 `json:"free"`
}

// Pod is one pod attachment on this node: what CNI ADD recorded, joined with
// IPAM and the host links found in the kernel. Problems lists what does not
// add up (no host veth, namespace gone, no address); empty when all is well.
type Pod struct {
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifName"`
	Namespace   string   `json:"namespace,omitempty"` // K8S_POD_NAMESPACE of CNI_ARGS
	Name        string   `json:"name,omitempty"`      // K8S_POD_NAME of CNI_ARGS
	NetNS       string   `json:"netns,omitempty"`
	HostVeth    string   `json:"hostVeth,omitempty"`
	Addresses   []string `json:"addresses"`
	// HostPorts are the pod's CNI portMappings, e.g. "*:8080/TCP → 80".
	HostPorts []string  `json:"hostPorts,omitempty"`
	Created   time.Time `json:"created"`
	Problems  []string  `json:"problems,omitempty"`
}

// Routes are the host routes to peer nodes' podCIDRs, as the cluster state
// wants them and as the kernel holds them.
type Routes struct {
	Routes []Route `json:"routes"`
	// Skipped are peers no route can be made for (no address of the
	// podCIDR's family, overlapping podCIDRs), with the reason.
	Skipped []string `json:"skipped,omitempty"`
	// Drift counts routes that are not as desired.
	Drift int `json:"drift"`
}

// Route states.
const (
	RouteOK      = "ok"      // present as desired
	RouteMissing = "missing" // desired, absent from the kernel
	RouteWrong   = "wrong"   // present through another gateway
	RouteExtra   = "extra"   // podnet's protocol, not desired: removed at the next sync
)

// Route is one route: Via is the desired gateway, Kernel the gateway of the
// kernel's podnet route to Dst ("" when there is none).
type Route struct {
	Dst    string `json:"dst"`
	Node   string `json:"node,omitempty"` // the peer node that owns Dst
	Via    string `json:"via,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	State  string `json:"state"`
}

// NFT is podnet's nftables table as the kernel reports it, read through
// netlink.
type NFT struct {
	Table string `json:"table"`
	// Text is the table in `nft list table` syntax.
	Text  string    `json:"text"`
	Sets  []NFTSet  `json:"sets"`
	Rules []NFTRule `json:"rules"`
}

// NFTSet is one set or map with its element count.
type NFTSet struct {
	Name     string `json:"name"`
	Elements int    `json:"elements"`
}

// NFTRule is one rule with its kernel handle.
type NFTRule struct {
	Chain  string `json:"chain"`
	Handle uint64 `json:"handle"`
	Text   string `json:"text"`
}
