package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// maxTraceEvents bounds the events one Trace keeps; later ones are counted as
// dropped and reported.
const maxTraceEvents = 4096

// traceReadBuffer is the receive buffer of the trace socket: the kernel drops
// events (ENOBUFS) when it is full, and other traced packets share it.
const traceReadBuffer = 4 << 20

// traceListener reads trace events from the kernel in a goroutine of its own, so
// that the socket is drained while send runs.
type traceListener struct {
	conn   *netlink.Conn
	notify chan struct{} // cap 1: an event of a probe packet arrived
	done   chan struct{} // closed when the reader ends

	mu        sync.Mutex
	events    []TraceEvent
	ours      map[uint32]bool // trace IDs seen in the trace table: the probe's packets
	dropped   int             // events beyond maxTraceEvents
	overruns  int             // ENOBUFS: the kernel dropped events
	decodeErr error           // the first message that did not decode
	readErr   error           // why reading stopped, unless closed
	closed    bool
}

// listenTrace subscribes to the trace events of the namespace.
func listenTrace(netnsFd int) (*traceListener, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFd})
	if err != nil {
		return nil, fmt.Errorf("nft: trace: open netlink: %w", err)
	}
	if err := forceReadBuffer(conn, traceReadBuffer); err != nil {
		conn.Close()
		return nil, err
	}
	if err := conn.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nft: trace: join NFNLGRP_NFTRACE: %w", err)
	}
	l := &traceListener{conn: conn, notify: make(chan struct{}, 1), done: make(chan struct{}), ours: map[uint32]bool{}}
	go l.read()
	return l, nil
}

// forceReadBuffer sets the socket's receive buffer, past net.core.rmem_max with
// CAP_NET_ADMIN (SO_RCVBUFFORCE), within it otherwise.
func forceReadBuffer(c *netlink.Conn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("nft: trace: socket: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("nft: trace: socket receive buffer: %w", err)
	}
	return nil
}

func (l *traceListener) read() {
	defer close(l.done)
	for {
		msgs, err := l.conn.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			l.mu.Lock()
			l.overruns++
			l.mu.Unlock()
			continue
		}
		if err != nil {
			l.mu.Lock()
			if !l.closed {
				l.readErr = err
			}
			l.mu.Unlock()
			return
		}
		for _, m := range msgs {
			l.add(m)
		}
	}
}

func (l *traceListener) add(m netlink.Message) {
	e, err := decodeTraceEvent(m)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if l.decodeErr == nil {
			l.decodeErr = err
		}
		return
	}
	// A probe's packet matches the one rule of a trace chain, which is
	// always an event: from then on its ID is known. Other packets that
	// someone else traces pass the trace chains too, but only as the
	// chain's end and policy.
	if isTraceMark(e) {
		l.ours[e.ID] = true
	}
	if len(l.events) >= maxTraceEvents {
		l.dropped++
		return
	}
	l.events = append(l.events, e)
	if l.ours[e.ID] {
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// settle waits until no event of the probe's packets arrived for traceSettle,
// at most traceSettleMax; it returns early with ctx's error, or the socket's.
func (l *traceListener) settle(ctx context.Context) error {
	quiet := time.NewTimer(traceSettle)
	defer quiet.Stop()
	limit := time.NewTimer(traceSettleMax)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.notify:
			quiet.Reset(traceSettle)
		case <-l.done: // the socket failed
			l.mu.Lock()
			defer l.mu.Unlock()
			return fmt.Errorf("read events: %w", cmp.Or(l.readErr, errors.New("reading stopped")))
		case <-quiet.C:
			return nil
		case <-limit.C:
			return nil
		}
	}
}

// close stops reading and returns the events of the probe's packets, in
// arrival order, with an error if events were lost or did not decode. Closing
// again returns nothing.
func (l *traceListener) close() ([]TraceEvent, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, nil
	}
	l.closed = true
	l.mu.Unlock()
	cerr := l.conn.Close() // unblocks Receive
	<-l.done

	l.mu.Lock()
	defer l.mu.Unlock()
	l.adoptRenamed()
	var events []TraceEvent
	for _, e := range l.events {
		if l.ours[e.ID] {
			events = append(events, e)
		}
	}
	var errs []error
	if cerr != nil {
		errs = append(errs, fmt.Errorf("nft: trace: close netlink: %w", cerr))
	}
	if l.overruns > 0 {
		errs = append(errs, fmt.Errorf("nft: trace: the kernel dropped events %d times (receive buffer full)", l.overruns))
	}
	if l.dropped > 0 {
		errs = append(errs, fmt.Errorf("nft: trace: %d events beyond the first %d dropped", l.dropped, maxTraceEvents))
	}
	if l.decodeErr != nil {
		errs = append(errs, fmt.Errorf("nft: trace: %w", l.decodeErr))
	}
	return events, errors.Join(errs...)
}

// adoptRenamed takes as the probe's the packets whose trace ID changed on
// the way: the kernel derives the ID from the packet's flow hash, which it may
// compute again after routing and NAT (a forwarded packet reaches postrouting
// under a new ID). Only the probe rule sets nftrace, so a traced packet from
// the source address and port of a marked one, in the same protocol, is one of
// the probe's. Call with l.mu held.
func (l *traceListener) adoptRenamed() {
	type flow struct {
		src   netip.Addr
		port  uint16
		proto uint8
	}
	flows := map[flow]bool{}
	for _, e := range l.events {
		if l.ours[e.ID] && e.HasPacket() {
			flows[flow{e.Src, e.SrcPort, e.Proto}] = true
		}
	}
	for _, e := range l.events {
		if !l.ours[e.ID] && e.HasPacket() && flows[flow{e.Src, e.SrcPort, e.Proto}] {
			l.ours[e.ID] = true
		}
	}
}

// isTraceMark reports whether e is the trace rule matching a probe's packet.
func isTraceMark(e TraceEvent) bool {
	return e.Family == "inet" && e.Table == TraceTableName && e.Type == "rule" && e.RuleHandle != 0
}
