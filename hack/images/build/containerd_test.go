package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// containerdConfig keeps a test's containerd to its own directory: root, state,
// sockets and the opt plugin's directory; no CRI (no CNI, no kubelet), no debug or
// metrics listener.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
`

// testContainerdImport starts a containerd of its own, in a mount namespace of its
// own (the overlayfs snapshotter's mounts stay there) with everything under a
// temporary directory, imports every tarball into its k8s.io namespace as the e2e
// nodes do (`ctr -n k8s.io images import`, unpacked), and checks that every name is
// listed and every image is complete. It never talks to the machine's containerd.
func testContainerdImport(ctx context.Context, t *testing.T, tarballs, names []string) {
	containerd, err1 := exec.LookPath("containerd")
	ctrPath, err2 := exec.LookPath("ctr")
	if err1 != nil || err2 != nil {
		t.Skip("containerd or ctr not installed (apt-get install containerd): tarballs not imported into containerd")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "config.toml")
	conf := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "opt"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// unshare execs containerd in place: the PID is containerd's.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", containerd, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("containerd's log:\n%s", b)
			}
		}
	}()

	ctr := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctrPath, append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr(5*time.Second, "version"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("containerd not serving after 30 s: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("containerd exited: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	for _, f := range tarballs {
		start := time.Now()
		if _, err := ctr(3*time.Minute, "images", "import", f); err != nil {
			t.Fatal(err)
		}
		t.Logf("imported %s in %.1f s", filepath.Base(f), time.Since(start).Seconds())
	}
	out, err := ctr(time.Minute, "images", "list", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	listed := strings.Fields(out)
	for _, n := range names {
		if !slices.Contains(listed, n) {
			t.Errorf("%s not listed after import; listed: %v", n, listed)
		}
	}
	// `ctr images check`: REF TYPE DIGEST STATUS SIZE UNPACKED, one line each.
	out, err = ctr(time.Minute, "images", "check")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if !strings.Contains(line, "complete") || f[len(f)-1] != "true" {
			t.Errorf("image not complete or not unpacked: %s", line)
		}
	}
}
