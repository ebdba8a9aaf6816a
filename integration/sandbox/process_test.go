package sandbox

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A process that exits is reported with its status and the end of its log;
// one that runs is stopped by SIGTERM; Stop of an exited one is a no-op.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	p, err := StartProcess("short", 0, "/bin/sh", []string{"-c", "echo one; echo two; exit 3"}, filepath.Join(dir, "short.log"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("short process still running after 10 s")
	}
	if !p.Exited() || p.Stop(time.Second) != nil {
		t.Errorf("exited %v, want true and a no-op Stop", p.Exited())
	}
	if msg := p.ExitError().Error(); !strings.Contains(msg, "short exited: exit status 3") || !strings.HasSuffix(msg, "one\ntwo") {
		t.Errorf("ExitError = %q, want the status and the log's last lines", msg)
	}

	long, err := StartProcess("long", 0, "/bin/sleep", []string{"60"}, filepath.Join(dir, "long.log"))
	if err != nil {
		t.Fatal(err)
	}
	if long.Exited() || long.PID() <= 0 {
		t.Fatalf("sleep: exited %v, pid %d", long.Exited(), long.PID())
	}
	start := time.Now()
	if err := long.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !long.Exited() || time.Since(start) > 4*time.Second {
		t.Errorf("Stop: exited %v after %s, want SIGTERM to end sleep at once", long.Exited(), time.Since(start))
	}
	if got := Tail(filepath.Join(dir, "none.log"), 3); !strings.Contains(got, "no such file") {
		t.Errorf("Tail of a missing file = %q, want the error", got)
	}
}
