package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// sysctlWriter returns a setSysctl that writes under dir (--sysctl-dir).
func sysctlWriter(dir string) func(name, value string) error {
	return func(name, value string) error { return setSysctl(dir, name, value) }
}

// setSysctl writes a value under dir, normally /proc/sys (for the process's
// own network namespace: the net.* files act on the namespace of the process
// that opens them, wherever procfs is mounted), unless it already holds it.
func setSysctl(dir, name, value string) error {
	path := filepath.Join(dir, strings.ReplaceAll(name, ".", "/"))
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
