package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// kubeBinaries are the Kubernetes commands the cluster runs.
var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}

// envMissing carries, to the sandboxed re-execution, why the binaries or the
// images are not there (ForTest skips with it).
const envMissing = "PODNET_E2E_MISSING"

// envCNIPlugins passes the CNI plugins' directory to the sandboxed re-execution.
const envCNIPlugins = "PODNET_E2E_CNI_PLUGINS"

// envKubeProxy passes kube-proxy's path to the sandboxed re-execution, and
// envMissingProxy why it is missing (only NetworkReference needs it).
const (
	envKubeProxy    = "PODNET_E2E_KUBE_PROXY"
	envMissingProxy = "PODNET_E2E_MISSING_KUBE_PROXY"
)

// EnvNetwork selects the network of the clusters TestSmoke and TestConformance
// bring up: NetworkPodnet (unset: the default) or NetworkReference.
const EnvNetwork = "PODNET_E2E_NETWORK"

// Prepare finds what the cluster runs — the Kubernetes commands through
// hack/build-kube.sh, building them only when build is true (the first time ~6
// minutes from empty Go caches, ~1.5 minutes with kube-apiserver built; `make
// kube-node-tools` does it ahead) — and exports their paths for a sandboxed
// re-execution of this process; then it checks the images `make images`
// builds (LoadImages), which it never builds, and builds the CNI plugins when
// missing (BuildCNIPlugins, a few seconds). kube-proxy, which only
// NetworkReference runs, is looked for too (built only when build is true);
// when it is missing, ForTest skips reference clusters only. It must run
// before the sandbox is entered (no network there to fetch modules with).
// Progress goes to progress.
func Prepare(ctx context.Context, build bool, progress io.Writer) error {
	if !build {
		os.Setenv("PODNET_KUBE_NO_BUILD", "1")
		defer os.Unsetenv("PODNET_KUBE_NO_BUILD")
	}
	if err := kube.Prepare(ctx, progress, kubeBinaries...); err != nil {
		return err
	}
	if _, err := LoadImages(ImageCacheDir()); err != nil {
		return err
	}
	plugins, err := BuildCNIPlugins(ctx)
	if err != nil {
		return err
	}
	if proxy, err := kube.Binary(ctx, "kube-proxy", progress); err != nil {
		os.Setenv(envMissingProxy, strings.TrimSpace(err.Error())+" (make kube-tools builds it)")
	} else {
		os.Setenv(envKubeProxy, proxy)
	}
	return os.Setenv(envCNIPlugins, plugins)
}

// PreparedBinaries returns the binaries Prepare exported, or an error naming
// what is missing.
func PreparedBinaries() (Binaries, error) {
	b := Binaries{CNIPlugins: os.Getenv(envCNIPlugins), KubeProxy: os.Getenv(envKubeProxy)}
	for _, p := range []struct {
		name string
		dst  *string
	}{
		{"kube-apiserver", &b.APIServer}, {"kube-controller-manager", &b.ControllerManager},
		{"kube-scheduler", &b.Scheduler}, {"kubelet", &b.Kubelet},
	} {
		path, err := kube.Binary(context.Background(), p.name, nil)
		if err != nil {
			return b, err
		}
		*p.dst = path
	}
	return b, b.check(NetworkPodnet)
}

// Main is the TestMain body for packages whose tests run a cluster: as root, it
// finds the binaries and the images (Prepare; it builds the binaries only with
// PODNET_E2E_BUILD=1, the images never; else the tests skip, naming what is
// missing and the make target that makes it), snapshots the machine's network
// state, sysctls and the paths a node could write, runs the tests inside a
// sandbox with its own PID namespace (sandbox.MainPID's way), and fails the
// run if the machine's state differs afterwards. Without root the tests run as
// they are and skip (ForTest).
func Main(m *testing.M) {
	if os.Geteuid() != 0 || sandbox.Inside() {
		sandbox.MainPID(m)
		return
	}
	if err := Prepare(context.Background(), os.Getenv("PODNET_E2E_BUILD") == "1", nil); err != nil {
		os.Setenv(envMissing, strings.TrimSpace(err.Error()))
	}
	before, err := SnapshotHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reexeced, code, err := sandbox.EnterPID()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if !reexeced { // cannot happen outside a sandbox; be safe
		code = m.Run()
	}
	after, err := SnapshotHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	} else if diff := before.Diff(after); diff != "" {
		fmt.Fprintf(os.Stderr, "FAIL: the machine's own network namespace, sysctls or files changed during the run:\n%s\n", diff)
		code = 1
	} else {
		fmt.Fprintf(os.Stderr, "cluster: the machine's network namespace, %d sysctls and %d paths are unchanged\n", len(before.Sysctls), len(before.Paths))
	}
	os.Exit(code)
}

// NodesFromEnv is the number of nodes PODNET_E2E_NODES asks for: 0 (the
// default, 2) when it is unset.
func NodesFromEnv() (int, error) {
	v := os.Getenv("PODNET_E2E_NODES")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("PODNET_E2E_NODES=%q: want a number of nodes, 1 or more", v)
	}
	return n, nil
}

// ForTest brings a cluster up under t.TempDir and takes it down when t ends,
// logging the end of every log if t failed and keeping its files (also with
// PODNET_E2E_KEEP=1) in /tmp/podnet-e2e-kept-*. It skips t when not root or when
// the binaries or images are missing, and fails it outside a sandbox (see Main).
// With opts.Nodes 0, PODNET_E2E_NODES sets the number of nodes (default 2).
// With opts.Required, what would skip fails t instead.
func ForTest(t testing.TB, ctx context.Context, opts Options) *Cluster {
	t.Helper()
	skipf := t.Skipf
	if opts.Required {
		skipf = t.Fatalf // a run that was asked for must not pass by skipping
	}
	if os.Geteuid() != 0 {
		skipf("cluster test: needs root to run nodes in a network-namespace sandbox (run as root, e.g. make e2e)")
	}
	sandbox.Require(t)
	if why := os.Getenv(envMissing); why != "" && opts.Binaries == (Binaries{}) {
		skipf("cluster test: %s\n(make e2e builds what is missing: make kube-node-tools, ~1.5 minutes after kube-apiserver, and make images, ~20 s with warm Go caches)", why)
	}
	if why := os.Getenv(envMissingProxy); why != "" && opts.Network == NetworkReference && opts.Binaries == (Binaries{}) {
		skipf("cluster test: the reference network needs kube-proxy: %s", why)
	}
	if opts.Binaries == (Binaries{}) {
		b, err := PreparedBinaries()
		if err != nil {
			skipf("cluster test: %v (cluster.Main in TestMain finds them; make kube-node-tools builds them)", err)
		}
		opts.Binaries = b
	}
	if opts.ImageSet == nil {
		set, err := LoadImages(ImageCacheDir())
		if err != nil {
			skipf("cluster test: %v", err)
		}
		opts.ImageSet = set
	}
	if opts.Nodes == 0 {
		n, err := NodesFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		opts.Nodes = n
	}
	dir := t.TempDir()
	c, err := Up(ctx, dir, opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, logsIn(dir, 25))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.DebugState(context.Background()))
			t.Log(logsIn(dir, 25))
		}
		running, start := c.cp != nil, time.Now()
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("tear down: %v", err)
		}
		if running {
			t.Logf("torn down in %s", time.Since(start).Round(time.Millisecond))
		}
		if t.Failed() || os.Getenv("PODNET_E2E_KEEP") == "1" {
			keep := filepath.Join(os.TempDir(), "podnet-e2e-kept-"+filepath.Base(filepath.Dir(dir)))
			t.Logf("logs of the run: %s", keep)
			_ = os.Rename(dir, keep)
		}
	})
	return c
}

// logsIn returns the last n lines of every log under dir (the control plane's
// and each node's), for a failure message.
func logsIn(dir string, n int) string {
	var out strings.Builder
	for _, pattern := range []string{"controlplane/*.log", "nodes/*/*.log", "nodes/*/log/pods/*/*/*.log"} {
		paths, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range paths {
			fmt.Fprintf(&out, "--- %s\n%s\n", p, sandbox.Tail(p, n))
		}
	}
	return out.String()
}
