package lab

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// Journey names the kind of path a check exercises, as the article does.
type Journey string

// The journeys the matrix checks.
const (
	InsidePod       Journey = "inside a pod: container → container over lo"
	PodPodSameNode  Journey = "pod → pod, same node"
	PodPodCrossNode Journey = "pod → pod, across nodes"
	NodePod         Journey = "node → pod"
	PodNode         Journey = "pod → node"
)

// Check is one connection of the matrix.
type Check struct {
	Journey  Journey
	From, To string
	Dst      netip.AddrPort
	Want     []netip.Addr // source addresses the server may see
	Saw      netip.Addr
	Took     time.Duration
	Err      error
}

// OK reports whether the connection worked and the server saw a wanted source.
func (c Check) OK() bool {
	if c.Err != nil {
		return false
	}
	for _, w := range c.Want {
		if w == c.Saw {
			return true
		}
	}
	return false
}

type endpoint struct {
	name string
	ns   *sandbox.NetNS
	addr netip.Addr
	node *Node
	pod  bool
	lo   string // for a pod's loopback endpoint: the pod it belongs to
}

const probePort = 7777

// Matrix runs a TCP connection for every journey: every pod to every other pod,
// every node to every pod, every pod to every node. Each server reports the
// source address it saw; a pod source must be seen as its own pod IP (no NAT).
func (l *Lab) Matrix() ([]Check, error) {
	var eps []endpoint
	for _, n := range l.Nodes {
		eps = append(eps, endpoint{name: n.Name, ns: n.NS, addr: n.Addr, node: n})
	}
	for _, p := range l.Pods {
		eps = append(eps, endpoint{name: p.Name, ns: p.NS, addr: p.IP, node: p.Node, pod: true},
			endpoint{name: p.Name + " (lo)", ns: p.NS, addr: netip.MustParseAddr("127.0.0.1"), node: p.Node, pod: true, lo: p.Name})
	}
	stop, err := serve(eps)
	defer stop()
	if err != nil {
		return nil, err
	}
	var checks []Check
	for _, src := range eps {
		for _, dst := range eps {
			j, ok := journey(src, dst)
			if !ok {
				continue
			}
			c := Check{Journey: j, From: src.name, To: dst.name, Dst: netip.AddrPortFrom(dst.addr, probePort)}
			c.Want = []netip.Addr{src.addr}
			if dst.lo != "" { // two containers of one pod share its namespace and lo
				c.Want = []netip.Addr{dst.addr}
			}
			if !src.pod { // a node may use its bridge address towards its own pods
				c.Want = append(c.Want, src.node.Gateway())
			}
			c.Saw, c.Took, c.Err = probe(src.ns, c.Dst)
			checks = append(checks, c)
		}
	}
	return checks, nil
}

func journey(src, dst endpoint) (Journey, bool) {
	switch {
	case src.lo != "" || (dst.lo != "" && dst.lo != src.name):
		return "", false
	case dst.lo != "":
		return InsidePod, true
	case src.name == dst.name:
		return "", false
	case src.pod && dst.pod && src.node == dst.node:
		return PodPodSameNode, true
	case src.pod && dst.pod:
		return PodPodCrossNode, true
	case !src.pod && dst.pod:
		return NodePod, true
	case src.pod && !dst.pod:
		return PodNode, true
	}
	return "", false
}

// serve starts a TCP server on every endpoint that writes back the client
// address it saw, then closes.
func serve(eps []endpoint) (stop func(), err error) {
	var lns []net.Listener
	stop = func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, ep := range eps {
		var ln net.Listener
		addr := netip.AddrPortFrom(ep.addr, probePort).String()
		if err := ep.ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
			return stop, fmt.Errorf("listen on %s in %s: %w", addr, ep.name, err)
		}
		lns = append(lns, ln)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				conn.SetDeadline(time.Now().Add(3 * time.Second))
				fmt.Fprintf(conn, "%s\n", conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
				conn.Close()
			}
		}()
	}
	return stop, nil
}

// probe connects from ns to dst and returns the source address the server saw.
func probe(ns *sandbox.NetNS, dst netip.AddrPort) (netip.Addr, time.Duration, error) {
	var conn net.Conn
	start := time.Now()
	err := ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp", dst.String(), 3*time.Second); return })
	if err != nil {
		return netip.Addr{}, 0, err
	}
	took := time.Since(start)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return netip.Addr{}, took, fmt.Errorf("read: %w", err)
	}
	saw, err := netip.ParseAddr(strings.TrimSpace(line))
	return saw, took, err
}

// PrintMatrix writes the checks grouped by journey, and a summary line. It
// returns the number of failed checks.
func PrintMatrix(w io.Writer, checks []Check) int {
	failed := 0
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, j := range []Journey{InsidePod, PodPodSameNode, PodPodCrossNode, NodePod, PodNode} {
		fmt.Fprintf(tw, "\n%s\n", j)
		for _, c := range checks {
			if c.Journey != j {
				continue
			}
			mark, detail := "ok  ", fmt.Sprintf("server saw %s", c.Saw)
			if !c.OK() {
				failed++
				mark = "FAIL"
				if c.Err != nil {
					detail = c.Err.Error()
				} else {
					detail = fmt.Sprintf("server saw %s, want one of %v (NAT?)", c.Saw, c.Want)
				}
			}
			fmt.Fprintf(tw, "  %s\t%s → %s\t%s\t%s\t%.2f ms\n", mark, c.From, c.To, c.Dst, detail, float64(c.Took.Microseconds())/1000)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nconnectivity: %d passed, %d failed\n", len(checks)-failed, failed)
	return failed
}
