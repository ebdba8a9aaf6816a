// Package lab builds a sandboxed multi-node podnet cluster: nodes and pods are
// network namespaces inside the caller's sandbox, each node runs its own podnetd,
// and pods are attached through libcni exactly as a container runtime does.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/sandbox"
	"github.com/podnet/podnet/routing"
)

// Options shape a lab.
type Options struct {
	Nodes       int    // default 3
	PodsPerNode int    // pods the caller adds per node (Run uses it)
	BinDir      string // holds podnetd and podnet (the CNI plugin)
	WorkDir     string // per-node sockets, state, CNI dirs and logs
	Log         io.Writer
	// Source is where the daemons read the cluster state; "" is SourceFile.
	// With SourceKube, Up starts a control plane (kube-apiserver from
	// kube.Binary: build it before the sandbox with kube.Prepare).
	Source Source
	// RBACFile is the manifest a SourceKube lab's podnetds act under; empty:
	// RBACFile in the repository at or above the working directory.
	RBACFile string
}

// Lab is a running cluster inside the sandbox.
type Lab struct {
	Opts  Options
	Nodes []*Node
	Pods  []*Pod
	// Services are the services WriteClusterFile lists; ApplyServices sets
	// them.
	Services []Service
	src      source
	cni      *cniRuntime
	servers  []*svcServer
}

// Node is one node: a namespace on the underlay with its own podnetd.
type Node struct {
	Name    string
	NS      *sandbox.NetNS
	Addr    netip.Addr
	PodCIDR netip.Prefix
	Dir     string
	Daemon  *exec.Cmd
	// Source is the source of cluster state podnetd reported when it was
	// last ready ("file:<path>", "kube:<server>").
	Source string
}

// Socket is the node's podnetd socket.
func (n *Node) Socket() string { return filepath.Join(n.Dir, "podnet.sock") }

// ConfDir is the node's CNI config dir.
func (n *Node) ConfDir() string { return filepath.Join(n.Dir, "net.d") }

// Gateway is the node's bridge address.
func (n *Node) Gateway() netip.Addr { return n.PodCIDR.Addr().Next() }

func (l *Lab) logf(format string, a ...any) {
	if l.Opts.Log != nil {
		fmt.Fprintf(l.Opts.Log, format+"\n", a...)
	}
}

// Up creates the underlay, the nodes, the source of cluster state (with
// SourceKube, a control plane holding the Nodes) and the daemons, and waits
// until every daemon has written its CNI config. It must run inside a
// sandbox. On failure it returns what it made, for Down.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if !sandbox.Inside() {
		return nil, fmt.Errorf("lab: not inside a sandbox")
	}
	var err error
	if o.Source, err = ParseSource(string(o.Source)); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	l := &Lab{Opts: o}
	if err := l.underlay(); err != nil {
		return l, err
	}
	for i := 1; i <= o.Nodes; i++ {
		n := &Node{
			Name:    fmt.Sprintf("node%d", i),
			Addr:    netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			Dir:     filepath.Join(o.WorkDir, fmt.Sprintf("node%d", i)),
		}
		if err := l.addNode(n); err != nil {
			return l, fmt.Errorf("%s: %w", n.Name, err)
		}
		l.Nodes = append(l.Nodes, n)
	}
	switch o.Source {
	case SourceKube:
		k, err := l.startKube(ctx)
		if err != nil {
			return l, err
		}
		l.src = k
	default:
		l.src = fileSource{l.ClusterFile()}
	}
	if err := l.src.publish(ctx, l.Nodes, l.Services); err != nil {
		return l, err
	}
	for _, n := range l.Nodes {
		if err := l.StartDaemon(n); err != nil {
			return l, err
		}
	}
	for _, n := range l.Nodes {
		if err := l.WaitReady(ctx, n); err != nil {
			return l, err
		}
	}
	l.cni = newCNIRuntime(o.BinDir, filepath.Join(o.WorkDir, "cni-cache"))
	return l, nil
}

// underlay creates bridge "underlay" in the sandbox's own namespace.
func (l *Lab) underlay() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: "underlay", Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &driver.Bridge{}},
	}})
	if err != nil && !errors.Is(err, unix.EEXIST) { // a previous lab in this sandbox left it
		return fmt.Errorf("underlay bridge: %w", err)
	}
	return sandbox.SetLinkUp(-1, "underlay")
}

// addNode creates the node namespace, wired to the underlay by a veth whose
// node end is eth0 with the node address.
func (l *Lab) addNode(n *Node) error {
	ns, err := sandbox.NewNetNS(n.Name)
	if err != nil {
		return err
	}
	n.NS = ns
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	return sandbox.Uplink(ns, "u-"+n.Name, "underlay", netip.PrefixFrom(n.Addr, 24))
}

// ClusterFile is the standalone cluster file every node's daemon reads.
func (l *Lab) ClusterFile() string { return filepath.Join(l.Opts.WorkDir, "cluster.yaml") }

// WriteClusterFile writes the nodes and the lab's Services to ClusterFile,
// replacing it atomically: the daemons poll it and never see half a file.
// The daemons of a SourceKube lab do not read it.
func (l *Lab) WriteClusterFile() error {
	return fileSource{l.ClusterFile()}.publish(context.Background(), l.Nodes, l.Services)
}

// source is where the lab publishes its cluster state: the cluster file
// unless Up started another.
func (l *Lab) source() source {
	if l.src == nil {
		return fileSource{l.ClusterFile()}
	}
	return l.src
}

// SourceDescription says where the lab's daemons read the cluster state
// ("reading the cluster file", "reading the API server at https://…").
func (l *Lab) SourceDescription() string { return l.source().describe() }

// StartDaemon starts podnetd inside the node's namespace, logging to
// <dir>/podnetd.log.
func (l *Lab) StartDaemon(n *Node) error {
	logf, err := os.OpenFile(filepath.Join(n.Dir, "podnetd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--node-name", n.Name,
		"--socket", n.Socket(), "--state-dir", filepath.Join(n.Dir, "state"),
		"--cni-conf-dir", n.ConfDir(), "--cni-bin-dir", l.Opts.BinDir,
		"--log-level", "debug"}, l.source().daemonArgs()...)
	cmd := exec.Command(filepath.Join(l.Opts.BinDir, "podnetd"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.NS.Start(cmd); err != nil {
		logf.Close()
		return fmt.Errorf("start podnetd on %s: %w", n.Name, err)
	}
	logf.Close()
	n.Daemon = cmd
	return nil
}

// StopDaemon stops the node's podnetd with sig and waits for it.
func (l *Lab) StopDaemon(n *Node, sig syscall.Signal) {
	if n.Daemon == nil || n.Daemon.Process == nil {
		return
	}
	n.Daemon.Process.Signal(sig)
	done := make(chan struct{})
	go func() { n.Daemon.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.Daemon.Process.Kill()
		<-done
	}
	n.Daemon = nil
}

// WaitReady waits until the node's daemon reports ready and its conflist
// exists: up to 15 s, or 60 s with SourceKube, where podnetd first fills its
// caches from the API server.
func (l *Lab) WaitReady(ctx context.Context, n *Node) error {
	timeout := 15 * time.Second
	if l.Opts.Source == SourceKube {
		timeout = time.Minute
	}
	deadline := time.Now().Add(timeout)
	client := client.New(n.Socket(), 2*time.Second)
	var last error
	for time.Now().Before(deadline) {
		st, err := client.Status(ctx)
		if err == nil && st.Ready {
			if _, err := os.Stat(filepath.Join(n.ConfDir(), "10-podnet.conflist")); err == nil {
				n.Source = st.Source
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: podnetd not ready after %s (last error: %v); see %s", n.Name, timeout, last, filepath.Join(n.Dir, "podnetd.log"))
}

// Down deletes every pod through CNI DEL, stops the daemons and the source
// (a control plane), and removes the namespaces. It returns the first error
// but always finishes.
func (l *Lab) Down(ctx context.Context) error {
	first := l.DelAllPods(ctx)
	for _, n := range l.Nodes {
		l.StopDaemon(n, syscall.SIGTERM)
		if n.NS != nil {
			n.NS.Delete()
		}
		// Remove the uplink now rather than when the kernel gets round to
		// destroying the namespace, so a new lab can reuse the name at once.
		sandbox.DeleteLink(-1, "u-"+n.Name)
	}
	if err := l.source().close(); err != nil && first == nil {
		first = err
	}
	return first
}

// PodLinks lists the host-side pod veths (podnet's "pn…" links) in service on
// the node, leaving out those a DEL retired that wait for podnet's reaper.
func (n *Node) PodLinks() ([]string, error) { return n.podLinks(false) }

// AllPodLinks lists every host-side pod veth, retired ones included.
func (n *Node) AllPodLinks() ([]string, error) { return n.podLinks(true) }

func (n *Node) podLinks(retired bool) ([]string, error) {
	c, err := n.NS.Dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		pending := l.Attributes.NetDevGroup != nil && *l.Attributes.NetDevGroup == routing.PendingGroup
		if strings.HasPrefix(l.Attributes.Name, "pn") && (retired || !pending) {
			out = append(out, l.Attributes.Name)
		}
	}
	return out, nil
}

// WaitNoPodLinks waits up to 3 s for every pod veth, retired ones included, to
// be gone, and returns those still there.
func (n *Node) WaitNoPodLinks() ([]string, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		links, err := n.AllPodLinks()
		if err != nil || len(links) == 0 || time.Now().After(deadline) {
			return links, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
