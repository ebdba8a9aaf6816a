package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// kubeBinaries are the Kubernetes commands the cluster runs.
var kubeBinaries = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}

// envPause passes the pause binary's path to the sandboxed re-execution;
// envMissing why the binaries are not there (ForTest skips with it).
const (
	envPause   = "PODNET_E2E_PAUSE"
	envMissing = "PODNET_E2E_MISSING"
)

// Prepare finds what the cluster runs — the Kubernetes commands through
// hack/build-kube.sh, building them only when build is true (the first time ~6
// minutes from empty Go caches, ~1.5 minutes with kube-apiserver built; `make
// kube-node-tools` does it ahead) — builds the pause command into workDir, and
// exports their paths for a sandboxed re-execution of this process. It must run
// before the sandbox is entered (no network there to fetch modules with).
// Progress goes to progress.
func Prepare(ctx context.Context, workDir string, build bool, progress io.Writer) error {
	if !build {
		os.Setenv("PODNET_KUBE_NO_BUILD", "1")
		defer os.Unsetenv("PODNET_KUBE_NO_BUILD")
	}
	if err := kube.Prepare(ctx, progress, kubeBinaries...); err != nil {
		return err
	}
	pause, err := BuildPause(ctx, workDir)
	if err != nil {
		return err
	}
	return os.Setenv(envPause, pause)
}

// PreparedBinaries returns the binaries Prepare exported, or an error naming
// what is missing.
func PreparedBinaries() (Binaries, error) {
	b := Binaries{Pause: os.Getenv(envPause)}
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
	return b, b.check()
}

// Main is the TestMain body for packages whose tests run a cluster: as root, it
// finds the binaries (Prepare; it builds them only with PODNET_E2E_BUILD=1, else
// the tests skip, naming what is missing and `make kube-node-tools`), snapshots
// the machine's network state and sysctls, runs the tests inside a sandbox with
// its own PID namespace (sandbox.MainPID's way), and fails the run if the
// machine's state differs afterwards. Without root the tests run as they are
// and skip (ForTest).
func Main(m *testing.M) {
	if os.Geteuid() != 0 || sandbox.Inside() {
		sandbox.MainPID(m)
		return
	}
	work, err := os.MkdirTemp("", "podnet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	if err := Prepare(context.Background(), work, os.Getenv("PODNET_E2E_BUILD") == "1", nil); err != nil {
		os.Setenv(envMissing, strings.TrimSpace(err.Error()))
	}
	before, err := SnapshotHost()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(work)
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
		fmt.Fprintf(os.Stderr, "FAIL: the machine's own network namespace or sysctls changed during the run:\n%s\n", diff)
		code = 1
	} else {
		fmt.Fprintf(os.Stderr, "cluster: the machine's network namespace and %d sysctls are unchanged\n", len(before.Sysctls))
	}
	os.RemoveAll(work)
	os.Exit(code)
}

// ForTest brings a cluster up under t.TempDir and takes it down when t ends,
// logging the end of every log if t failed. It skips t when not root or when
// the binaries are missing, and fails it outside a sandbox (see Main).
func ForTest(t testing.TB, ctx context.Context, opts Options) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cluster test: needs root to run nodes in a network-namespace sandbox (run as root, e.g. make e2e)")
	}
	sandbox.Require(t)
	if why := os.Getenv(envMissing); why != "" && opts.Binaries == (Binaries{}) {
		t.Skipf("cluster test: binaries missing: %s\n(make kube-node-tools builds them ahead, ~1.5 minutes after kube-apiserver; or PODNET_E2E_BUILD=1)", why)
	}
	if opts.Binaries == (Binaries{}) {
		b, err := PreparedBinaries()
		if err != nil {
			t.Skipf("cluster test: %v (cluster.Main in TestMain builds them; make kube-node-tools ahead)", err)
		}
		opts.Binaries = b
	}
	dir := t.TempDir()
	c, err := Up(ctx, dir, opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, logsIn(dir, 25))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logsIn(dir, 25))
		}
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("tear down: %v", err)
		}
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "podnet-e2e-failed-"+filepath.Base(dir))
			t.Logf("logs of the failed run: %s", keep)
			_ = os.Rename(dir, keep)
		}
	})
	return c
}

// logsIn returns the last n lines of every log under dir (the control plane's
// and each node's), for a failure message.
func logsIn(dir string, n int) string {
	var out strings.Builder
	for _, pattern := range []string{"controlplane/*.log", "nodes/*/*.log"} {
		paths, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range paths {
			fmt.Fprintf(&out, "--- %s\n%s\n", p, tail(p, n))
		}
	}
	return out.String()
}
