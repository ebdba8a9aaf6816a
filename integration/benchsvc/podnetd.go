package benchsvc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/integration/lab"
)

// startDaemon starts podnetd on node n of l like lab.StartDaemon does (same
// socket, state and CNI dirs, same cluster file), but with the benchmark's
// poll and resync intervals and JSON logs at info level to logPath, whose
// timestamps the benchmark reads. It sets n.Daemon, so lab.StopDaemon stops it.
func startDaemon(l *lab.Lab, n *lab.Node, cfg Config, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(cfg.BinDir, "podnetd"),
		"--node-name", n.Name, "--cluster-file", l.ClusterFile(),
		"--socket", n.Socket(), "--state-dir", filepath.Join(n.Dir, "state"),
		"--cni-conf-dir", n.ConfDir(), "--cni-bin-dir", cfg.BinDir,
		"--poll-interval", cfg.PollInterval.String(), "--resync-interval", cfg.ResyncInterval.String(),
		"--log-format", "json", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.NS.Start(cmd); err != nil {
		return fmt.Errorf("start podnetd on %s: %w", n.Name, err)
	}
	n.Daemon = cmd
	return nil
}

// procStatus returns the kB value of a field of /proc/PID/status, such as
// VmHWM (peak resident set size) or VmRSS.
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

// procCPU returns the user+system CPU time of a running process, from
// /proc/PID/stat (clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// After the command name, which may hold spaces: utime and stime are the
	// 12th and 13th fields (proc(5) fields 14 and 15).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var total time.Duration
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += time.Duration(n) * 10 * time.Millisecond
	}
	return total, nil
}

// logTail reads the lines a daemon appends to its JSON log.
type logTail struct {
	f   *os.File
	buf []byte // a partial last line
}

func openLogTail(path string) (*logTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &logTail{f: f}, nil
}

func (t *logTail) Close() error { return t.f.Close() }

// logLine is the part of a zap JSON line the benchmark reads.
type logLine struct {
	TS  float64 `json:"ts"` // seconds since the epoch
	Msg string  `json:"msg"`
}

func (l logLine) time() time.Time {
	sec, frac := math.Modf(l.TS)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// find returns the time of the last line with message msg appended since the
// previous call; ok is false if none was.
func (t *logTail) find(msg string) (at time.Time, ok bool, err error) {
	b, err := io.ReadAll(t.f)
	if err != nil {
		return time.Time{}, false, err
	}
	t.buf = append(t.buf, b...)
	sc := bufio.NewScanner(bytes.NewReader(t.buf))
	sc.Buffer(nil, 1<<20)
	consumed := 0
	for sc.Scan() {
		line := sc.Bytes()
		if consumed+len(line) >= len(t.buf) { // no newline yet: keep it for later
			break
		}
		consumed += len(line) + 1
		var l logLine
		if json.Unmarshal(line, &l) == nil && l.Msg == msg {
			at, ok = l.time(), true
		}
	}
	t.buf = t.buf[consumed:]
	return at, ok, sc.Err()
}

// skip consumes what the daemon logged so far.
func (t *logTail) skip() error {
	_, _, err := t.find("\x00")
	return err
}
