package kube

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// Prepare makes sure the named Kubernetes binaries (kube-apiserver when none is
// named) are built, and exports their paths in PODNET_KUBE_APISERVER etc., so that
// Binary finds them in a sandboxed re-execution of this process, which has no
// network to fetch modules with. It must run before sandbox.Enter. A first build
// takes ~5 minutes (hack/build-kube.sh says so on progress, nil: discarded); a
// build that took longer than 5 s is reported on progress when done. Main calls
// it, and so do commands that enter a sandbox themselves (podnet-lab --source kube).
func Prepare(ctx context.Context, progress io.Writer, names ...string) error {
	if len(names) == 0 {
		names = []string{"kube-apiserver"}
	}
	for _, name := range names {
		start := time.Now()
		path, err := Binary(ctx, name, progress)
		if err != nil {
			return err
		}
		if d := time.Since(start); d > 5*time.Second && progress != nil {
			fmt.Fprintf(progress, "kube: %s ready after %s\n", name, d.Round(time.Second))
		}
		if err := os.Setenv(binaryEnv(name), path); err != nil {
			return fmt.Errorf("kube: %w", err)
		}
	}
	return nil
}
