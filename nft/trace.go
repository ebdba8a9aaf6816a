package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Tracing confirms a packet's path with the kernel's nftables tracing (`meta
// nftrace`): a temporary table marks the probe's packets, the kernel reports
// every rule they hit on the NFNLGRP_NFTRACE netlink group, and Trace collects
// those reports. The podnet table is never touched.

// TraceRunner traces a probe through the nftables rules of one network
// namespace. Tracer is the kernel implementation, FakeTracer the in-memory one.
type TraceRunner interface {
	// Trace marks the packets matching p for tracing, calls send (which
	// sends them, e.g. a TCP connect), and returns the trace events of those
	// packets in arrival order. See Tracer.Trace.
	Trace(ctx context.Context, p Probe, send func(context.Context) error) ([]TraceEvent, error)
	// Cleanup deletes a trace table left behind; a missing one is fine.
	Cleanup() error
}

var (
	_ TraceRunner = (*Tracer)(nil)
	_ TraceRunner = (*FakeTracer)(nil)
)

// Probe selects the packets to trace: every packet from Src to Dst with
// protocol Proto and, if DstPort is set, that destination port, seen at the
// prerouting hook (arriving) or the output hook (sent by the namespace itself)
// before conntrack and NAT. Replies are not traced. Other connections between
// the same addresses and port are traced too; a caller that knows its probe's
// source port can tell them apart by SrcPort.
type Probe struct {
	Src, Dst netip.Addr // both IPv4 or both IPv6
	// Proto is unix.IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP
	// (IPv4) or IPPROTO_ICMPV6 (IPv6).
	Proto uint8
	// DstPort is the destination port; 0 matches any (and is required for
	// ICMP).
	DstPort uint16
}

func (p Probe) String() string {
	return fmt.Sprintf("%s %s > %s", traceProtoName(p.Proto), p.Src, hostPort(p.Dst, p.DstPort))
}

// normalize returns p with IPv4-mapped IPv6 addresses unmapped, or an error
// matching ErrInvalid if it cannot be traced.
func (p Probe) normalize() (Probe, error) {
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	invalid := func(why string) (Probe, error) {
		return Probe{}, fmt.Errorf("nft: probe %v: %w: %s", p, ErrInvalid, why)
	}
	switch {
	case !p.Src.IsValid() || !p.Dst.IsValid():
		return invalid("source and destination address needed")
	case p.Src.Zone() != "" || p.Dst.Zone() != "":
		return invalid("address with a zone")
	case p.Src.Is4() != p.Dst.Is4():
		return invalid("source and destination of different families")
	}
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP:
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		if (p.Proto == unix.IPPROTO_ICMP) != p.Dst.Is4() {
			return invalid("icmp is for IPv4, icmpv6 for IPv6")
		}
		if p.DstPort != 0 {
			return invalid("a port with icmp")
		}
	default:
		return invalid("protocol not tcp, udp, sctp or icmp")
	}
	return p, nil
}

// ErrTraceBusy is matched by the error of a Trace that found the trace table
// already there (another process traces in the namespace, or a table left by a
// version that did not own its table) and of a Cleanup that may not delete it
// (its owner, a live trace, still runs).
var ErrTraceBusy = errors.New("another trace is running in the namespace")

// traceSettle is how long Trace keeps reading after send returned and the last
// event of the probe arrived; traceSettleMax bounds that wait if the probe's
// packets keep coming (a long-lived connection that matches the probe).
const (
	traceSettle    = 100 * time.Millisecond
	traceSettleMax = 3 * time.Second
)

// Tracer is the kernel implementation of TraceRunner for one network namespace.
// Calls are serialised: one trace at a time per Tracer.
type Tracer struct {
	mu      sync.Mutex
	netnsFd int // 0: the process's own namespace
}

// NewTracer returns a Tracer for the process's network namespace, or the one
// given with WithNetNSFd (whose fd must stay open while the Tracer is used). It
// fails if nftables cannot be reached there.
func NewTracer(opts ...Option) (*Tracer, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.netnsFd < 0 {
		return nil, fmt.Errorf("nft: invalid network namespace fd %d", o.netnsFd)
	}
	t := &Tracer{netnsFd: o.netnsFd}
	conn, err := nftables.New(t.connOptions()...)
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	if _, err := conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("nft: reach nftables: %w", err)
	}
	return t, nil
}

// connOptions are the options of a google/nftables connection to the namespace.
func (t *Tracer) connOptions() []nftables.ConnOption {
	if t.netnsFd > 0 {
		return []nftables.ConnOption{nftables.WithNetNSFd(t.netnsFd)}
	}
	return nil
}

// Trace traces the packets of probe p in the Tracer's namespace:
//
//  1. it subscribes to the kernel's trace events (NFNLGRP_NFTRACE);
//  2. it creates table inet podnet-trace, owned by its netlink socket, with
//     base chains at hooks prerouting and output, priority -350 (before
//     conntrack and NAT), whose one rule sets `meta nftrace` on p's packets;
//  3. it calls send, which must send p's packets and return when ctx is done;
//  4. it reads events until send has returned and no event of p's packets came
//     for 100 ms (at most 3 s more, and never past ctx);
//  5. it deletes the table, also on error or cancellation.
//
// It returns the events of the packets the table marked (by their trace ID),
// in arrival order, with interface names and hooks filled in; events of other
// traced packets are left out. The events of p's packets in table
// podnet-trace itself come first at each hook: they show the packet as it
// arrived. Trace does not return before send has.
//
// An invalid p gives an error matching ErrInvalid; a trace table already there
// gives ErrTraceBusy. When send fails (a refused connection is a valid probe
// result), ctx ends, or events were lost, Trace returns the events it has with
// the error, which wraps send's or ctx's. If the process dies mid-trace, the
// kernel deletes the table with its owning socket.
func (t *Tracer) Trace(ctx context.Context, p Probe, send func(context.Context) error) ([]TraceEvent, error) {
	p, err := p.normalize()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nft: trace %v: %w", p, err)
	}
	l, err := listenTrace(t.netnsFd)
	if err != nil {
		return nil, err
	}
	defer l.close() // no-op after the close below; here for a panic in send
	tt, err := createTraceTable(t.netnsFd, p)
	if err != nil {
		return nil, err
	}
	defer tt.closeSocket() // likewise: the kernel drops the table with it

	var errs []error
	if err := send(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nft: trace %v: send probe: %w", p, err))
	}
	if err := l.settle(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nft: trace %v: %w", p, err))
	}
	events, err := l.close()
	errs = append(errs, err)
	// The chains are listed while the trace table is still there.
	hooks, err := baseChainHooks(t.connOptions())
	errs = append(errs, err)
	errs = append(errs, tt.delete())
	setHooks(events, hooks)
	errs = append(errs, resolveInterfaces(t.netnsFd, events))
	return events, errors.Join(errs...)
}

// Cleanup deletes table inet podnet-trace, left behind by a process that did not
// own its table. A missing table is not an error; a table owned by a running
// trace (of another process) is not deleted and gives ErrTraceBusy.
func (t *Tracer) Cleanup() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	conn, err := nftables.New(t.connOptions()...)
	if err != nil {
		return fmt.Errorf("nft: open netlink: %w", err)
	}
	conn.DelTable(traceTableRef())
	switch err := conn.Flush(); {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("nft: delete table inet %s: %w: %w", TraceTableName, ErrTraceBusy, err)
	default:
		return fmt.Errorf("nft: delete table inet %s: %w", TraceTableName, err)
	}
}

// chainKey names a chain across the namespace's tables.
type chainKey struct{ family, table, chain string }

// baseChainHooks returns the hook of every base chain in the namespace.
func baseChainHooks(copts []nftables.ConnOption) (map[chainKey]string, error) {
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, fmt.Errorf("nft: trace: list chains for their hooks: %w", err)
	}
	hooks := map[chainKey]string{}
	for _, c := range chains {
		if c.Table != nil && c.Hooknum != nil {
			f := uint8(c.Table.Family)
			hooks[chainKey{familyName(f), c.Table.Name, c.Name}] = hookName(f, uint32(*c.Hooknum))
		}
	}
	return hooks, nil
}

// setHooks fills in the Hook of each event: the hook of its chain if that is a
// base chain, else the hook of the base chain the same packet was last seen in
// (a regular chain runs only when a base chain jumped to it, and that jump was
// an event first).
func setHooks(events []TraceEvent, hooks map[chainKey]string) {
	current := map[uint32]string{} // by trace ID
	for i := range events {
		e := &events[i]
		if h, ok := hooks[chainKey{e.Family, e.Table, e.Chain}]; ok {
			current[e.ID] = h
		}
		e.Hook = current[e.ID]
	}
}

// resolveInterfaces fills in the interface names of events from their indexes,
// keeping an index that the namespace does not know as its number.
func resolveInterfaces(netnsFd int, events []TraceEvent) error {
	var names map[uint32]string
	var err error
	for i := range events {
		e := &events[i]
		if e.IifIndex == 0 && e.OifIndex == 0 {
			continue
		}
		if names == nil {
			if names, err = linkNames(netnsFd); err != nil {
				err = fmt.Errorf("nft: trace: interface names: %w", err)
				names = map[uint32]string{}
			}
		}
		e.Iif, e.Oif = ifName(names, e.IifIndex), ifName(names, e.OifIndex)
	}
	return err
}

func ifName(names map[uint32]string, index uint32) string {
	if index == 0 {
		return ""
	}
	if n, ok := names[index]; ok {
		return n
	}
	return strconv.FormatUint(uint64(index), 10)
}

// linkNames returns the names of the namespace's links by index.
func linkNames(netnsFd int) (map[uint32]string, error) {
	c, err := rtnetlink.Dial(&netlink.Config{NetNS: netnsFd})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, err
	}
	names := make(map[uint32]string, len(links))
	for _, l := range links {
		if l.Attributes != nil {
			names[l.Index] = l.Attributes.Name
		}
	}
	return names, nil
}
