package cluster

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// poll calls check every interval until it returns true or ctx ends, or until
// one of procs exits; it returns check's last error on timeout.
func poll(ctx context.Context, what string, interval time.Duration, check func(context.Context) (bool, error), procs ...*sandbox.Process) error {
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		last = err
		for _, p := range procs {
			if p.Exited() {
				return fmt.Errorf("%s: %w", what, p.ExitError())
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
