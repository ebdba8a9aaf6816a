package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Probe outcomes.
const (
	ProbeConnected   = "connected"   // TCP handshake completed (then closed)
	ProbeRefused     = "refused"     // TCP RST or ICMP port unreachable
	ProbeUnreachable = "unreachable" // ICMP host/net unreachable, or no route
	ProbeTimeout     = "timeout"     // no answer in time
	ProbeSent        = "sent"        // UDP: one datagram sent
)

// ProbeSpec is one probe: a new connection (TCP) or one datagram (UDP) from
// a network namespace to Dst.
type ProbeSpec struct {
	// NetNS is the path of the namespace to send from; empty: the Manager's.
	NetNS string
	// Src, when valid, is bound as the source address.
	Src     netip.Addr
	Dst     netip.AddrPort
	Proto   uint8 // unix.IPPROTO_TCP or IPPROTO_UDP
	Timeout time.Duration
}

// ProbeOutcome is what a probe saw: Result is one of the Probe* constants,
// Src the address and port it was sent from (the port tells its packets
// apart from other connections between the same addresses).
type ProbeOutcome struct {
	Result string
	Src    netip.AddrPort
}

// Prober sends probes; *Manager implements it.
type Prober interface {
	Probe(ctx context.Context, p ProbeSpec) (ProbeOutcome, error)
}

var _ Prober = (*Manager)(nil)

// Probe sends one probe and returns its outcome (Probe* constants). The
// socket is created inside the namespace on a locked OS thread that switches
// back at once; the connect runs on any thread (a socket keeps the namespace
// it was created in). The attempt is bounded by p.Timeout (at most 5 s) and
// ctx. The error is for probes that could not be sent at all.
func (m *Manager) Probe(ctx context.Context, p ProbeSpec) (ProbeOutcome, error) {
	if p.Proto != unix.IPPROTO_TCP && p.Proto != unix.IPPROTO_UDP {
		return ProbeOutcome{}, fmt.Errorf("probe: protocol %d not supported (tcp, udp)", p.Proto)
	}
	nsPath := p.NetNS
	var nsFd int = -1
	if nsPath != "" {
		f, err := openNetNS(nsPath)
		if err != nil {
			return ProbeOutcome{}, err
		}
		defer f.Close()
		nsFd = int(f.Fd())
	} else if m.netnsFd >= 0 {
		nsFd = m.netnsFd
	}
	fd, err := socketIn(nsFd, p)
	if err != nil {
		return ProbeOutcome{}, err
	}
	defer unix.Close(fd)
	timeout := min(max(p.Timeout, 100*time.Millisecond), 5*time.Second)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), 10*time.Millisecond)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return ProbeOutcome{}, fmt.Errorf("probe: SO_SNDTIMEO: %w", err)
	}
	// Bound before sending, so the source port is known whatever happens.
	src := p.Src
	if !src.IsValid() {
		src = netip.IPv4Unspecified()
		if p.Dst.Addr().Is6() {
			src = netip.IPv6Unspecified()
		}
	}
	if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
		return ProbeOutcome{}, fmt.Errorf("probe: bind %s: %w", src, err)
	}
	var out ProbeOutcome
	if sa, err := unix.Getsockname(fd); err == nil {
		out.Src = addrPortOf(sa)
	}
	if p.Proto == unix.IPPROTO_UDP {
		out.Result = ProbeSent
		if err := unix.Sendto(fd, []byte("podnet trace probe\n"), 0, sockaddr(p.Dst)); err != nil {
			out.Result = classify(err)
		}
		return out, nil
	}
	out.Result = classify(unix.Connect(fd, sockaddr(p.Dst)))
	return out, nil
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func classify(err error) string {
	switch {
	case err == nil:
		return ProbeConnected
	case errors.Is(err, unix.ECONNREFUSED):
		return ProbeRefused
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return ProbeUnreachable
	case errors.Is(err, unix.EINPROGRESS), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ETIMEDOUT):
		return ProbeTimeout
	}
	return "error: " + err.Error()
}

// socketIn creates the probe's socket in the namespace open as nsFd (-1: this
// thread's own). The namespace switch happens on a locked thread that is
// switched back before it is unlocked; if switching back fails, the thread
// stays locked and dies with its goroutine.
func socketIn(nsFd int, p ProbeSpec) (int, error) {
	family := unix.AF_INET
	if p.Dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	typ := unix.SOCK_STREAM
	if p.Proto == unix.IPPROTO_UDP {
		typ = unix.SOCK_DGRAM
	}
	mk := func() (int, error) { return unix.Socket(family, typ|unix.SOCK_CLOEXEC, int(p.Proto)) }
	if nsFd < 0 {
		return mk()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("probe: own netns: %w", err)}
			return
		}
		defer self.Close()
		if err := unix.Setns(nsFd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("probe: setns: %w", err)}
			return
		}
		fd, err := mk()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return -1, fmt.Errorf("probe: socket: %w", r.err)
	}
	return r.fd, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
