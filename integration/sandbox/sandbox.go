// Package sandbox isolates privileged tests and the lab from the machine's own network.
//
// A process calls Enter (or Main, from TestMain) first. As root it re-executes itself
// inside fresh network and mount namespaces (unshare --net --mount), makes every mount
// private, and mounts a tmpfs on /run/netns, so that every network namespace, link,
// route and nftables table a test creates lives and dies inside the sandbox. Nothing
// here ever changes the namespace the process was started in.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// envInside marks a process that already runs inside its sandbox.
const envInside = "PODNET_SANDBOX"

// NetNSDir is where named network namespaces are bind-mounted, as iproute2 does.
const NetNSDir = "/run/netns"

// Inside reports whether this process runs inside a sandbox made by Enter.
func Inside() bool { return os.Getenv(envInside) == "1" }

// Enter makes sure the process runs inside its own network and mount namespaces.
// Outside a sandbox it re-executes the current binary with the same arguments inside
// a new one, waits for it and returns its exit code with reexeced=true; the caller
// must then exit with that code. Inside, it prepares the mounts and returns
// reexeced=false. It needs root; without root it returns an error.
func Enter() (reexeced bool, code int, err error) { return enter(0) }

// EnterPID is Enter with a PID namespace as well: the sandboxed process is its PID 1
// and gets a /proc of its own, and when it exits the kernel kills everything left
// in the namespace — daemons that detach from their parent (containerd's shims,
// the containers they run) included. It is for harnesses that run such daemons
// (integration/cluster). PID 1 only receives the signals it handles.
func EnterPID() (reexeced bool, code int, err error) { return enter(syscall.CLONE_NEWPID) }

func enter(extra uintptr) (reexeced bool, code int, err error) {
	if Inside() {
		return false, 0, setup()
	}
	if os.Geteuid() != 0 {
		return false, 0, errors.New("sandbox: root is needed to create network namespaces")
	}
	self, err := os.Executable()
	if err != nil {
		return false, 0, fmt.Errorf("sandbox: find own binary: %w", err)
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | extra,
		Pdeathsig:  syscall.SIGKILL,
	}
	// The child cleans up on SIGINT/SIGTERM (its work dir, its daemons); pass
	// those signals on rather than dying and letting Pdeathsig kill it mid-way.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err = cmd.Start(); err == nil {
		done := make(chan struct{})
		go func() {
			for {
				select {
				case s := <-sigs:
					_ = cmd.Process.Signal(s)
				case <-done:
					return
				}
			}
		}()
		err = cmd.Wait()
		close(done)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return true, 0, nil
	case errors.As(err, &exitErr):
		return true, exitErr.ExitCode(), nil
	default:
		return true, 1, fmt.Errorf("sandbox: run inside new namespaces: %w", err)
	}
}

// setup runs once inside the sandbox: private mounts, a private /run/netns, lo up.
func setup() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: make mounts private: %w", err)
	}
	if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := unix.Mount("tmpfs", NetNSDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("sandbox: mount tmpfs on %s: %w", NetNSDir, err)
	}
	// PID 1 of a new PID namespace (EnterPID) needs a /proc that shows it.
	if os.Getpid() == 1 {
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("sandbox: mount proc: %w", err)
		}
	}
	// /sys shows the devices of the namespace that mounted it: remount it for ours.
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("sandbox: mount sysfs: %w", err)
	}
	return SetLinkUp(-1, "lo")
}

// Main is the TestMain body for packages with kernel tests: as root it runs the
// tests inside a sandbox; without root it runs them as they are, and kernel tests
// skip themselves through Require.
func Main(m *testing.M) { runMain(m, Enter) }

// MainPID is Main with EnterPID.
func MainPID(m *testing.M) { runMain(m, EnterPID) }

func runMain(m *testing.M, enter func() (bool, int, error)) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	reexeced, code, err := enter()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if reexeced {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// Require skips a kernel test when not root, with a clear message, and fails it if
// the process is root but not inside a sandbox (the test would touch the machine).
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to create network namespaces (run as root, e.g. make test)")
	}
	if !Inside() {
		t.Fatal("kernel test outside a sandbox: call sandbox.Main from TestMain")
	}
}

// TestNetNS creates the named namespace for one test, failing the test if it
// cannot, and deletes it when the test ends (reporting a failed delete).
func TestNetNS(t testing.TB, name string) *NetNS {
	t.Helper()
	ns, err := NewNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}
