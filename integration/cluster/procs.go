package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killNodeProcesses kills, by PID, every process of one node that detached from
// the processes the cluster started: those in a cgroup under cgroupRoot (the
// node's containers) and the containerd shims serving socket (they re-parent
// themselves to the sandbox's PID 1). It waits up to 10 s for them to be gone.
func killNodeProcesses(cgroupRoot, socket string) error {
	pids, err := nodePIDs(cgroupRoot, socket)
	if err != nil {
		return err
	}
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			errs = append(errs, fmt.Errorf("process %d still alive 10 s after SIGKILL", pid))
		}
	}
	return errors.Join(errs...)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// nodePIDs lists the processes in a cgroup under cgroupRoot (any hierarchy) and
// the containerd-shim-runc-v2 processes whose -address is socket.
func nodePIDs(cgroupRoot, socket string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if inCgroup(pid, cgroupRoot) || isShimOf(pid, socket) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// inCgroup reports whether pid is in root or below it in some hierarchy.
func inCgroup(pid int, root string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// 5:memory:/podnet-e2e.ab12.node1/kubepods/...
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == root || strings.HasPrefix(parts[2], root+"/")) {
			return true
		}
	}
	return false
}

// isShimOf reports whether pid is a containerd shim whose -address is socket.
func isShimOf(pid int, socket string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-address" && args[i+1] == socket {
			return true
		}
	}
	return false
}
