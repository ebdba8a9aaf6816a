package benchsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"syscall"

	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/nft"
)

// probeNames are the last services of every generated file, backed by real
// pods that accept connections: probe-local by four pods on the measured node,
// probe-remote by four on the peer, probe-all by two of each. probe-all is the
// very last service, so its elements in the kernel mean the whole file is in
// (a sync is one transaction).
var probeNames = []string{"probe-local", "probe-remote", "probe-all"}

// env is the lab the benchmark measures: node1 runs the podnetd under test;
// node2 is its peer, whose podnetd is stopped once its pods are attached (its
// routes and pods stay), so that it does not program the services too and
// compete for the CPUs.
type env struct {
	cfg           Config
	out           io.Writer
	lab           *lab.Lab
	node, peer    *lab.Node
	nodes         []NodeSpec
	client        *lab.Pod
	local, remote []*lab.Pod // 4 each
	srv           *servers
	k             *kernel
}

func nodeSpec(n *lab.Node) NodeSpec { return NodeSpec{Name: n.Name, Addr: n.Addr, PodCIDR: n.PodCIDR} }

// setUp brings up the lab with its pods and their servers. On error the
// returned env, when not nil, still needs tearDown.
func setUp(ctx context.Context, cfg Config, out io.Writer) (*env, error) {
	l, err := lab.Up(ctx, lab.Options{Nodes: 2, BinDir: cfg.BinDir, WorkDir: filepath.Join(cfg.WorkDir, "lab")})
	if l == nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	e := &env{cfg: cfg, out: out, lab: l}
	if err != nil {
		return e, fmt.Errorf("lab up: %w", err)
	}
	e.node, e.peer = l.Nodes[0], l.Nodes[1]
	e.nodes = []NodeSpec{nodeSpec(e.node), nodeSpec(e.peer)}
	if e.client, err = l.AddPod(ctx, e.node, "svc-client"); err != nil {
		return e, err
	}
	for i := range 4 {
		p, err := l.AddPod(ctx, e.node, fmt.Sprintf("svc-l%d", i+1))
		if err != nil {
			return e, err
		}
		e.local = append(e.local, p)
		if p, err = l.AddPod(ctx, e.peer, fmt.Sprintf("svc-r%d", i+1)); err != nil {
			return e, err
		}
		e.remote = append(e.remote, p)
	}
	l.StopDaemon(e.peer, syscall.SIGTERM)
	if e.srv, err = serve(append(append([]*lab.Pod{}, e.local...), e.remote...)); err != nil {
		return e, err
	}
	if e.k, err = dialKernel(e.node.NS); err != nil {
		return e, err
	}
	fmt.Fprintf(out, "▸ lab up: %s runs the podnetd under test; client pod %s, endpoint pods %s… on %s and %s… on %s\n",
		e.node.Name, e.client.IP, e.local[0].IP, e.node.Name, e.remote[0].IP, e.peer.Name)
	return e, nil
}

// services returns n generated services whose last ones are the probes.
func (e *env) services(n int) []ServiceSpec {
	svcs := GenServices(n, e.nodes[0], e.nodes[1])
	eps := func(pods ...*lab.Pod) []EndpointSpec {
		var out []EndpointSpec
		for _, p := range pods {
			out = append(out, EndpointSpec{Addr: p.IP, Node: p.Node.Name})
		}
		return out
	}
	probes := [][]EndpointSpec{
		eps(e.local...),
		eps(e.remote...),
		eps(e.local[0], e.local[1], e.remote[0], e.remote[1]),
	}
	for i, name := range probeNames {
		s := &svcs[n-len(probeNames)+i]
		s.Name, s.Endpoints = name, probes[i]
	}
	return svcs
}

// daemonLog is the log of the podnetd measured with n services.
func (e *env) daemonLog(n int) string {
	return filepath.Join(e.node.Dir, fmt.Sprintf("podnetd-bench-%d.log", n))
}

// The probes' positions among n services.
func probeLocal(n int) int  { return n - 3 }
func probeRemote(n int) int { return n - 2 }
func probeAll(n int) int    { return n - 1 }

// resetTable deletes table inet podnet on the measured node, so that the next
// daemon start programs it from nothing.
func (e *env) resetTable() error {
	t, err := nft.New(nft.WithNetNSFd(e.node.NS.Fd()))
	if err != nil {
		return err
	}
	return t.Cleanup()
}

// tearDown stops the daemon under test, restores a cluster file without
// services and both nodes' ordinary daemons, so that lab.Down can delete every
// pod through CNI DEL, then takes the lab down.
func (e *env) tearDown(ctx context.Context) error {
	if e.srv != nil {
		e.srv.stop()
	}
	if e.k != nil {
		e.k.Close()
	}
	if e.node == nil {
		return e.lab.Down(ctx)
	}
	e.lab.StopDaemon(e.node, syscall.SIGTERM)
	errs := []error{e.resetTable(), e.lab.WriteClusterFile()}
	for _, n := range []*lab.Node{e.node, e.peer} {
		if n.Daemon != nil {
			continue
		}
		if err := e.lab.StartDaemon(n); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, e.lab.WaitReady(ctx, n))
	}
	errs = append(errs, e.lab.Down(ctx))
	return errors.Join(errs...)
}

func addrPorts(port uint16, pods ...*lab.Pod) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range pods {
		out = append(out, netip.AddrPortFrom(p.IP, port))
	}
	return out
}
