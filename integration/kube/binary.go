package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Version is the Kubernetes release hack/kube-tools pins and Binary builds.
const Version = "v1.37.2"

// EtcdBinary is where Debian's etcd-server package installs etcd
// (hack/install-deps.sh installs it).
const EtcdBinary = "/usr/bin/etcd"

// Binary returns the path of the named Kubernetes command (kube-apiserver,
// kube-proxy) at Version, building it with hack/build-kube.sh when the cache
// outside the git tree (${PODNET_KUBE_CACHE:-$HOME/.cache/podnet/kube/<version>})
// does not hold it yet. The first kube-apiserver build takes ~5 minutes on 2 cores;
// later calls cost a `go list` (~0.1 s). Build output goes to progress (nil: discarded);
// a failed build's error carries it too. The script is found by walking up from the
// working directory to podnet's go.mod, so this works from tests and from binaries
// run inside the repository. When PODNET_KUBE_APISERVER (PODNET_KUBE_PROXY, ...)
// names a file, that file is used as it is (Main sets it for the sandbox).
func Binary(ctx context.Context, name string, progress io.Writer) (string, error) {
	if path := os.Getenv(binaryEnv(name)); path != "" {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("%s from %s: %w", name, binaryEnv(name), err)
		}
		return path, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-kube.sh"), name)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, stderr.String())
	}
	path := strings.TrimSpace(stdout.String())
	if path == "" {
		return "", fmt.Errorf("build %s: hack/build-kube.sh printed no path", name)
	}
	return path, nil
}

// RepoRoot finds the directory of podnet's go.mod above the working directory
// (hack/ and deploy/ are found from there).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/podnet/podnet\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kube: podnet's go.mod not found above the working directory (hack/build-kube.sh builds the Kubernetes binaries)")
		}
		dir = parent
	}
}
