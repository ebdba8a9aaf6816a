package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// Node is one kubelet + containerd node: a network namespace on the underlay
// bridge and a mount namespace of its own, held by a small init process.
type Node struct {
	// Name is the node's name (its Node object's, its network namespace's, and
	// the name the sandbox's hosts file resolves to Addr).
	Name string
	// Addr is the node's address on the underlay (eth0 in its namespace).
	Addr netip.Addr
	// Dir holds everything of the node: containerd's root and state, kubelet's
	// root dir, configs, logs (containerd.log, kubelet.log, log/ as /var/log).
	Dir string
	// NS is the node's network namespace.
	NS *sandbox.NetNS

	cgroupRoot string
	holder     *sandbox.Process // the node's mount-namespace holder (nodeInitScript)
	containerd *sandbox.Process
	kubelet    *sandbox.Process
	kubeProxy  *sandbox.Process // NetworkReference only
}

// ContainerdSocket is the node's containerd gRPC socket.
func (n *Node) ContainerdSocket() string {
	return filepath.Join(n.Dir, "containerd", "containerd.sock")
}

// CNIConfDir is the directory the node sees as /etc/cni/net.d, where
// containerd reads CNI configs and podnetd writes its conflist.
func (n *Node) CNIConfDir() string { return filepath.Join(n.Dir, "cni", "net.d") }

// CNIBinDir is the directory the node sees as /opt/cni/bin, where containerd
// runs CNI plugins from and podnetd installs its plugin.
func (n *Node) CNIBinDir() string { return filepath.Join(n.Dir, "cni", "bin") }

// Exec runs name with args inside the node's network and mount namespaces and
// returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	if n.holder == nil || n.holder.Exited() {
		return nil, fmt.Errorf("node %s: not running", n.Name)
	}
	full := append([]string{"--target", strconv.Itoa(n.holder.PID()), "--net", "--mount", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("node %s: %s: %w: %s", n.Name, name, err, out)
	}
	return out, nil
}

// prepare writes the node's directories and files and creates its network
// namespace on the underlay.
func (n *Node) prepare(c *Cluster) error {
	dirs := []string{"containerd", "kubelet", "log", "sysctl", "volume-plugins", n.CNIConfDir(), n.CNIBinDir()}
	for _, d := range []string{"etc", "opt", "var/lib"} {
		dirs = append(dirs, filepath.Join("overlay", d, "upper"), filepath.Join("overlay", d, "work"))
	}
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			d = filepath.Join(n.Dir, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	cgroups, err := cgroupMounts()
	if err != nil {
		return err
	}
	cert, key, err := c.pki.servingCert(n.Name, n.Addr)
	if err != nil {
		return err
	}
	kf := kubeletFiles{cert: cert, key: key, clientCA: c.pki.CAFile}
	files := map[string]string{
		"cgroups":                cgroups,
		"resolv.conf":            "nameserver " + c.opts.ClusterDNS.String() + "\nsearch cluster.local\n",
		"containerd/config.toml": n.containerdConfig(c.opts.Snapshotter),
		"kubelet.yaml":           n.kubeletConfig(kf, c.opts.ClusterDNS.String()),
	}
	for k, v := range protectedSysctls {
		files[filepath.Join("sysctl", k)] = v + "\n"
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(data), 0o644); err != nil {
			return err
		}
	}
	plugins := []string{"loopback"}
	if c.opts.Network == NetworkReference {
		plugins = append(plugins, referencePlugins...)
	}
	if err := n.installCNIPlugins(c.bins.CNIPlugins, plugins...); err != nil {
		return err
	}
	if err := c.cp.WriteKubeconfig(filepath.Join(n.Dir, "kubeconfig"), c.apiServerURL(), c.nodeTokens[n.Name].Token); err != nil {
		return err
	}
	ns, err := sandbox.NewNetNS(n.Name)
	if err != nil {
		return err
	}
	n.NS = ns
	return sandbox.Uplink(ns, "u-"+n.Name, UnderlayBridge, netip.PrefixFrom(n.Addr, c.opts.Underlay.Bits()))
}

// startHolder starts nodeInitScript in a new mount namespace inside the node's
// network namespace and waits until it has prepared the mounts.
func (n *Node) startHolder(ctx context.Context, hostsFile string) error {
	logPath := filepath.Join(n.Dir, "init.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("/bin/sh", "-c", nodeInitScript, "node-init", n.Dir, n.cgroupRoot, hostsFile)
	cmd.Dir = "/"
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := n.NS.Start(cmd); err != nil {
		return fmt.Errorf("node %s: init: %w", n.Name, err)
	}
	ready := make(chan bool, 1)
	p := sandbox.Track(n.Name+" init", logPath, cmd, func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	})
	n.holder = p
	select {
	case ok := <-ready:
		if !ok {
			<-p.Done()
			return fmt.Errorf("node %s: mount setup: %w", n.Name, p.ExitError())
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("node %s: mount setup: %w", n.Name, ctx.Err())
	}
}

// startContainerd starts the node's containerd and waits for its socket to answer.
func (n *Node) startContainerd(ctx context.Context, snapshotter string) error {
	var err error
	n.containerd, err = sandbox.StartProcess(n.Name+" containerd", n.holder.PID(), "containerd",
		[]string{"--config", filepath.Join(n.Dir, "containerd", "config.toml")}, filepath.Join(n.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	return poll(ctx, n.Name+": containerd", 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket(), "version").CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("ctr version: %w: %s", err, out)
		}
		return true, nil
	}, n.containerd)
}

// importImages imports docker-archive tarballs into the node's containerd,
// namespace k8s.io (the CRI plugin's), unpacked for the snapshotter.
func (n *Node) importImages(ctx context.Context, snapshotter string, tarballs []string) error {
	for _, img := range tarballs {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket(), "-n", "k8s.io",
			"images", "import", "--snapshotter", snapshotter, img).CombinedOutput()
		if err != nil {
			return fmt.Errorf("node %s: import %s: %w: %s", n.Name, img, err, out)
		}
	}
	return nil
}

// startKubelet starts the node's kubelet.
func (n *Node) startKubelet(c *Cluster) error {
	var err error
	n.kubelet, err = sandbox.StartProcess(n.Name+" kubelet", n.holder.PID(), c.bins.Kubelet, []string{
		"--config=" + filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig=" + filepath.Join(n.Dir, "kubeconfig"),
		"--root-dir=" + filepath.Join(n.Dir, "kubelet"),
		// Its default, /var/lib/kubelet/pki, would be the machine's (the node's
		// overlay catches it anyway); nothing is written there with the
		// certificate files of the config.
		"--cert-dir=" + filepath.Join(n.Dir, "kubelet", "pki"),
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.Addr.String(),
		"--v=2",
	}, filepath.Join(n.Dir, "kubelet.log"))
	return err
}

// stop ends everything of the node, by PID: kubelet and kube-proxy (if any),
// the processes in the node's cgroups (its containers), the shims of its
// containerd, containerd, then removes its cgroups and ends the mount-namespace
// holder, and deletes the network namespace. It goes on after a failure and returns every error.
func (n *Node) stop(ctx context.Context) error {
	var errs []error
	errs = append(errs, n.kubelet.Stop(10*time.Second), n.kubeProxy.Stop(10*time.Second))
	errs = append(errs, killNodeProcesses(n.cgroupRoot, n.ContainerdSocket()))
	errs = append(errs, n.containerd.Stop(10*time.Second))
	if n.holder != nil && !n.holder.Exited() {
		if _, err := n.Exec(ctx, "/bin/sh", "-c", nodeCleanupScript, "node-cleanup", n.Dir, n.cgroupRoot); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroups: %w", err))
		}
	}
	errs = append(errs, n.holder.Stop(5*time.Second))
	if n.NS != nil {
		errs = append(errs, n.NS.Delete(), sandbox.DeleteLink(-1, "u-"+n.Name))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}
