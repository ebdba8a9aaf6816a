// Command podnet-bench-services measures podnetd with many services in its
// cluster file: cold programming time, the latency of one endpoint change,
// peak memory, and TCP connect latency through a VIP against the endpoint
// directly, inside its own `unshare --net --mount` sandbox; nothing outside
// the sandbox is touched. It prints a markdown report and exits non-zero if
// a check failed.
//
//	podnet-bench-services [--bin DIR] [--services 1000,10000,50000] [--poll-interval 20ms]
//	    [--changes 30] [--connects 2000] [--profile DIR] [--keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/podnet/podnet/integration/benchsvc"
	"github.com/podnet/podnet/integration/sandbox"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench-services:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := benchsvc.Default()
	fs := flag.NewFlagSet("podnet-bench-services", flag.ContinueOnError)
	fs.StringVar(&cfg.BinDir, "bin", filepath.Dir(self), "directory holding podnetd and podnet")
	counts := fs.String("services", joinInts(cfg.Services), "comma-separated service counts, one measurement each")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "podnetd's --poll-interval")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", cfg.ResyncInterval, "podnetd's --resync-interval")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "endpoint changes timed per service count")
	fs.IntVar(&cfg.Connects, "connects", cfg.Connects, "timed connect() calls per target")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write CPU profiles of the parse and of nft.Table.Sync, taken in this process, to DIR")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work dir (podnetd's logs, the cluster file) and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Services, err = parseInts(*counts); err != nil {
		return fmt.Errorf("--services: %w", err)
	}
	// The lab execs from this dir after the re-exec: make it absolute.
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return err
	}
	if cfg.ProfileDir != "" {
		if cfg.ProfileDir, err = filepath.Abs(cfg.ProfileDir); err != nil {
			return err
		}
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
	return benchsvc.Run(ctx, cfg, os.Stdout)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
