package nft

import (
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Protocol is a service port's transport protocol.
type Protocol string

// The protocols a service port may use.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// TrafficPolicy says which endpoints serve a kind of traffic.
type TrafficPolicy string

const (
	// PolicyCluster sends traffic to every usable endpoint of the service.
	PolicyCluster TrafficPolicy = "Cluster"
	// PolicyLocal sends traffic only to usable endpoints on this node, and drops
	// it when there is none.
	PolicyLocal TrafficPolicy = "Local"
)

// DefaultAffinityTimeout is Kubernetes' default ClientIP affinity timeout
// (sessionAffinityConfig.clientIP.timeoutSeconds).
const DefaultAffinityTimeout = 10800 * time.Second

// MaxAffinityTimeout is Kubernetes' largest ClientIP affinity timeout.
const MaxAffinityTimeout = 86400 * time.Second

// Service is one service as this node programs it. The caller has already left
// out services no proxy should program (headless ones, those labelled
// service.kubernetes.io/service-proxy-name). Sync checks every field and skips a
// service it cannot program, reporting it in a *SkippedError; the other services
// are applied.
type Service struct {
	Namespace, Name string

	// ClusterIPs are the service's virtual IPs, at most one per family.
	ClusterIPs []netip.Addr
	// ExternalIPs and LoadBalancerIPs are further VIPs, served like ClusterIPs
	// but with ExternalTrafficPolicy.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// LoadBalancerSourceRanges, when not empty, restrict traffic to the
	// LoadBalancerIPs to these client prefixes; other clients are dropped.
	LoadBalancerSourceRanges []netip.Prefix

	Ports []ServicePort

	// InternalTrafficPolicy applies to ClusterIPs, ExternalTrafficPolicy to
	// NodePorts, ExternalIPs and LoadBalancerIPs. "" means PolicyCluster.
	InternalTrafficPolicy TrafficPolicy
	ExternalTrafficPolicy TrafficPolicy

	// AffinityTimeout > 0 asks for ClientIP session affinity: a new
	// connection from a client address goes to the endpoint the client's
	// last new connection to the same VIP port (or NodePort on the same node
	// address) went to, if that was less than AffinityTimeout ago. Whole
	// seconds from 1s to 24h (Kubernetes' limits). A change of the service's
	// endpoints may move a client whose endpoint stays (see docs/nftables.md).
	AffinityTimeout time.Duration

	Endpoints []Endpoint

	// Revision, when not empty, names this value of the service: Sync takes a
	// service whose Revision equals the one it applied last as unchanged,
	// without comparing its fields. The caller must give the service a new
	// Revision whenever any field changes (a Kubernetes source can use the
	// resourceVersions of the Service and its EndpointSlices). With 50k
	// services this saves Sync most of its per-service work.
	Revision string
}

// ServicePort is one port of a service.
type ServicePort struct {
	// Name is the port's name; it selects the endpoint port (Endpoint.Ports).
	// It may be empty only when the service has one port.
	Name     string
	Protocol Protocol
	Port     uint16
	// NodePort, when not 0, also serves the port on every local node address
	// (not on loopback addresses).
	NodePort uint16
}

// Endpoint is one backend of a service.
type Endpoint struct {
	Address netip.Addr
	// Ports maps a service port's Name to the endpoint's port for it. A
	// service port whose name is missing here does not use this endpoint.
	// Sync only reads it: endpoints may share one map.
	Ports map[string]uint16
	// NodeName is the node the endpoint runs on; Local policies compare it
	// with State.NodeName.
	NodeName string
	// Conditions, as in EndpointSlices. Traffic goes to Ready endpoints; when a
	// service port has none, to Serving and Terminating ones.
	Ready, Serving, Terminating bool
}

// Clone returns a deep copy of s.
func (s Service) Clone() Service {
	c := s
	c.ClusterIPs = slices.Clone(s.ClusterIPs)
	c.ExternalIPs = slices.Clone(s.ExternalIPs)
	c.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
	c.LoadBalancerSourceRanges = slices.Clone(s.LoadBalancerSourceRanges)
	c.Ports = slices.Clone(s.Ports)
	if s.Endpoints != nil {
		c.Endpoints = make([]Endpoint, len(s.Endpoints))
		for i, ep := range s.Endpoints {
			ep.Ports = maps.Clone(ep.Ports)
			c.Endpoints[i] = ep
		}
	}
	return c
}

// isClusterIP reports whether ip is one of s's ClusterIPs.
func (s Service) isClusterIP(ip netip.Addr) bool { return slices.Contains(s.ClusterIPs, ip) }
