package api

// TraceQuery asks for the path of a new connection, as GET /v1/trace's query
// parameters: from, to, and probe=false to skip the probe.
type TraceQuery struct {
	// From is a pod ("namespace/name", a name, or a container ID) or an
	// address.
	From string
	// To is an address or a service ("namespace/name" or a name), each with
	// an optional ":port" and "/proto" (tcp, udp, sctp): "web:80/tcp",
	// "10.244.2.5:8080", "[fd00::5]:80/udp".
	To string
	// NoProbe skips the probe packet.
	NoProbe bool
}

// Trace outcomes.
const (
	TraceDelivered = "delivered" // reaches a pod, a node or an address outside the cluster
	TraceRejected  = "rejected"  // the service has no endpoints: the client gets a port unreachable
	TraceDropped   = "dropped"   // nothing routes it, or a source range refuses it
	TraceUnknown   = "unknown"   // podnet's table could not be read
)

// Trace is the path a new connection takes, hop by hop, as this node's
// kernel state says, and what a probe packet confirmed.
type Trace struct {
	From TraceEnd `json:"from"`
	To   TraceEnd `json:"to"`
	// Proto and Port are the connection's layer 4 protocol (tcp, udp, sctp)
	// and destination port.
	Proto string `json:"proto"`
	Port  int    `json:"port"`
	Hops  []Hop  `json:"hops"`
	// Outcome is TraceDelivered, TraceRejected, TraceDropped or TraceUnknown.
	Outcome string `json:"outcome"`
	// Endpoints are the endpoints a service connection may be sent to (the
	// nftables map entry's backends), empty for other destinations.
	Endpoints []string     `json:"endpoints,omitempty"`
	Probe     *ProbeResult `json:"probe,omitempty"`
}

// TraceEnd is one end of a trace: what the input named and what it is.
type TraceEnd struct {
	Input string `json:"input"`
	// Kind is "pod" (a pod on this node), "remote-pod" (in a peer node's
	// podCIDR), "node" (an address of a node), "service" (a service VIP or
	// name) or "external".
	Kind    string `json:"kind"`
	Address string `json:"address"`
	Pod     string `json:"pod,omitempty"` // namespace/name or container ID
	Node    string `json:"node,omitempty"`
	Service string `json:"service,omitempty"` // namespace/name
}

// String describes the end for people: "pod default/a (10.244.1.5)", "pod
// 10.244.2.7 on node node2", "service default/web (10.96.0.10)", …
func (e TraceEnd) String() string {
	switch e.Kind {
	case "pod":
		if e.Pod != "" {
			return "pod " + e.Pod + " (" + e.Address + ")"
		}
		return "pod " + e.Address
	case "remote-pod":
		return "pod " + e.Address + " on node " + e.Node
	case "node":
		return "node " + e.Node + " (" + e.Address + ")"
	case "service":
		return "service " + e.Service + " (" + e.Address + ")"
	}
	return e.Address + " (outside the cluster)"
}

// Hop is one step of the path. Where names the place ("pod default/a eth0",
// "veth pn1a2b3c4d5e6f", "bridge podnet0", "nftables", "routing", "node
// node2"); What says what happens there.
type Hop struct {
	Where string `json:"where"`
	What  string `json:"what"`
	// Rule is the nftables rule or map element that decides, as nft lists it.
	Rule string `json:"rule,omitempty"`
}

// ProbeResult is what a real probe packet, traced by the kernel with meta
// nftrace, showed.
type ProbeResult struct {
	// Sent is false when no probe could be sent; Skipped says why.
	Sent    bool   `json:"sent"`
	Skipped string `json:"skipped,omitempty"`
	// Result is what the probe's connection attempt saw: "connected",
	// "refused", "unreachable", "timeout", "sent" (UDP).
	Result string `json:"result,omitempty"`
	// Chains are the podnet chains the packet traversed, in order.
	Chains []string `json:"chains,omitempty"`
	// Verdict is the last verdict nftables gave the packet in podnet's table.
	Verdict string `json:"verdict,omitempty"`
	// DNAT is the address:port a later hook saw the packet sent to, as the
	// trace showed it; empty when it was not translated (or went to an
	// address of the node itself, past no later podnet chain).
	DNAT string `json:"dnat,omitempty"`
	// Agrees says whether the probe followed the predicted path;
	// Mismatches lists where it did not.
	Agrees     bool     `json:"agrees"`
	Mismatches []string `json:"mismatches,omitempty"`
	// Events are the trace events as text, one per line.
	Events []string `json:"events,omitempty"`
}
