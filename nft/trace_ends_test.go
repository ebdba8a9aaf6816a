package nft

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
)

// Kernel tests of how a Trace ends: the trace table always goes, a live one
// cannot be taken over, traces take turns, and late packets are collected for a
// bounded time.

// TestTraceEnds: the trace table goes when send fails, when ctx ends during
// send, and when the socket owning it closes without a delete (as when the
// process dies); a ctx already done sends nothing.
func TestTraceEnds(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-ends")
	tr := newTracer(t, ns)
	lo := tcpProbe("127.0.0.1", "127.0.0.1", 9)

	boom := errors.New("boom")
	if _, err := tr.Trace(traceCtx(t), lo, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("send fails: got %v, want %v", err, boom)
	}
	checkNoTraceTable(t, ns, "after send failed")

	// Cancelled while the probe's packets keep coming: without ctx, Trace
	// would read them for traceSettleMax.
	sendLater := udpSender(t, ns)
	stream := sendLater(int(2*traceSettleMax/(traceSettle/5)), traceSettle/5)
	ctx, cancel := context.WithCancel(traceCtx(t))
	var cancelled time.Time
	udp := Probe{Src: lo.Src, Dst: lo.Dst, Proto: unix.IPPROTO_UDP, DstPort: 9999}
	events, err := tr.Trace(ctx, udp, func(ctx context.Context) error {
		stream(ctx)
		time.Sleep(traceSettle) // some packets traced
		cancel()
		cancelled = time.Now()
		return nil
	})
	if !errors.Is(err, context.Canceled) || len(events) == 0 {
		t.Errorf("ctx cancelled: got %d events and %v, want the events so far and context.Canceled", len(events), err)
	}
	if took := time.Since(cancelled); took > traceSettleMax/3 {
		t.Errorf("Trace returned %v after ctx was cancelled", took)
	}
	checkNoTraceTable(t, ns, "after ctx was cancelled")

	ctx, cancel = context.WithTimeout(traceCtx(t), 200*time.Millisecond)
	defer cancel()
	_, err = tr.Trace(ctx, lo, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ctx deadline during send: got %v", err)
	}
	checkNoTraceTable(t, ns, "after ctx's deadline")

	sent := false
	if _, err := tr.Trace(ctx, lo, func(context.Context) error { sent = true; return nil }); !errors.Is(err, context.DeadlineExceeded) || sent {
		t.Errorf("ctx already done: got %v, send called: %v", err, sent)
	}

	tt, err := createTraceTable(ns.Fd(), lo)
	if err != nil {
		t.Fatal(err)
	}
	if out := nft(t, ns, "list", "tables"); !strings.Contains(out, TraceTableName) {
		t.Fatalf("table not created:\n%s", out)
	}
	if err := tt.closeSocket(); err != nil {
		t.Fatal(err)
	}
	checkNoTraceTable(t, ns, "after its socket closed")
}

// TestTraceBusy: a live trace's table cannot be taken over or deleted by
// another Tracer or by nft; a table left by someone else makes Trace fail until
// Cleanup.
func TestTraceBusy(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-busy")
	tr, other := newTracer(t, ns), newTracer(t, ns)
	lo := tcpProbe("127.0.0.1", "127.0.0.1", 9)

	_, err := tr.Trace(traceCtx(t), lo, func(ctx context.Context) error {
		sent := false
		if _, err := other.Trace(ctx, lo, func(context.Context) error { sent = true; return nil }); !errors.Is(err, ErrTraceBusy) || sent {
			t.Errorf("second Trace: got %v, send called: %v; want ErrTraceBusy", err, sent)
		}
		if err := other.Cleanup(); !errors.Is(err, ErrTraceBusy) {
			t.Errorf("Cleanup during a trace: got %v, want ErrTraceBusy", err)
		}
		if _, err := runNft(ns, "", "delete", "table", "inet", TraceTableName); err == nil {
			t.Error("nft deleted the table of a live trace")
		}
		if _, err := traceListing(ns); err != nil {
			t.Errorf("the live trace lost its table: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkNoTraceTable(t, ns, "after Trace")

	if _, err := runNft(ns, "", "add", "table", "inet", TraceTableName); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Trace(traceCtx(t), lo, func(context.Context) error { return nil }); !errors.Is(err, ErrTraceBusy) {
		t.Errorf("Trace with a leftover table: got %v, want ErrTraceBusy", err)
	}
	for i := range 2 { // the second time, the table is already gone
		if err := tr.Cleanup(); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	checkNoTraceTable(t, ns, "after Cleanup")
	if _, err := tr.Trace(traceCtx(t), lo, func(context.Context) error { return nil }); err != nil {
		t.Errorf("Trace after Cleanup: %v", err)
	}
}

// TestTraceSerialised: concurrent Traces on one Tracer take turns (each would
// find the other's table otherwise).
func TestTraceSerialised(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-serial")
	tr := newTracer(t, ns)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = tr.Trace(traceCtx(t), tcpProbe("127.0.0.1", "127.0.0.1", uint16(9+i)), func(context.Context) error {
				time.Sleep(50 * time.Millisecond) // long enough for the others to start
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Trace %d: %v", i, err)
		}
	}
	checkNoTraceTable(t, ns, "after the traces")
}

// TestTraceSettle: packets that come after send returned are collected while
// they keep coming, for at most traceSettleMax.
func TestTraceSettle(t *testing.T) {
	sandbox.Require(t)
	ns := sandbox.TestNetNS(t, "tr-settle")
	tr := newTracer(t, ns)
	lo := netip.MustParseAddr("127.0.0.1")
	p := Probe{Src: lo, Dst: lo, Proto: unix.IPPROTO_UDP, DstPort: 9999}
	sendLater := udpSender(t, ns)

	events, err := tr.Trace(traceCtx(t), p, sendLater(1, traceSettle/2))
	if err != nil {
		t.Fatal(err)
	}
	if n := countMarks(events); n == 0 {
		t.Errorf("a datagram sent %v after send returned was not traced", traceSettle/2)
	}

	start := time.Now()
	events, err = tr.Trace(traceCtx(t), p, sendLater(int(2*traceSettleMax/(traceSettle/5)), traceSettle/5))
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took < traceSettleMax || took > traceSettleMax+time.Second {
		t.Errorf("with a datagram every %v, Trace took %v, want a little over %v", traceSettle/5, took, traceSettleMax)
	}
	if n := countMarks(events); n < 10 {
		t.Errorf("%d datagrams traced in %v, want one every %v", n, took, traceSettle/5)
	}
	checkNoTraceTable(t, ns, "after the traces")
}

// countMarks counts the trace rule's events: one per packet and hook.
func countMarks(events []TraceEvent) int {
	n := 0
	for _, e := range events {
		if isTraceMark(e) {
			n++
		}
	}
	return n
}

// udpSender returns sendLater for datagrams from 127.0.0.1 to 127.0.0.1:9999 in
// ns. sendLater(n, gap) is a send that starts sending n datagrams in the
// background, one every gap, and returns at once; it waits for the datagrams
// of the previous call first. The sending stops when the test ends.
func udpSender(t *testing.T, ns *sandbox.NetNS) func(n int, gap time.Duration) func(context.Context) error {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.Dial("udp4", "127.0.0.1:9999"); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); wg.Wait(); c.Close() })
	return func(n int, gap time.Duration) func(context.Context) error {
		return func(context.Context) error {
			wg.Wait()
			wg.Go(func() {
				for range n {
					select {
					case <-stop:
						return
					case <-time.After(gap):
					}
					c.Write([]byte("?")) // nobody listens; an error is an ICMP that came back
				}
			})
			return nil
		}
	}
}
