// Command build-images builds the container image tarballs of podnet's e2e runs
// into a cache directory (~/.cache/podnet/images) and prints each image's name and
// tarball, one a line; images.json there lists the same. Progress goes to stderr.
// See docs/e2e-images.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/podnet/podnet/hack/images/build"
)

func main() {
	cfg := build.Default()
	flag.StringVar(&cfg.CacheDir, "cache", cfg.CacheDir, "directory of the tarballs (default $PODNET_IMAGE_CACHE or ~/.cache/podnet/images)")
	flag.StringVar(&cfg.RepoRoot, "repo", cfg.RepoRoot, "podnet's repository")
	flag.StringVar(&cfg.Go, "go", cfg.Go, "go command")
	flag.Parse()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := build.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		if errors.Is(err, build.ErrMissingPackages) {
			os.Exit(3)
		}
		os.Exit(1)
	}
	for _, e := range m.Images {
		fmt.Printf("%s %s\n", e.Name, e.File)
	}
}
