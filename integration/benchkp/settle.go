package benchkp

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// settle waits until this process's children etcd and kube-apiserver are
// nearly idle (together under 15 % of a CPU over two windows of 500 ms in a
// row), at most limit, so that a proxy's timed start does not share the CPUs
// with the API server digesting the last writes. It returns how long it
// waited.
func settle(ctx context.Context, limit time.Duration) time.Duration {
	start := time.Now()
	pids := children("etcd", "kube-apiserver")
	quiet := 0
	for quiet < 2 && time.Since(start) < limit {
		before := cpuOf(pids)
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(500 * time.Millisecond):
		}
		if (cpuOf(pids)-before).Seconds()/time.Since(t0).Seconds() < 0.15 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return time.Since(start)
}

// children returns the PIDs of this process's children whose command is one
// of names.
func children(names ...string) []int {
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		comm := s[open+1 : end]
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		for _, n := range names {
			if comm == n {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
				out = append(out, pid)
			}
		}
	}
	return out
}

// cpuOf is the CPU time the processes used so far.
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		if c, err := procCPU(pid); err == nil {
			total += c.self()
		}
	}
	return total
}
