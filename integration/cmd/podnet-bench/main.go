// Command podnet-bench times CNI ADD and DEL of pods through libcni, as
// containerd calls them, for podnet and for the reference plugins bridge +
// host-local, one at a time and several at a time, inside its own
// `unshare --net --mount` sandbox; nothing outside the sandbox is touched.
// It prints a markdown report and exits non-zero if any check failed.
//
//	podnet-bench [--bin DIR] [--ref-bin DIR] [--pods N] [--workers N] [--warmup N] [--keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/podnet/podnet/integration/bench"
	"github.com/podnet/podnet/integration/sandbox"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.Default()
	fs := flag.NewFlagSet("podnet-bench", flag.ContinueOnError)
	fs.StringVar(&cfg.BinDir, "bin", filepath.Dir(self), "directory holding podnetd and podnet")
	fs.StringVar(&cfg.RefBinDir, "ref-bin", "", "directory holding the reference bridge and host-local (default <bin>/ref)")
	fs.IntVar(&cfg.Pods, "pods", cfg.Pods, "pods per round")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "calls in flight in the concurrent mode")
	fs.IntVar(&cfg.Warmup, "warmup", cfg.Warmup, "untimed pods added and deleted per setup first")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work dir (podnetd's log, IPAM state) and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.RefBinDir == "" {
		cfg.RefBinDir = filepath.Join(cfg.BinDir, "ref")
	}
	// libcni and the lab exec from these dirs after the re-exec: make them absolute.
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return err
	}
	if cfg.RefBinDir, err = filepath.Abs(cfg.RefBinDir); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	reexeced, code, err := sandbox.Enter()
	if err != nil {
		return err
	}
	if reexeced {
		if code != 0 {
			os.Exit(code)
		}
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench.Run(ctx, cfg, os.Stdout)
}
