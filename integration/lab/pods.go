package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/integration/sandbox"
)

// Pod is a network namespace attached to a node through CNI.
type Pod struct {
	Name        string
	Node        *Node
	NS          *sandbox.NetNS
	ContainerID string
	IP          netip.Addr
	Result      *current.Result
}

// cniRuntime calls plugins as containerd and CRI-O do: through libcni, with the
// conflist the node's daemon wrote and a result cache.
type cniRuntime struct {
	cfg *libcni.CNIConfig
}

func newCNIRuntime(binDir, cacheDir string) *cniRuntime {
	// An explicit executor: libcni fills a nil one in lazily, which races when
	// pods are added concurrently.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &cniRuntime{cfg: libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, exec)}
}

// ConfList loads the conflist the node's daemon wrote.
func (n *Node) ConfList() (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromFile(filepath.Join(n.ConfDir(), "10-podnet.conflist"))
}

// RuntimeConf is the CNI runtime configuration of the pod's eth0.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	// The pod's name as kubelet passes it: podnetd records it, and `podnetctl
	// trace --from default/<name>` finds the pod by it.
	return &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NS.Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.Name}}}
}

// CNI returns the lab's libcni client.
func (l *Lab) CNI() *libcni.CNIConfig { return l.cni.cfg }

// AddPod creates the pod's namespace and runs CNI ADD for it on node.
func (l *Lab) AddPod(ctx context.Context, node *Node, name string) (*Pod, error) {
	ns, err := sandbox.NewNetNS(name)
	if err != nil {
		return nil, err
	}
	p := &Pod{Name: name, Node: node, NS: ns, ContainerID: "lab-" + name}
	list, err := node.ConfList()
	if err != nil {
		ns.Delete()
		return nil, err
	}
	res, err := l.cni.cfg.AddNetworkList(ctx, list, p.RuntimeConf())
	if err != nil {
		ns.Delete()
		return nil, fmt.Errorf("CNI ADD %s on %s: %w", name, node.Name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		ns.Delete()
		return nil, fmt.Errorf("CNI ADD %s: result without IPs (%v)", name, err)
	}
	p.Result = r
	p.IP, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	l.Pods = append(l.Pods, p)
	return p, nil
}

// DelPod runs CNI DEL for the pod (twice, as runtimes do: once with the
// namespace, once after it is gone) and removes its namespace.
func (l *Lab) DelPod(ctx context.Context, p *Pod) error {
	list, err := p.Node.ConfList()
	if err != nil {
		return err
	}
	rt := p.RuntimeConf()
	if err := l.cni.cfg.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", p.Name, err)
	}
	p.NS.Delete()
	rt.NetNS = ""
	if err := l.cni.cfg.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("second CNI DEL %s (netns gone): %w", p.Name, err)
	}
	return nil
}
