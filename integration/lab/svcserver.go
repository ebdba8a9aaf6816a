package lab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// serviceIdle is how long a service server waits for the next line of an
// open connection before closing it.
const serviceIdle = 30 * time.Second

// svcServer is a service's backend in one pod: every connection gets a first
// line "<pod name> <client address it saw>", then each line it sends is
// echoed back until it closes, so one connection can prove traffic in both
// directions long after it was opened.
type svcServer struct {
	name   string
	ln     net.Listener
	mu     sync.Mutex
	conn   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ServeService starts the service server on p's IP and port in p's namespace.
// It runs until the lab's pods are deleted (DelAllPods).
func (l *Lab) ServeService(p *Pod, port uint16) error {
	addr := netip.AddrPortFrom(p.IP, port).String()
	s := &svcServer{name: p.Name, conn: map[net.Conn]struct{}{}}
	if err := p.NS.Do(func() (err error) { s.ln, err = net.Listen("tcp", addr); return }); err != nil {
		return fmt.Errorf("listen on %s in %s: %w", addr, p.Name, err)
	}
	l.servers = append(l.servers, s)
	s.wg.Add(1)
	go s.accept()
	return nil
}

func (s *svcServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed { // accepted just before Close: Close did not see it
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conn[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(c)
	}
}

func (s *svcServer) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conn, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(serviceIdle))
	saw := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if _, err := fmt.Fprintf(c, "%s %s\n", s.name, saw); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
		c.SetDeadline(time.Now().Add(serviceIdle))
	}
}

// Close stops accepting, closes open connections and waits for the handlers.
func (s *svcServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// stopServers closes every service server of the lab.
func (l *Lab) stopServers() {
	for _, s := range l.servers {
		s.Close()
	}
	l.servers = nil
}

// ServiceConn is an open connection to a service server.
type ServiceConn struct {
	net.Conn
	r *bufio.Reader
	// Endpoint is the pod that accepted the connection, Saw the client
	// address it saw.
	Endpoint string
	Saw      netip.Addr
	timeout  time.Duration
}

// DialService connects from ns to dst and reads the server's first line.
// Dialling and every read or write are bounded by timeout.
func DialService(ns *sandbox.NetNS, dst netip.AddrPort, timeout time.Duration) (*ServiceConn, error) {
	var conn net.Conn
	if err := ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", dst.String(), timeout); return }); err != nil {
		return nil, err
	}
	c := &ServiceConn{Conn: conn, r: bufio.NewReader(conn), timeout: timeout}
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	name, addr, ok := strings.Cut(strings.TrimSpace(line), " ")
	if c.Saw, err = netip.ParseAddr(addr); !ok || err != nil {
		conn.Close()
		return nil, fmt.Errorf("bad greeting %q", line)
	}
	c.Endpoint = name
	return c, nil
}

// Echo sends msg (one line, without newline) and waits for the server to send
// it back: data crossed the connection in both directions.
func (c *ServiceConn) Echo(msg string) error {
	c.SetDeadline(time.Now().Add(c.timeout))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return fmt.Errorf("send %q: %w", msg, err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo of %q: %w", msg, err)
	}
	if got := strings.TrimSuffix(line, "\n"); got != msg {
		return fmt.Errorf("echo = %q, want %q", got, msg)
	}
	return nil
}

// ProbeService makes one connection from ns to dst and returns the endpoint
// that served it and the client address that endpoint saw.
func ProbeService(ns *sandbox.NetNS, dst netip.AddrPort, timeout time.Duration) (endpoint string, saw netip.Addr, err error) {
	c, err := DialService(ns, dst, timeout)
	if err != nil {
		return "", netip.Addr{}, err
	}
	c.Close()
	return c.Endpoint, c.Saw, nil
}
