package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// explainNFT asks podnet's table what it does with the packet, from the
// kernel's live state (nft.Table.Explain).
func (d *Daemon) explainNFT(p tracePacket) (nftDecision, error) {
	ex, ok := d.nft.(nft.Explainer)
	if !ok {
		return nftDecision{}, errors.New("this nftables backend cannot explain a packet")
	}
	e, err := ex.Explain(nft.Packet{Src: p.src, Dst: p.dst, Proto: p.proto, DstPort: p.port, Local: p.local})
	if err != nil {
		return nftDecision{}, err
	}
	out := nftDecision{verdict: e.Verdict, chains: e.Chains, backends: e.Backends}
	if e.Masquerade {
		out.masq = cmp.Or(e.MasqReason, "yes")
	}
	for _, s := range e.Steps {
		h := api.Hop{Where: "nftables " + s.Chain, What: s.What, Rule: s.Rule}
		if s.Element != "" {
			h.Rule = strings.TrimSpace(h.Rule + "  [element " + s.Element + "]")
		}
		out.hops = append(out.hops, h)
	}
	return out, nil
}

// probeTimeout bounds a probe's connection attempt.
const probeTimeout = 2 * time.Second

// probe sends one real packet of the traced connection from the source's
// namespace with nftables tracing on, and compares its path through podnet's
// table with the prediction.
func (t *tracer) probe(ctx context.Context, root bool) *api.ProbeResult {
	res := &api.ProbeResult{}
	switch {
	case !root:
		res.Skipped = "sending a probe needs root; this is the prediction only"
		return res
	case t.rec == nil && !t.pkt.local:
		res.Skipped = "the source is not a pod of this node with a known namespace, nor this node: run the trace on the source's node"
		return res
	case t.pkt.proto != protoNumber("tcp") && t.pkt.proto != protoNumber("udp"):
		res.Skipped = "probes are sent for tcp and udp only"
		return res
	case !t.nftOK && !t.unroutable:
		res.Skipped = "podnet's table could not be read: nothing to compare with"
		return res
	}
	runner, err := t.d.traceRunner()
	if err != nil {
		res.Skipped = "nftables tracing unavailable: " + err.Error()
		return res
	}
	prober, ok := t.d.kernel.(routing.Prober)
	if !ok {
		res.Skipped = "this kernel backend cannot send probes"
		return res
	}
	spec := routing.ProbeSpec{Src: t.pkt.src, Dst: netip.AddrPortFrom(t.pkt.dst, t.pkt.port), Proto: t.pkt.proto, Timeout: probeTimeout}
	if t.rec != nil {
		spec.NetNS = t.rec.NetNS
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout+3*time.Second) // ends too if the caller goes
	defer cancel()
	var sendErr error
	var sent routing.ProbeOutcome
	events, err := runner.Trace(ctx, nft.Probe{Src: t.pkt.src, Dst: t.pkt.dst, Proto: t.pkt.proto, DstPort: t.pkt.port},
		func(ctx context.Context) error {
			sent, sendErr = prober.Probe(ctx, spec)
			return sendErr
		})
	if sendErr != nil {
		res.Skipped = "the probe could not be sent: " + sendErr.Error()
		return res
	}
	if err != nil && len(events) == 0 {
		res.Skipped = "nftables trace failed: " + err.Error()
		return res
	}
	res.Sent, res.Result = true, sent.Result
	observe(res, events, t.pkt, sent.Src.Port())
	if t.unroutable { // predicted: fails at the node's routing, before nftables
		if len(res.Chains) > 0 {
			res.Mismatches = append(res.Mismatches, "predicted no route; the probe went through "+strings.Join(res.Chains, " → "))
		}
		if res.Result != routing.ProbeUnreachable {
			res.Mismatches = append(res.Mismatches, "predicted network unreachable; the connection was "+res.Result)
		}
		res.Agrees = len(res.Mismatches) == 0
		return res
	}
	if err != nil { // events were lost or did not decode: say so
		res.Events = append(res.Events, "trace incomplete: "+err.Error())
	}
	compare(res, t.pred, t.pkt, t.tr.Outcome)
	return res
}

// traceRunner returns the nftables tracer, made at the first trace.
func (d *Daemon) traceRunner() (nft.TraceRunner, error) {
	d.tracerMu.Lock()
	defer d.tracerMu.Unlock()
	if d.tracer == nil {
		tr, err := nft.NewTracer()
		if err != nil {
			return nil, err
		}
		d.tracer = tr
	}
	return d.tracer, nil
}

// observe reads the events of the probe's packets (nft.Tracer returns only
// those, under whatever trace IDs the kernel gave them): the podnet chains
// they went through, the last verdict podnet's table gave, and where a later
// hook saw the packet going (the DNAT). Only a connection's first packet
// passes podnet's nat chains. Packets of another connection between the same
// addresses (another source port) are left out.
func observe(res *api.ProbeResult, events []nft.TraceEvent, pkt tracePacket, srcPort uint16) {
	other := map[uint32]bool{}
	for _, e := range events {
		if srcPort != 0 && e.HasPacket() && e.Src == pkt.src && e.SrcPort != srcPort {
			other[e.ID] = true
		}
	}
	for _, e := range events {
		if other[e.ID] {
			continue
		}
		res.Events = append(res.Events, e.String())
		if e.Table != nft.TableName || e.Family != "inet" {
			continue
		}
		if !slices.Contains(res.Chains, e.Chain) { // a return to a calling chain is no new step
			res.Chains = append(res.Chains, e.Chain)
		}
		if e.Type == "rule" && e.Verdict != "" && e.Verdict != "continue" && !strings.HasPrefix(e.Verdict, "jump ") && !strings.HasPrefix(e.Verdict, "goto ") {
			res.Verdict = e.Chain + ": " + e.Verdict // the deciding rule: a DNAT accepts, a reject drops
		}
		if e.HasPacket() && e.Dst != pkt.dst && e.SrcPort == srcPort {
			res.DNAT = netip.AddrPortFrom(e.Dst, e.DstPort).String()
		}
	}
}

// compare checks the probe against the prediction: the predicted chains in
// order, a DNAT to one of the predicted endpoints (or none), a reject.
func compare(res *api.ProbeResult, pred nftDecision, pkt tracePacket, outcome string) {
	miss := func(format string, a ...any) { res.Mismatches = append(res.Mismatches, fmt.Sprintf(format, a...)) }
	if len(res.Events) == 0 {
		miss("no trace event arrived for the probe")
	}
	i := 0
	for _, c := range res.Chains {
		if i < len(pred.chains) && c == pred.chains[i] {
			i++
		}
	}
	if i < len(pred.chains) {
		miss("predicted chains %s, the probe went through %s", strings.Join(pred.chains, " → "), cmp.Or(strings.Join(res.Chains, " → "), "none"))
	}
	switch pred.verdict {
	case nft.VerdictDNAT:
		var want []string
		for _, b := range pred.backends {
			want = append(want, b.String())
		}
		if res.DNAT == "" {
			miss("predicted a DNAT to one of %s; the trace showed none", strings.Join(want, ", "))
		} else if !slices.Contains(want, res.DNAT) {
			miss("DNAT to %s, not one of the predicted %s", res.DNAT, strings.Join(want, ", "))
		}
	case nft.VerdictReject, nft.VerdictDrop:
		if !strings.HasSuffix(res.Verdict, ": drop") {
			miss("predicted %s; the table's last verdict was %q", pred.verdict, res.Verdict)
		}
		if pred.verdict == nft.VerdictReject && res.Result != routing.ProbeRefused && pkt.proto == protoNumber("tcp") {
			miss("predicted a reject; the connection was %s", res.Result)
		}
	default:
		if res.DNAT != "" {
			miss("predicted no translation; the packet was sent to %s", res.DNAT)
		}
	}
	if pred.verdict != nft.VerdictReject && pred.verdict != nft.VerdictDrop && strings.HasSuffix(res.Verdict, ": drop") {
		miss("predicted the packet passes podnet's table; it was dropped (%s)", res.Verdict)
	}
	// A delivered connection may still be refused or time out (nothing
	// listens, a policy drops it); it is never unreachable. A dropped one
	// never connects.
	tcp := pkt.proto == protoNumber("tcp")
	switch {
	case outcome == api.TraceDelivered && res.Result == routing.ProbeUnreachable:
		miss("predicted delivery; the connection was unreachable")
	case outcome == api.TraceDropped && tcp && (res.Result == routing.ProbeConnected || res.Result == routing.ProbeRefused):
		miss("predicted a drop; the connection was %s", res.Result)
	}
	res.Agrees = len(res.Mismatches) == 0
}
