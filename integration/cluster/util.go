package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"
)

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
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

// poll calls check every interval until it returns true or ctx ends, or until
// one of procs exits; it returns check's last error on timeout.
func poll(ctx context.Context, what string, interval time.Duration, check func(context.Context) (bool, error), procs ...*process) error {
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		last = err
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s: %w", what, p.exitError())
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("%s: %w", what, last)
		case <-time.After(interval):
		}
	}
}

// copyFile copies src to dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, perm)
}
