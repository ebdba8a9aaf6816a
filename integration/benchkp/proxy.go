package benchkp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/integration/benchsvc"
	"github.com/podnet/podnet/integration/sandbox"
)

// proxy is one service proxy under test, run as a child process in its own
// network namespace.
type proxy interface {
	// Name is how the report calls it.
	Name() string
	// Start execs the proxy; its output goes to its log in the run dir.
	Start() error
	PID() int
	// Serves reports whether the proxy's table in the kernel forwards svc's
	// port to exactly svc's endpoints (a few single-object netlink requests).
	Serves(svc benchsvc.ServiceSpec) (bool, error)
	// Count returns how many service ports the table holds (one dump of a
	// map; for a check after the cold start, never timed).
	Count() (int, error)
	// CachesSynced returns when the proxy's informers reported their caches
	// synced, from its log.
	CachesSynced() (time.Time, error)
	// SyncAfter returns the first sync of the proxy's rules that started at
	// or after t, waiting up to a few seconds for it to be reported.
	SyncAfter(ctx context.Context, t time.Time) (syncRecord, error)
	// Stop ends the proxy (SIGTERM, SIGKILL after 10 s) and returns the
	// largest resident set of it and of every child it reaped, in kB
	// (ru_maxrss of wait4).
	Stop() (maxRSSKB int64, err error)
}

// child is a proxy's process.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startChild starts argv in ns with stdout and stderr to logPath; it gets
// SIGKILL if the benchmark dies.
func startChild(ns *sandbox.NetNS, name, logPath string, env []string, argv ...string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ns.Start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM by PID, then SIGKILL after grace, and waits for the
// process to be reaped.
func (c *child) stop(grace time.Duration) (int64, error) {
	if !c.exited() {
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return 0, fmt.Errorf("stop %s (pid %d): %w", c.name, c.pid(), err)
		}
		select {
		case <-c.done:
		case <-time.After(grace):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
	if ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss, nil
	}
	return 0, nil
}

// procStatus returns the kB value of a field of /proc/PID/status, such as
// VmHWM (peak resident set size).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: %s: unexpected %q", pid, field, v)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// CPUTimes are a process's user and system CPU times, and those of the
// children it has reaped (from /proc/PID/stat: USER_HZ resolution, 10 ms).
type CPUTimes struct {
	User, Sys, ChildUser, ChildSys time.Duration
}

func (c CPUTimes) self() time.Duration     { return c.User + c.Sys }
func (c CPUTimes) children() time.Duration { return c.ChildUser + c.ChildSys }

// procCPU returns the CPU times of pid, from /proc/PID/stat.
func procCPU(pid int) (CPUTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTimes{}, err
	}
	// After the command name, which may hold spaces: utime, stime, cutime
	// and cstime are proc(5) fields 14 to 17.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 15 {
		return CPUTimes{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks [4]time.Duration
	for i := range ticks {
		n, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks[i] = time.Duration(n) * 10 * time.Millisecond // USER_HZ 100
	}
	return CPUTimes{User: ticks[0], Sys: ticks[1], ChildUser: ticks[2], ChildSys: ticks[3]}, nil
}

// endpointsOf returns svc's endpoints as the kernel should forward to them.
func endpointsOf(svc benchsvc.ServiceSpec) []netip.AddrPort {
	out := make([]netip.AddrPort, len(svc.Endpoints))
	for i, e := range svc.Endpoints {
		out[i] = netip.AddrPortFrom(e.Addr, benchsvc.TargetPort)
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// pollSync calls find every 10 ms until it reports a sync or the wait
// ends.
func pollSync(ctx context.Context, wait time.Duration, find func() (syncRecord, bool, error)) (syncRecord, error) {
	deadline := time.Now().Add(wait)
	for {
		s, ok, err := find()
		if err != nil || ok {
			return s, err
		}
		if time.Now().After(deadline) {
			return syncRecord{}, errors.New("no sync reported")
		}
		select {
		case <-ctx.Done():
			return syncRecord{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
