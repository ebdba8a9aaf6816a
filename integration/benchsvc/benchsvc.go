// Package benchsvc measures how podnetd scales with the number of services in
// its cluster file: the time from daemon start to every service in the kernel,
// the latency of one endpoint change, the daemon's peak memory, and the TCP
// connect latency through a service VIP against the endpoint pod directly.
// Everything runs on a two-node lab (lab.Up) inside the caller's sandbox.
package benchsvc

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

// Targets from issue 3, at the largest service count.
const (
	TargetCold        = 8 * time.Second
	TargetIncremental = 50 * time.Millisecond // p99
	TargetRSS         = 300 << 20             // bytes
	TargetConnect     = 1.10                  // VIP p50 / direct p50
	targetServices    = 50000                 // the count the targets apply to
)

// ErrVerification is wrapped by Run's error when a check failed: the kernel
// did not reach the state of the cluster file, or a connection failed.
var ErrVerification = errors.New("services benchmark verification failed")

// Config shapes a run.
type Config struct {
	BinDir   string // holds podnetd and podnet
	WorkDir  string // the lab; a temp dir when empty
	Keep     bool   // keep WorkDir (podnetd's logs, the cluster files) afterwards
	Services []int  // service counts, one measurement each
	// PollInterval and ResyncInterval are podnetd's --poll-interval and
	// --resync-interval. The resync is set long so that no periodic full sync
	// lands among the timed changes.
	PollInterval   time.Duration
	ResyncInterval time.Duration
	Changes        int // endpoint changes timed per service count
	Connects       int // timed connect() calls per target
	ColdTimeout    time.Duration
	ChangeTimeout  time.Duration
	// ProfileDir, when set, receives CPU profiles of the cluster file parse and
	// of nft.Table.Sync, taken in the benchmark process with the same code and
	// the same state as the daemon's (parse-N.pprof, sync-N.pprof).
	ProfileDir string
}

// Default measures 1k, 10k and 50k services with 30 changes and 2000 connects
// per target each, podnetd polling its file every 20 ms.
func Default() Config {
	return Config{
		Services:       []int{1000, 10000, 50000},
		PollInterval:   20 * time.Millisecond,
		ResyncInterval: time.Hour,
		Changes:        30,
		Connects:       2000,
		ColdTimeout:    5 * time.Minute,
		ChangeTimeout:  time.Minute,
	}
}

// Validate checks the numbers and that podnetd and podnet exist.
func (c Config) Validate() error {
	if len(c.Services) == 0 {
		return errors.New("services: at least one count")
	}
	for _, n := range c.Services {
		if n < len(probeNames) || n > 200000 {
			return fmt.Errorf("services: each count must be in %d..200000, got %d", len(probeNames), n)
		}
	}
	if c.PollInterval < 10*time.Millisecond {
		return fmt.Errorf("poll interval must be at least 10ms (podnetd's minimum), got %s", c.PollInterval)
	}
	if c.ResyncInterval < time.Second {
		return fmt.Errorf("resync interval must be at least 1s, got %s", c.ResyncInterval)
	}
	if c.Changes < 1 || c.Changes > 1000 {
		return fmt.Errorf("changes must be in 1..1000, got %d", c.Changes)
	}
	if c.Connects < 1 || c.Connects > 20000 {
		return fmt.Errorf("connects must be in 1..20000, got %d", c.Connects)
	}
	for _, b := range []string{"podnetd", "podnet"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("%w (build with make build)", err)
		}
	}
	return nil
}

// Run brings a two-node lab up, measures each service count in turn, prints
// the report to out and tears the lab down. It must run inside a sandbox. The
// error wraps ErrVerification when a check failed.
func Run(ctx context.Context, cfg Config, out io.Writer) (err error) {
	if !sandbox.Inside() {
		return errors.New("benchsvc: not inside a sandbox")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	machine := bench.MachineInfo() // before the benchmark itself loads the machine
	if cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "podnet-bench-services-"); err != nil {
			return err
		}
	}
	if cfg.Keep {
		fmt.Fprintf(out, "work dir (kept): %s\n", cfg.WorkDir)
	} else {
		defer os.RemoveAll(cfg.WorkDir)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	e, err := setUp(ctx, cfg, out)
	if e != nil {
		defer func() { err = errors.Join(err, e.tearDown(ctx)) }()
	}
	if err != nil {
		return err
	}
	var results []*Result
	problems := 0
	for _, n := range cfg.Services {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(out, "▸ %d services ...\n", n)
		r, err := e.measure(ctx, n)
		if err != nil {
			return fmt.Errorf("%d services: %w", n, err)
		}
		problems += len(r.Problems)
		results = append(results, r)
	}
	printReport(out, cfg, machine, results)
	if problems > 0 {
		return fmt.Errorf("%w: %d problems", ErrVerification, problems)
	}
	return nil
}
