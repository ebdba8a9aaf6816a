package kube

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// binaryEnv names the variable through which a binary's path reaches the sandboxed
// re-execution: kube-apiserver → PODNET_KUBE_APISERVER, kube-proxy → PODNET_KUBE_PROXY.
// Set by hand, it makes Binary use that file instead of building.
func binaryEnv(name string) string {
	return "PODNET_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Main is the TestMain body for packages whose tests run a control plane:
//
//	func TestMain(m *testing.M) { kube.Main(m) }
//
// As root and outside the sandbox it first makes sure kube-apiserver (and any other
// named binaries) are built, and passes their paths to the sandboxed re-execution in
// PODNET_KUBE_APISERVER etc. It builds there because the sandbox has no network to
// fetch modules with, and because work before m.Run is outside `go test -timeout`
// (though cmd/go still kills a test binary at that timeout plus one minute).
// The first build takes ~5 minutes; later ones ~0.1 s. Then it runs sandbox.Main.
func Main(m *testing.M, binaries ...string) {
	if os.Geteuid() == 0 && !sandbox.Inside() {
		if err := Prepare(context.Background(), os.Stderr, append([]string{"kube-apiserver"}, binaries...)...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	sandbox.Main(m)
}

// ForTest starts a control plane for t under t.TempDir and stops it when t ends,
// logging the end of both logs if t failed. It skips t when not root and fails it
// outside a sandbox (see Main). Binaries come from Options or from Binary.
func ForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("control plane test: needs root to run etcd and kube-apiserver in a network-namespace sandbox (run as root, e.g. make test)")
	}
	sandbox.Require(t)
	opts.setDefaults()
	if _, err := os.Stat(opts.EtcdBinary); err != nil {
		t.Fatalf("etcd: %v (hack/install-deps.sh installs Debian's etcd-server)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout+time.Minute)
	defer cancel()
	if opts.APIServerBinary == "" {
		var err error
		if opts.APIServerBinary, err = Binary(ctx, "kube-apiserver", nil); err != nil {
			t.Fatalf("%v\n(kube.Main in TestMain builds it before the sandbox, which has no network to fetch modules with)", err)
		}
	}
	start := time.Now()
	c, err := Start(ctx, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane ready in %s at %s (etcd %s, files in %s)", time.Since(start).Round(time.Millisecond), c.URL, c.EtcdURL, c.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.Logs(40))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return c
}
