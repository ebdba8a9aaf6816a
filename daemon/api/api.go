// Package api is the wire protocol of podnetd's unix socket, shared by the daemon,
// the CNI plugin and podnetctl: JSON over HTTP/1.1 on a unix socket.
//
//	POST /v1/cni      CNIRequest  -> 200 CNIResponse, or 4xx/5xx CNI error object
//	GET  /v1/status   -> 200 Status
//	GET  /v1/ipam     -> 200 []Allocation
//	GET  /v1/services -> 200 Services
//
// CNI results always travel as spec version 1.1.0; the plugin converts them to the
// version the runtime asked for.
package api

import (
	"encoding/json"
	"time"
)

// DefaultSocket is where podnetd listens unless told otherwise.
const DefaultSocket = "/run/podnet/podnet.sock"

// CNIRequest carries one CNI call as the plugin received it.
type CNIRequest struct {
	Command     string `json:"command"` // ADD, DEL, CHECK, STATUS, GC
	ContainerID string `json:"containerID,omitempty"`
	NetNS       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Args        string `json:"args,omitempty"`
	Path        string `json:"path,omitempty"`
	// Config is the network configuration from the plugin's stdin, verbatim.
	Config json.RawMessage `json:"config"`
}

// CNIResponse is a successful CNI call. Result is a 1.1.0 result for ADD and
// empty for the other verbs.
type CNIResponse struct {
	Result json.RawMessage `json:"result,omitempty"`
}

// Error is a CNI error object (SPEC.md "Error"), returned with a non-2xx status.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + ": " + e.Details
	}
	return e.Msg
}

// Status is the daemon's view of itself.
type Status struct {
	Version     string   `json:"version"`
	Node        string   `json:"node"`
	Source      string   `json:"source"`
	Ready       bool     `json:"ready"`
	PodCIDRs    []string `json:"podCIDRs"`
	Bridge      string   `json:"bridge"`
	MTU         int      `json:"mtu"`
	Peers       int      `json:"peers"`
	Routes      int      `json:"routes"`
	Allocations int      `json:"allocations"`
	// LastSync is when the last node sync ended, SyncSeconds how long it took.
	LastSync    time.Time `json:"lastSync"`
	SyncSeconds float64   `json:"syncSeconds"`
	Syncs       uint64    `json:"syncs"`
	LastError   string    `json:"lastError,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	// Services counts, as of the last sync that programmed the nft table, the
	// services programmed, rejected (by the cluster file or the table) and
	// ignored (headless, or served by another proxy). GET /v1/services lists them.
	ServicesProgrammed int `json:"servicesProgrammed"`
	ServicesRejected   int `json:"servicesRejected"`
	ServicesIgnored    int `json:"servicesIgnored"`
	// ConntrackCleanup says whether podnetd deletes the UDP conntrack entries
	// that service changes leave stale (docs/services.md); it is false when
	// ctnetlink was not reachable at start. ConntrackDeleted counts the entries
	// deleted since start, ConntrackFailures the deletes that failed (retried
	// at the next sync); ConntrackLastError is the last failure, cleared by a
	// delete that succeeds.
	ConntrackCleanup   bool   `json:"conntrackCleanup"`
	ConntrackDeleted   uint64 `json:"conntrackDeleted"`
	ConntrackFailures  uint64 `json:"conntrackFailures"`
	ConntrackLastError string `json:"conntrackLastError,omitempty"`
}

// Allocation is one allocated pod address.
type Allocation struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Address     string    `json:"address"`
	Range       string    `json:"range"`
	Created     time.Time `json:"created"`
}

// Services are the services of the last sync that programmed the nft table:
// those programmed, and those left out with the reason.
type Services struct {
	Programmed []Service         `json:"programmed"`
	Rejected   []RejectedService `json:"rejected"`
	Ignored    []IgnoredService  `json:"ignored"`
}

// Service is one programmed service.
type Service struct {
	Namespace                string   `json:"namespace"`
	Name                     string   `json:"name"`
	ClusterIPs               []string `json:"clusterIPs"`
	ExternalIPs              []string `json:"externalIPs,omitempty"`
	LoadBalancerIPs          []string `json:"loadBalancerIPs,omitempty"`
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
	InternalTrafficPolicy    string   `json:"internalTrafficPolicy"`
	ExternalTrafficPolicy    string   `json:"externalTrafficPolicy"`
	// SessionAffinityTimeoutSeconds is 0 without ClientIP session affinity.
	SessionAffinityTimeoutSeconds int           `json:"sessionAffinityTimeoutSeconds,omitempty"`
	Ports                         []ServicePort `json:"ports"`
	Endpoints                     []Endpoint    `json:"endpoints"`
}

// ServicePort is one port of a service; NodePort is 0 when it has none.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	NodePort int    `json:"nodePort,omitempty"`
}

// Endpoint is one backend address of a service with its conditions, as in
// EndpointSlices. Ports maps a service port name to the endpoint's port.
type Endpoint struct {
	Address     string         `json:"address"`
	Node        string         `json:"node,omitempty"`
	Ports       map[string]int `json:"ports"`
	Ready       bool           `json:"ready"`
	Serving     bool           `json:"serving"`
	Terminating bool           `json:"terminating"`
}

// RejectedService is an entry of the cluster file's services, or a Service of
// the Kubernetes API, that is not programmed because it is invalid, conflicts
// with an earlier service, or was refused by the nft table. Index is its
// position in the file's services; -1 for a Service of the Kubernetes API.
type RejectedService struct {
	Index     int    `json:"index"`
	Namespace string `json:"namespace"`
	Name      string `json:"name,omitempty"`
	// Field is the offending field, e.g. "ports[1].protocol", or "".
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
	// Error is the whole message, as logged, e.g.
	// `services[2] default/web: ports[1].protocol "FOO": want TCP, UDP or SCTP`.
	Error string `json:"error"`
}

// IgnoredService is a valid entry of the cluster file's services that no proxy
// programs: headless, or labelled service.kubernetes.io/service-proxy-name.
type IgnoredService struct {
	Index     int    `json:"index"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
}
