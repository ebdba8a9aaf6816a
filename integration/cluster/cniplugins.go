package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// cniPluginsVersion is the containernetworking/plugins release the nodes get
// plugins from (the release of hack/bench-cni.sh's reference plugins).
const cniPluginsVersion = "v1.10.0"

// cniPlugins are the containernetworking/plugins commands BuildCNIPlugins
// builds, by name, with their package under the module:
//   - loopback, which every node needs in both network modes: containerd 1.6's
//     CRI plugin brings up every pod sandbox's lo with it from its CNI bin dir,
//     whatever the conflist says, and fails the sandbox without it; nodes get it
//     with the runtime (Debian's containernetworking-plugins, kubeadm's
//     kubernetes-cni), not from the network plugin. containerd 2 can do it
//     itself (use_internal_loopback);
//   - bridge, host-local and portmap: the reference network (NetworkReference,
//     referenceConflist).
var cniPlugins = map[string]string{
	"loopback":   "plugins/main/loopback",
	"bridge":     "plugins/main/bridge",
	"host-local": "plugins/ipam/host-local",
	"portmap":    "plugins/meta/portmap",
}

// BuildCNIPlugins returns the directory holding the plugins of cniPlugins,
// building them (static, a few seconds with the module cached) into
// ~/.cache/podnet/cni/<version> when one of them is not there. It runs `go
// install`, which needs the module (or network), so it belongs before the sandbox.
func BuildCNIPlugins(ctx context.Context) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	dir := filepath.Join(home, ".cache", "podnet", "cni", cniPluginsVersion)
	var pkgs []string
	for name, pkg := range cniPlugins {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			pkgs = append(pkgs, "github.com/containernetworking/plugins/"+pkg+"@"+cniPluginsVersion)
		}
	}
	if len(pkgs) == 0 {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"install", "-trimpath", "-ldflags=-s -w"}, pkgs...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the CNI plugins %v %s: %w\n%s", pkgs, cniPluginsVersion, err, out)
	}
	return dir, nil
}

// installCNIPlugins copies the named plugins from dir into the node's CNI bin dir.
func (n *Node) installCNIPlugins(dir string, names ...string) error {
	for _, name := range names {
		if err := copyFile(filepath.Join(dir, name), filepath.Join(n.CNIBinDir(), name), 0o755); err != nil {
			return fmt.Errorf("CNI plugin %s: %w", name, err)
		}
	}
	return nil
}
