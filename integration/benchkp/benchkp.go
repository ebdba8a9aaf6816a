// Package benchkp measures podnetd against kube-proxy in nftables mode, side
// by side, against one real kube-apiserver (integration/kube) holding the
// same Services and EndpointSlices: the time from process start until every
// service is in the proxy's kernel table, the latency of one EndpointSlice
// change until it is in the kernel, and each proxy's peak memory. Each proxy
// runs alone, in a network namespace of its own inside the caller's sandbox;
// the cluster objects are put back between the two, so both see the same
// state and the same changes.
package benchkp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/podnet/podnet/integration/bench"
	"github.com/podnet/podnet/integration/sandbox"
)

// Targets from issue 4, at 10k services and more: podnetd's cold sync and
// incremental p99 at least TargetRatio times kube-proxy's, and less memory.
const (
	TargetRatio    = 10.0
	targetServices = 10000
)

// ErrVerification is wrapped by Run's error when a check failed: a proxy's
// table did not hold every service after its cold start, or a change was not
// seen.
var ErrVerification = errors.New("kube-proxy benchmark verification failed")

// Config shapes a run.
type Config struct {
	BinDir string // holds podnetd
	// APIServer and KubeProxy are the kube-apiserver and kube-proxy
	// binaries (kube.Binary builds them, outside the sandbox).
	APIServer, KubeProxy string
	WorkDir              string // logs and the control plane's files; a temp dir when empty
	Keep                 bool   // keep WorkDir afterwards
	Services             []int  // service counts, ascending; each count adds services to the last
	Changes              int    // EndpointSlice changes timed per proxy and count
	Workers              int    // concurrent creates when filling the API server
	// Pause is the least time between the end of one change and the next
	// (a random 0–300 ms more is added): longer than kube-proxy's 1 s
	// min-sync-period, so that no change waits for it.
	Pause         time.Duration
	ColdTimeout   time.Duration
	ChangeTimeout time.Duration
	Seed          uint64 // of the change plan
}

// Default measures 1k, 10k and 30k services, 30 changes each.
func Default() Config {
	return Config{
		Services:      []int{1000, 10000, 30000},
		Changes:       30,
		Workers:       16,
		Pause:         1200 * time.Millisecond,
		ColdTimeout:   15 * time.Minute,
		ChangeTimeout: time.Minute,
		Seed:          4,
	}
}

// Validate checks the numbers and that the binaries exist.
func (c Config) Validate() error {
	if len(c.Services) == 0 {
		return errors.New("services: at least one count")
	}
	for i, n := range c.Services {
		// Cluster IPs are counted up from 10.96.0.16 in the API server's
		// default service CIDR, 10.96.0.0/16.
		if n < 1 || n > 60000 {
			return fmt.Errorf("services: each count must be in 1..60000, got %d", n)
		}
		if i > 0 && n <= c.Services[i-1] {
			return fmt.Errorf("services: counts must grow, got %d after %d", n, c.Services[i-1])
		}
	}
	if c.Changes < 1 || c.Changes > 1000 {
		return fmt.Errorf("changes must be in 1..1000, got %d", c.Changes)
	}
	if c.Workers < 1 || c.Workers > 256 {
		return fmt.Errorf("workers must be in 1..256, got %d", c.Workers)
	}
	if c.Pause < 0 {
		return fmt.Errorf("pause must not be negative, got %s", c.Pause)
	}
	for _, b := range []string{filepath.Join(c.BinDir, "podnetd"), c.APIServer, c.KubeProxy} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (make bench-vs-kube-proxy builds them)", err)
		}
	}
	return nil
}

// Result is the measurement of one service count.
type Result struct {
	Services int
	// Created services and their slices were added for this count, taking
	// Create until the API server held them all.
	Created int
	Create  time.Duration
	// List is one LIST of every Service and one of every EndpointSlice, side
	// by side, from the watch cache: the API server's part of any cold start.
	List time.Duration
	Runs []*ProxyRun // kube-proxy's, then podnetd's
}

// ProxyRun is one proxy's measurement at one count.
type ProxyRun struct {
	Proxy string
	Cold  time.Duration // exec → the last service served by the kernel table
	// Split of the cold start, from the exec: caches synced (the proxy's
	// log), its first sync started, and that sync's length; 0 when unknown.
	CachesSynced, SyncStart, FirstSync time.Duration
	// ColdCPU is the CPU time of the proxy and of its reaped children
	// (kube-proxy's nft) from the exec until its first sync ended.
	ColdCPU      CPUTimes
	HWMCold, HWM int64 // the proxy's VmHWM after the cold start and at the end, kB
	MaxRSS       int64 // the largest ru_maxrss of the proxy and its children, kB
	// BenchHWM is this process's VmHWM when it started the proxy, kB. A
	// child's ru_maxrss starts from it: at exec the kernel records the
	// peak of the memory the child shared with its parent (Go spawns with
	// CLONE_VM), so MaxRSS shows a child's own peak only above it.
	BenchHWM   int64
	Programmed int // service ports in the table after the cold start
	Changes    []Change
	Problems   []string
}

// Change is one timed EndpointSlice change: Total from just before the
// update request until the kernel forwarded to the new endpoints; API the
// update request's round trip; SyncStart from the request until the proxy's
// sync started; Sync that sync's length (0 when not reported).
type Change struct {
	Service                     string
	Total, API, SyncStart, Sync time.Duration
}

// Run starts the control plane, fills it step by step, measures both proxies
// at each count, prints the report to out and stops everything. It must run
// inside a sandbox. The error wraps ErrVerification when a check failed.
func Run(ctx context.Context, cfg Config, out io.Writer) (err error) {
	if !sandbox.Inside() {
		return errors.New("benchkp: not inside a sandbox")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	machine := bench.MachineInfo()
	if cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "podnet-bench-kube-proxy-"); err != nil {
			return err
		}
	}
	if cfg.Keep {
		fmt.Fprintf(out, "work dir (kept): %s\n", cfg.WorkDir)
	} else {
		defer os.RemoveAll(cfg.WorkDir)
	}
	e, err := setUp(ctx, cfg, out)
	if e != nil {
		defer func() { err = errors.Join(err, e.tearDown()) }()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "▸ podnetd %s (copied from %s), kube-proxy %s\n", e.podnetdVersion, cfg.BinDir, cfg.KubeProxy)
	var results []*Result
	problems := 0
	for _, n := range cfg.Services {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := e.measure(ctx, n)
		if r != nil {
			results = append(results, r)
		}
		if err != nil {
			printReport(out, cfg, machine, e.podnetdVersion, results)
			return fmt.Errorf("%d services: %w", n, err)
		}
		for _, run := range r.Runs {
			problems += len(run.Problems)
		}
	}
	printReport(out, cfg, machine, e.podnetdVersion, results)
	if problems > 0 {
		return fmt.Errorf("%w: %d problems", ErrVerification, problems)
	}
	return nil
}
