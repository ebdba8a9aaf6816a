package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// cniPluginsVersion is the containernetworking/plugins release whose loopback
// plugin every node gets (the release of hack/bench-cni.sh's reference plugins).
const cniPluginsVersion = "v1.10.0"

// BuildLoopback returns the CNI loopback plugin, building it (static, ~1 s with
// the module cached) into ~/.cache/podnet/cni/<version> when it is not there.
//
// containerd 1.6's CRI plugin brings up every pod sandbox's lo with the
// loopback plugin from its CNI bin dir, whatever the conflist says, and fails
// the sandbox without it; nodes get it with the runtime (Debian's
// containernetworking-plugins, kubeadm's kubernetes-cni), not from the network
// plugin. containerd 2 can do it itself (use_internal_loopback). It runs `go
// install`, which needs the module (or network), so it belongs before the sandbox.
func BuildLoopback(ctx context.Context) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	dir := filepath.Join(home, ".cache", "podnet", "cni", cniPluginsVersion)
	path := filepath.Join(dir, "loopback")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.CommandContext(ctx, goBin, "install", "-trimpath", "-ldflags=-s -w",
		"github.com/containernetworking/plugins/plugins/main/loopback@"+cniPluginsVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the CNI loopback plugin %s: %w\n%s", cniPluginsVersion, err, out)
	}
	return path, nil
}
