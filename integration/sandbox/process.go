package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one daemon a test harness started (etcd, kube-apiserver, a
// node's containerd or kubelet), with its output in a log file. The control
// planes of integration/kube and integration/cluster share it.
type Process struct {
	Name string // for messages, e.g. "node1 kubelet"
	Log  string // the file its stdout and stderr go to
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // Wait's result, set before done is closed
}

// StartProcess starts bin with args in directory / (a relative bin is made
// absolute first; args must not hold relative paths), stdout and stderr
// appended to logPath. With nsPID > 0 it runs inside that process's network
// and mount namespaces (through nsenter, which execs bin in place: the PID is
// the daemon's). The child gets SIGKILL if the thread that started it dies,
// so a crashed test leaves nothing running.
func StartProcess(name string, nsPID int, bin string, args []string, logPath string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close() // the child holds its own copy
	// The child runs in /, where a relative path would lead elsewhere.
	if strings.Contains(bin, "/") {
		if bin, err = filepath.Abs(bin); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if nsPID > 0 {
		args = append([]string{"--target", strconv.Itoa(nsPID), "--net", "--mount", "--", bin}, args...)
		bin = "nsenter"
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return Track(name, logPath, cmd, nil), nil
}

// Track returns the Process of cmd, which the caller started itself. A
// goroutine runs beforeWait, if not nil (to read a pipe, say), then reaps
// cmd.
func Track(name, logPath string, cmd *exec.Cmd, beforeWait func()) *Process {
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		if beforeWait != nil {
			beforeWait()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process by its PID, gives it grace to exit, then
// SIGKILL, and waits until it is reaped. Stopping an exited or nil process is
// a no-op.
func (p *Process) Stop(grace time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID(), err)
	}
	<-p.done
	return nil
}

// ExitError describes an exit, once Done is closed, with the end of the
// process's log.
func (p *Process) ExitError() error {
	return fmt.Errorf("%s exited: %v; last lines of %s:\n%s", p.Name, p.err, p.Log, Tail(p.Log, 30))
}

// Tail returns the last n lines of the file at path, or the error reading it.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
