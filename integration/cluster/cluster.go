// Package cluster runs a real Kubernetes cluster inside one sandbox for the
// end-to-end tests (issue 6): the control plane in the sandbox's own namespaces
// (etcd and kube-apiserver from integration/kube, kube-controller-manager
// allocating podCIDRs, kube-scheduler), and N nodes, each a network namespace on
// an underlay bridge with a mount namespace of its own, its own containerd
// (Debian's 1.6, cgroupfs) and its own kubelet v1.37.2. podnet is the only
// network component: its DaemonSet from deploy/kubernetes/ installs the CNI
// plugin and conflist on every node and proxies Services (no kube-proxy), and
// CoreDNS from deploy/e2e/ serves cluster DNS behind it. No image is pulled:
// `make images` builds them as tarballs, imported into every containerd.
//
// Nothing outside the sandbox changes, with one exception kept as small as
// possible: kubelet and runc need the machine's cgroup v1 hierarchies, where
// each node gets a cgroup root of its own (removed by Down). Kubelet checks the
// machine-wide sysctls it cares about (protectKernelDefaults) against values the
// node sees through bind mounts, and never writes them; what a node writes
// under /etc, /opt and /var/lib lands in its own directory (overlays). docs/e2e.md
// has the flags, the reasons and the timings.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// UnderlayBridge is the bridge in the sandbox's own namespace that connects
// the control plane and the nodes.
const UnderlayBridge = "e2e0"

// Options configures Up. The zero value of each field means its default.
type Options struct {
	// Nodes is the number of nodes, named node1, node2, ...; default 2.
	Nodes int
	// Underlay is the underlay network; the control plane has its first address
	// (on UnderlayBridge), node i the address 10+i. Default 10.250.0.0/24.
	Underlay netip.Prefix
	// ClusterCIDR is kube-controller-manager's --cluster-cidr (a /24 per node);
	// default 10.244.0.0/16.
	ClusterCIDR netip.Prefix
	// ServiceCIDR is the --service-cluster-ip-range; default 10.96.0.0/16.
	ServiceCIDR netip.Prefix
	// ClusterDNS is kubelet's clusterDNS; default the tenth address of ServiceCIDR,
	// the kube-dns Service's ClusterIP in deploy/e2e/coredns.yaml.
	ClusterDNS netip.Addr
	// Snapshotter is containerd's snapshotter: overlayfs (default) or native.
	Snapshotter string
	// ImageSet is the images `make images` built; nil: LoadImages(ImageCacheDir()).
	ImageSet *ImageSet
	// Images are the names of the images imported into every node's containerd
	// besides pause, podnet and CoreDNS; nil: every image of ImageSet.
	Images []string
	// RepoDir is the repository whose deploy/ manifests are applied; default
	// kube.RepoRoot() (found above the working directory).
	RepoDir string
	// Binaries are the programs to run; see Binaries.
	Binaries Binaries
	// StartTimeout bounds Up; default 3 minutes.
	StartTimeout time.Duration
	// Required makes ForTest fail, not skip, when the cluster cannot run
	// (not root, binaries or images missing): for runs that were asked for.
	Required bool
	// Network is the cluster's network: NetworkPodnet (default: podnet's
	// DaemonSet is the CNI plugin and the service proxy) or NetworkReference
	// (the reference CNI plugins and kube-proxy in nftables mode, the stack
	// podnet replaces; see reference.go).
	Network string
}

func (o *Options) setDefaults() error {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if !o.Underlay.IsValid() {
		o.Underlay = netip.MustParsePrefix("10.250.0.0/24")
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	}
	if !o.ClusterDNS.IsValid() {
		a := o.ServiceCIDR.Addr()
		for range 10 {
			a = a.Next()
		}
		o.ClusterDNS = a
	}
	if o.Snapshotter == "" {
		o.Snapshotter = "overlayfs"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.Network == "" {
		o.Network = NetworkPodnet
	}
	var err error
	if o.ImageSet == nil {
		if o.ImageSet, err = LoadImages(ImageCacheDir()); err != nil {
			return err
		}
	}
	if o.RepoDir == "" {
		if o.RepoDir, err = kube.RepoRoot(); err != nil {
			return err
		}
	}
	return nil
}

// Validate reports the first option Up cannot run with.
func (o *Options) Validate() error {
	if o.Nodes < 1 || o.Nodes > 200 {
		return fmt.Errorf("nodes %d: between 1 and 200", o.Nodes)
	}
	if !o.Underlay.Addr().Is4() || o.Underlay.Bits() > 24 {
		return fmt.Errorf("underlay %s: an IPv4 prefix of /24 or wider", o.Underlay)
	}
	if o.Snapshotter != "overlayfs" && o.Snapshotter != "native" {
		return fmt.Errorf("snapshotter %q: overlayfs or native", o.Snapshotter)
	}
	if !o.ServiceCIDR.Contains(o.ClusterDNS) {
		return fmt.Errorf("cluster DNS %s: not in the service range %s", o.ClusterDNS, o.ServiceCIDR)
	}
	if o.Network != NetworkPodnet && o.Network != NetworkReference {
		return fmt.Errorf("network %q: %s or %s", o.Network, NetworkPodnet, NetworkReference)
	}
	if err := o.Binaries.check(o.Network); err != nil {
		return err
	}
	return nil
}

// Cluster is a running control plane and its nodes. Down ends it.
type Cluster struct {
	// Dir holds the control plane's files (controlplane/), each node's
	// (nodes/<name>/) and the sandbox's hosts file.
	Dir string
	// CP is etcd and kube-apiserver; CP.Client is an admin clientset.
	CP    *kube.ControlPlane
	Nodes []*Node
	// Steps are the bring-up's steps with the time since Up started at the end
	// of each, for logs and docs/e2e.md.
	Steps []Step

	opts       Options
	bins       Binaries
	images     *ImageSet
	pki        *kubeletPKI
	cp         *kube.ControlPlane
	nodeTokens map[string]kube.Token
	kcm        *sandbox.Process
	scheduler  *sandbox.Process
	// proxyToken is kube-proxy's identity (NetworkReference only).
	proxyToken kube.Token
	hostsBound bool
	start      time.Time
}

// Step is one finished step of Up and when it finished, counted from Up's start.
type Step struct {
	Name string
	At   time.Duration
}

func (c *Cluster) mark(name string) {
	c.Steps = append(c.Steps, Step{Name: name, At: time.Since(c.start)})
}

// controlPlaneAddr is the API server's address on the underlay.
func (c *Cluster) controlPlaneAddr() netip.Addr { return c.opts.Underlay.Addr().Next() }

// apiServerURL is the API server as the nodes reach it.
func (c *Cluster) apiServerURL() string {
	return "https://" + c.controlPlaneAddr().String() + ":" + strconv.Itoa(c.cp.Port)
}

// hostsFile is the sandbox's /etc/hosts (bindHosts).
func (c *Cluster) hostsFile() string { return filepath.Join(c.Dir, "hosts") }

// procs are the cluster's long-running processes, for waits that should stop
// when one of them dies.
func (c *Cluster) procs() []*sandbox.Process {
	ps := []*sandbox.Process{c.kcm, c.scheduler}
	for _, n := range c.Nodes {
		ps = append(ps, n.containerd, n.kubelet)
		if n.kubeProxy != nil {
			ps = append(ps, n.kubeProxy)
		}
	}
	return ps
}

// Up brings up the control plane and the nodes under dir (which must exist),
// inside a sandbox made with sandbox.EnterPID (it refuses to run outside one),
// deploys podnet and CoreDNS, and waits until every Node is Ready, podnet runs
// ready on each and CoreDNS is available. With Options.Network
// NetworkReference, the reference CNI plugins and kube-proxy take podnet's
// place (startReference). On failure it tears down what it started. Down must
// be called once the caller is done.
func Up(ctx context.Context, dir string, opts Options) (_ *Cluster, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if !sandbox.Inside() {
		return nil, errors.New("cluster: not inside a sandbox (sandbox.EnterPID, or MainPID from TestMain)")
	}
	tarballs, err := opts.ImageSet.Tarballs(opts.Images)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	c := &Cluster{Dir: dir, opts: opts, bins: opts.Binaries, images: opts.ImageSet,
		nodeTokens: map[string]kube.Token{}, start: time.Now()}
	defer func() {
		if err != nil {
			c.Down(context.Background())
		}
	}()
	runID := randomHex(4)
	var tokens []kube.Token
	for i := 1; i <= opts.Nodes; i++ {
		name := "node" + strconv.Itoa(i)
		addr := opts.Underlay.Addr()
		for range 10 + i {
			addr = addr.Next()
		}
		c.Nodes = append(c.Nodes, &Node{
			Name: name, Addr: addr, Dir: filepath.Join(dir, "nodes", name),
			cgroupRoot: "/podnet-e2e." + runID + "." + name,
		})
		c.nodeTokens[name] = kube.NodeToken(name)
		tokens = append(tokens, c.nodeTokens[name])
	}
	if opts.Network == NetworkReference {
		c.proxyToken = kube.NewToken(kubeProxyUser)
		tokens = append(tokens, c.proxyToken)
	}
	if err := c.underlay(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := c.bindHosts(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if c.pki, err = newKubeletPKI(filepath.Join(dir, "controlplane", "kubelet-pki")); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := c.startControlPlane(ctx, tokens); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.mark("control plane")
	if err := c.deployAddons(ctx); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for _, n := range c.Nodes {
		if err := n.prepare(c); err != nil {
			return nil, fmt.Errorf("cluster: node %s: %w", n.Name, err)
		}
		if err := n.startHolder(ctx, c.hostsFile()); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if err := n.startContainerd(ctx, opts.Snapshotter); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	c.mark("containerd on every node")
	if err := c.importImages(ctx, tarballs); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.mark(fmt.Sprintf("%d image tarballs imported on every node", len(tarballs)))
	for _, n := range c.Nodes {
		if err := n.startKubelet(c); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitNode(ctx, n); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	c.mark("nodes registered with podCIDRs")
	if err := c.routePodCIDRs(ctx); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if opts.Network == NetworkReference {
		if err := c.startReference(ctx); err != nil {
			return nil, fmt.Errorf("cluster: %w\n%s", err, c.DebugState(context.Background()))
		}
	}
	if err := c.waitAddons(ctx); err != nil {
		return nil, fmt.Errorf("cluster: %w\n%s", err, c.DebugState(context.Background()))
	}
	return c, nil
}

// waitNode waits until n's Node exists with a podCIDR.
func (c *Cluster) waitNode(ctx context.Context, n *Node) error {
	return poll(ctx, "node "+n.Name+" registered with a podCIDR", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if len(node.Spec.PodCIDRs) == 0 {
			return false, errors.New("no podCIDR yet")
		}
		return true, nil
	}, n.kubelet, n.containerd, c.kcm)
}

// NodeReady reports whether the Node's Ready condition is True.
func NodeReady(node *corev1.Node) bool {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// underlay creates UnderlayBridge with the control plane's address.
func (c *Cluster) underlay() error {
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = conn.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: UnderlayBridge, Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &driver.Bridge{}},
	}})
	if err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	if err := sandbox.SetLinkUp(-1, UnderlayBridge); err != nil {
		return err
	}
	br, err := net.InterfaceByName(UnderlayBridge)
	if err != nil {
		return err
	}
	ip := net.IP(c.controlPlaneAddr().AsSlice())
	err = conn.Address.New(&rtnetlink.AddressMessage{
		Family: unix.AF_INET, PrefixLength: uint8(c.opts.Underlay.Bits()), Index: uint32(br.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD},
	})
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", ip, UnderlayBridge, err)
	}
	return nil
}

// bindHosts writes the sandbox's hosts file (localhost, the control plane as
// "control-plane", every node by name: the API server reaches kubelets by node
// name) and bind-mounts it over /etc/hosts in the sandbox's mount namespace,
// which the nodes' namespaces inherit.
func (c *Cluster) bindHosts() error {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	fmt.Fprintf(&b, "%s control-plane\n", c.controlPlaneAddr())
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "%s %s\n", n.Addr, n.Name)
	}
	path := c.hostsFile()
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(path, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind hosts file over /etc/hosts: %w", err)
	}
	c.hostsBound = true
	return nil
}

// Down stops every node, then the control plane, every process by its PID, and
// undoes the mounts and links Up made. It goes on after a failure and returns
// every error. Calling it again is a no-op.
func (c *Cluster) Down(ctx context.Context) error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.stop(ctx))
	}
	c.Nodes = nil
	errs = append(errs, c.scheduler.Stop(5*time.Second), c.kcm.Stop(5*time.Second))
	c.scheduler, c.kcm = nil, nil
	if c.cp != nil {
		errs = append(errs, c.cp.Stop())
		c.cp = nil
	}
	if c.hostsBound {
		if err := unix.Unmount("/etc/hosts", unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount /etc/hosts: %w", err))
		}
		c.hostsBound = false
	}
	errs = append(errs, sandbox.DeleteLink(-1, UnderlayBridge))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: down: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)
}
