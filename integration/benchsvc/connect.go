package benchsvc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/lab"
)

// servers accept TCP connections on TargetPort in each pod and close them at
// once. connect() returns on the SYN/ACK, before accept, so what the client
// times is the kernel's handshake; the accept loop only keeps the backlog empty.
type servers struct {
	lns []net.Listener
	wg  sync.WaitGroup
}

func serve(pods []*lab.Pod) (*servers, error) {
	s := &servers{}
	for _, p := range pods {
		var ln net.Listener
		err := p.NS.Do(func() (err error) {
			ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", TargetPort))
			return err
		})
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("listen in %s: %w", p.Name, err)
		}
		s.lns = append(s.lns, ln)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	return s, nil
}

func (s *servers) stop() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

// Target is one destination the client connects to, in turn over Addrs.
type Target struct {
	Name  string
	Addrs []netip.AddrPort
}

// connectTimeout bounds one connect(); a connect that takes it fails.
const connectTimeout = time.Second

// connectRound times connect() from the client pod to every target in turn,
// rounds times, after warmup untimed rounds: target A, B, C, …, A, B, C, …
// Interleaving spreads any drift of the machine's load evenly over the
// targets. It stops early, with an error, when deadline passes. Latencies are
// returned by target name, in call order.
func connectRound(client *lab.Pod, targets []Target, warmup, rounds int, deadline time.Time) (map[string]Sample, error) {
	out := map[string]Sample{}
	err := client.NS.Do(func() error {
		for r := range warmup + rounds {
			for _, t := range targets {
				if time.Now().After(deadline) {
					return fmt.Errorf("connect rounds: deadline passed after %d of %d rounds", r, warmup+rounds)
				}
				d, err := connectOnce(t.Addrs[r%len(t.Addrs)])
				if err != nil {
					return fmt.Errorf("connect to %s (%s): %w", t.Name, t.Addrs[r%len(t.Addrs)], err)
				}
				if r >= warmup {
					out[t.Name] = append(out[t.Name], d)
				}
			}
		}
		return nil
	})
	return out, err
}

// connectOnce times one blocking connect() from this thread's namespace. The
// socket is closed with a reset (SO_LINGER 0), so that thousands of connects
// leave no TIME_WAIT sockets behind to exhaust the ephemeral ports.
func connectOnce(dst netip.AddrPort) (time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return 0, err
	}
	// A blocking connect gives up after the send timeout (EINPROGRESS).
	tv := unix.NsecToTimeval(connectTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return 0, err
	}
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	start := time.Now()
	err = unix.Connect(fd, sa)
	if errors.Is(err, unix.EINTR) {
		// A signal (the Go runtime preempts with SIGURG) interrupted the
		// wait, not the handshake: wait for it to complete instead.
		err = awaitConnect(fd, start.Add(connectTimeout))
	}
	took := time.Since(start)
	if errors.Is(err, unix.EINPROGRESS) {
		return took, fmt.Errorf("no answer within %s", connectTimeout)
	}
	return took, err
}

// awaitConnect waits until a connect() in progress on fd completes, and
// returns its result; EINPROGRESS if deadline passes first.
func awaitConnect(fd int, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.EINPROGRESS
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}
