// Package api is the wire protocol of podnetd's unix socket, shared by the daemon,
// the CNI plugin and podnetctl: JSON over HTTP/1.1 on a unix socket.
//
//	POST /v1/cni      CNIRequest  -> 200 CNIResponse, or 4xx/5xx CNI error object
//	GET  /v1/status   -> 200 Status
//	GET  /v1/ipam     -> 200 []Allocation
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
	Version     string    `json:"version"`
	Node        string    `json:"node"`
	Source      string    `json:"source"`
	Ready       bool      `json:"ready"`
	PodCIDRs    []string  `json:"podCIDRs"`
	Bridge      string    `json:"bridge"`
	MTU         int       `json:"mtu"`
	Peers       int       `json:"peers"`
	Routes      int       `json:"routes"`
	Allocations int       `json:"allocations"`
	LastSync    time.Time `json:"lastSync"`
	SyncSeconds float64   `json:"syncSeconds"`
	Syncs       uint64    `json:"syncs"`
	LastError   string    `json:"lastError,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
}

// Allocation is one allocated pod address.
type Allocation struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Address     string    `json:"address"`
	Range       string    `json:"range"`
	Created     time.Time `json:"created"`
}
