// Command podnet-bench-kube-proxy measures podnetd against kube-proxy in
// nftables mode, against one real kube-apiserver holding the same Services
// and EndpointSlices: cold full-sync time, the latency of one EndpointSlice
// change, and peak memory, at each service count. Everything runs inside its
// own `unshare --net --mount` sandbox, each proxy in a network namespace of
// its own. Before entering the sandbox it builds kube-apiserver and
// kube-proxy if needed (hack/build-kube.sh) and reads the machine's
// conntrack settings and nftables ruleset; afterwards it checks they are
// unchanged. It prints a markdown report and exits non-zero if a check
// failed.
//
//	podnet-bench-kube-proxy [--bin DIR] [--services 1000,10000,30000] [--changes 30] [--keep]
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

	"github.com/podnet/podnet/integration/benchkp"
	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podnet-bench-kube-proxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := benchkp.Default()
	fs := flag.NewFlagSet("podnet-bench-kube-proxy", flag.ContinueOnError)
	fs.StringVar(&cfg.BinDir, "bin", filepath.Dir(self), "directory holding podnetd")
	counts := fs.String("services", joinInts(cfg.Services), "comma-separated, growing service counts (4 endpoints each), one measurement of each proxy each")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "EndpointSlice changes timed per proxy and count")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent clients creating the Services and EndpointSlices")
	fs.DurationVar(&cfg.Pause, "pause", cfg.Pause, "least time between changes (kube-proxy's min-sync-period is 1s)")
	fs.DurationVar(&cfg.ColdTimeout, "cold-timeout", cfg.ColdTimeout, "longest wait for a proxy's cold start")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work dir (the proxies' and the control plane's logs) and print its path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Services, err = parseInts(*counts); err != nil {
		return fmt.Errorf("--services: %w", err)
	}
	if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
		return err
	}
	if sandbox.Inside() {
		return inside(cfg)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root, to run the proxies in network namespaces of a sandbox")
	}
	// Outside the sandbox, which has no network to fetch modules with: build
	// what is missing; the re-execution finds the paths in its environment.
	if err := kube.Prepare(context.Background(), os.Stderr, "kube-apiserver", "kube-proxy"); err != nil {
		return err
	}
	before, err := benchkp.ReadHostState()
	if err != nil {
		return fmt.Errorf("read the machine's state: %w", err)
	}
	_, code, err := sandbox.Enter()
	if err != nil {
		return err
	}
	after, err := benchkp.ReadHostState()
	if err != nil {
		return fmt.Errorf("read the machine's state: %w", err)
	}
	if diff := after.Diff(before); len(diff) > 0 {
		return fmt.Errorf("the machine's own network state changed during the run:\n  %s", strings.Join(diff, "\n  "))
	}
	fmt.Printf("\nThe machine's own network namespace is unchanged after the run (%s).\n", after.Summary())
	if code != 0 {
		os.Exit(code)
	}
	return nil
}

// inside runs the benchmark in the sandbox.
func inside(cfg benchkp.Config) error {
	if _, _, err := sandbox.Enter(); err != nil {
		return err
	}
	var err error
	if cfg.APIServer, err = kube.Binary(context.Background(), "kube-apiserver", nil); err != nil {
		return err
	}
	if cfg.KubeProxy, err = kube.Binary(context.Background(), "kube-proxy", nil); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return benchkp.Run(ctx, cfg, os.Stdout)
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
