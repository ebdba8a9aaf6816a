package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

// NoEndpoints is the journey to a service without endpoints.
const NoEndpoints Journey = "pod → service without endpoints"

// EmptyVIP is the ClusterIP of the lab's service without endpoints.
var EmptyVIP = netip.MustParseAddr("10.96.0.11")

// EmptyService is a ClusterIP service with no endpoints: connections to it
// are rejected.
func EmptyService() Service {
	return Service{Name: "empty", VIP: EmptyVIP, Port: WebPort, TargetPort: WebTargetPort}
}

// TraceCheck is one `podnetctl trace` of a journey, asked of the source
// pod's podnetd, with what the path must show.
type TraceCheck struct {
	Journey Journey
	From    *Pod
	To      string // the trace's --to
	// WantOutcome is the outcome the trace must give; WantHop a text one
	// of its hops must contain; WantEndpoints the endpoints of a service
	// trace.
	WantOutcome   string
	WantHop       string
	WantEndpoints []string
	Trace         *api.Trace
	Err           error
}

// Problems lists what is wrong with the trace; empty when it passed.
func (c TraceCheck) Problems() []string {
	if c.Err != nil {
		return []string{c.Err.Error()}
	}
	var out []string
	t := c.Trace
	if t.Outcome != c.WantOutcome {
		out = append(out, fmt.Sprintf("outcome %s, want %s", t.Outcome, c.WantOutcome))
	}
	if c.WantHop != "" && !slices.ContainsFunc(t.Hops, func(h api.Hop) bool { return strings.Contains(h.Where+": "+h.What, c.WantHop) }) {
		out = append(out, fmt.Sprintf("no hop says %q", c.WantHop))
	}
	if got := slices.Sorted(slices.Values(t.Endpoints)); !slices.Equal(got, c.WantEndpoints) {
		out = append(out, fmt.Sprintf("endpoints %v, want %v", got, c.WantEndpoints))
	}
	switch {
	case t.Probe == nil || !t.Probe.Sent:
		out = append(out, "no probe was sent")
	case !t.Probe.Agrees:
		out = append(out, "the nftrace confirmation disagrees: "+strings.Join(t.Probe.Mismatches, "; "))
	}
	return out
}

// OK reports whether the trace gave the right answer, confirmed by nftrace.
func (c TraceCheck) OK() bool { return len(c.Problems()) == 0 }

// traceChecks lists the journeys to trace with web (endpoints on the first
// pod of two nodes) and empty (no endpoints) programmed: pod → pod on one
// node and across nodes (to web's endpoint servers), pod → service, and the
// service without endpoints.
func (l *Lab) traceChecks(web Service) ([]TraceCheck, error) {
	if len(web.Endpoints) < 2 {
		return nil, fmt.Errorf("tracing needs the web service's two endpoints")
	}
	ep1, ep2 := web.Endpoints[0], web.Endpoints[1]
	var sameNode *Pod
	for _, p := range l.Pods {
		if p.Node == ep1.Node && p != ep1 {
			sameNode = p
			break
		}
	}
	if sameNode == nil {
		return nil, fmt.Errorf("tracing needs two pods on %s", ep1.Node.Name)
	}
	client := l.Pods[len(l.Pods)-1] // on the last node
	target := func(p *Pod) string { return fmt.Sprintf("%s:%d", p.IP, web.TargetPort) }
	var eps []string
	for _, p := range web.Endpoints {
		eps = append(eps, fmt.Sprintf("%s:%d", p.IP, web.TargetPort))
	}
	slices.Sort(eps)
	return []TraceCheck{
		{Journey: PodPodSameNode, From: sameNode, To: target(ep1), WantOutcome: api.TraceDelivered,
			WantHop: "pod default/" + ep1.Name + " eth0: receives it"},
		{Journey: PodPodCrossNode, From: sameNode, To: target(ep2), WantOutcome: api.TraceDelivered,
			WantHop: "to node " + ep2.Node.Name + " via " + ep2.Node.Addr.String()},
		{Journey: PodService, From: client, To: "default/" + web.Name, WantOutcome: api.TraceDelivered,
			WantHop: "nftables", WantEndpoints: eps},
		{Journey: NoEndpoints, From: sameNode, To: "default/empty:80/tcp", WantOutcome: api.TraceRejected,
			WantHop: "no endpoint"},
	}, nil
}

// Traces runs each trace check against its source pod's podnetd, with a probe.
func (l *Lab) Traces(ctx context.Context, checks []TraceCheck) []TraceCheck {
	for i := range checks {
		c := &checks[i]
		cl := client.New(c.From.Node.Socket(), 15*time.Second)
		c.Trace, c.Err = cl.Trace(ctx, api.TraceQuery{From: "default/" + c.From.Name, To: c.To})
	}
	return checks
}

// PrintTraces prints each journey's trace, hop by hop, with the probe's
// confirmation, and returns the number of traces that failed.
func PrintTraces(w io.Writer, checks []TraceCheck) int {
	failed := 0
	fmt.Fprintln(w, "\n▸ traces: each journey as `podnetctl trace` shows it, confirmed by an nftrace'd probe")
	for _, c := range checks {
		mark := "✓"
		if !c.OK() {
			mark, failed = "✗", failed+1
		}
		fmt.Fprintf(w, "\n%s %s: podnetctl trace --from default/%s --to %s\n", mark, c.Journey, c.From.Name, c.To)
		if c.Err != nil {
			fmt.Fprintf(w, "    error: %v\n", c.Err)
			continue
		}
		t := c.Trace
		for i, h := range t.Hops {
			fmt.Fprintf(w, "    %2d  %-28s %s\n", i+1, h.Where, h.What)
			if h.Rule != "" {
				fmt.Fprintf(w, "        %-28s ↳ %s\n", "", h.Rule)
			}
		}
		fmt.Fprintf(w, "    outcome: %s", t.Outcome)
		if len(t.Endpoints) > 0 {
			fmt.Fprintf(w, " (endpoints %s)", strings.Join(t.Endpoints, ", "))
		}
		fmt.Fprintln(w)
		if p := t.Probe; p != nil && p.Sent {
			fmt.Fprintf(w, "    probe: %s; nftrace %s", p.Result, strings.Join(p.Chains, " → "))
			if p.DNAT != "" {
				fmt.Fprintf(w, "; DNAT to %s", p.DNAT)
			}
			fmt.Fprintf(w, "; agrees: %v\n", p.Agrees)
		}
		for _, pr := range c.Problems() {
			fmt.Fprintf(w, "    ✗ %s\n", pr)
		}
		if p := t.Probe; p != nil && !c.OK() {
			for _, e := range p.Events { // the kernel's own trace, to see what it did
				fmt.Fprintf(w, "      %s\n", e)
			}
		}
	}
	return failed
}
