package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cpuTime is CPU time (user + system) spent so far by this process (the
// runtime side: libcni and the benchmark), by the plugin processes it has
// reaped, and by a daemon that is still running.
type cpuTime struct {
	runtime time.Duration
	plugins time.Duration
	daemon  time.Duration
}

func (a cpuTime) sub(b cpuTime) cpuTime {
	return cpuTime{runtime: a.runtime - b.runtime, plugins: a.plugins - b.plugins, daemon: a.daemon - b.daemon}
}

func (a cpuTime) total() time.Duration { return a.runtime + a.plugins + a.daemon }

// readCPU samples the CPU clocks. RUSAGE_SELF is the runtime side; RUSAGE_CHILDREN covers every plugin libcni
// ran and waited for, including processes those plugins ran themselves
// (host-local under bridge). The daemon's time comes from /proc/<pid>/stat,
// in clock ticks of 10 ms; daemonPID 0 leaves it zero.
func readCPU(daemonPID int) (cpuTime, error) {
	var self, children unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &self); err != nil {
		return cpuTime{}, fmt.Errorf("getrusage: %w", err)
	}
	if err := unix.Getrusage(unix.RUSAGE_CHILDREN, &children); err != nil {
		return cpuTime{}, fmt.Errorf("getrusage: %w", err)
	}
	c := cpuTime{
		runtime: time.Duration(self.Utime.Nano() + self.Stime.Nano()),
		plugins: time.Duration(children.Utime.Nano() + children.Stime.Nano()),
	}
	if daemonPID == 0 {
		return c, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", daemonPID))
	if err != nil {
		return c, err
	}
	// Fields after the command name, which may hold spaces: state is the
	// first, utime the 12th and stime the 13th (proc(5) fields 14 and 15).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return c, fmt.Errorf("/proc/%d/stat: unexpected format", daemonPID)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return c, fmt.Errorf("/proc/%d/stat: %w", daemonPID, err)
		}
		c.daemon += time.Duration(n) * tick
	}
	return c, nil
}
