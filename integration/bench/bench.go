// Package bench times CNI ADD and DEL through libcni, called the way containerd
// calls them (AddNetworkList and DelNetworkList with a result cache), for
// podnet on a one-node lab and for the reference plugins bridge + host-local
// in a node namespace of their own, all inside the caller's sandbox.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// TargetRatio is how many times the reference's ADD+DEL pods/s podnet aims for.
const TargetRatio = 3.0

// ErrVerification is wrapped by Run's error when a check failed: an ADD or
// DEL failed, an address was handed out twice, or a DEL left something behind.
var ErrVerification = errors.New("benchmark verification failed")

// Config shapes a benchmark run.
type Config struct {
	BinDir    string // holds podnetd and podnet
	RefBinDir string // holds bridge and host-local
	WorkDir   string // lab, IPAM state and CNI caches; a temp dir when empty
	Keep      bool   // keep WorkDir (and podnetd's log) afterwards
	Pods      int    // pods per round
	Workers   int    // calls in flight in the concurrent mode
	Warmup    int    // untimed pods added and deleted per setup first
}

// Default is 100 pods, 1 and 10 at a time, after a warm-up of 5.
func Default() Config {
	return Config{Pods: 100, Workers: 10, Warmup: 5}
}

// Validate checks the numbers fit podnet's /24 per node and the binaries exist.
func (c Config) Validate() error {
	if c.Pods < 1 || c.Pods > 200 {
		return fmt.Errorf("pods must be in 1..200 (a lab node has a /24), got %d", c.Pods)
	}
	if c.Workers < 2 {
		return fmt.Errorf("workers must be at least 2, got %d", c.Workers)
	}
	if c.Warmup < 0 || c.Warmup > 20 {
		return fmt.Errorf("warmup must be in 0..20, got %d", c.Warmup)
	}
	for _, b := range []string{filepath.Join(c.BinDir, "podnetd"), filepath.Join(c.BinDir, "podnet"),
		filepath.Join(c.RefBinDir, "bridge"), filepath.Join(c.RefBinDir, "host-local")} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (build with make bench-cni)", err)
		}
	}
	return nil
}

// Run brings up both setups, times a round per setup and mode, prints the
// report to out, and tears everything down. It must run inside a sandbox. The
// error wraps ErrVerification when a check failed.
func Run(ctx context.Context, cfg Config, out io.Writer) (err error) {
	if !sandbox.Inside() {
		return errors.New("bench: not inside a sandbox")
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	machine := MachineInfo() // before the benchmark itself loads the machine
	if cfg.WorkDir == "" {
		if cfg.WorkDir, err = os.MkdirTemp("", "podnet-bench-"); err != nil {
			return err
		}
	}
	if cfg.Keep {
		fmt.Fprintf(out, "work dir (kept): %s\n", cfg.WorkDir)
	} else {
		defer os.RemoveAll(cfg.WorkDir)
	}

	l, err := lab.Up(ctx, lab.Options{Nodes: 1, BinDir: cfg.BinDir, WorkDir: filepath.Join(cfg.WorkDir, "lab")})
	if l != nil {
		defer func() { err = errors.Join(err, l.Down(context.Background())) }()
	}
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	pn, err := podnetSetup(l)
	if err != nil {
		return err
	}
	ref, err := refSetup(cfg.RefBinDir, filepath.Join(cfg.WorkDir, "ref"))
	if err != nil {
		return err
	}
	defer ref.Node.Delete()

	setups := []*Setup{pn, ref}
	for _, s := range setups {
		if err := warmUp(ctx, s, cfg.Warmup); err != nil {
			return err
		}
	}
	var rounds []*Round
	failed := 0
	for _, workers := range []int{1, cfg.Workers} {
		for _, s := range setups {
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(out, "▸ %s, %d pods %s ...\n", s.Name, cfg.Pods, modeName(workers))
			r, err := runRound(ctx, s, workers, cfg.Pods, fmt.Sprintf("%s-w%d", s.Tag, workers))
			if err != nil {
				return fmt.Errorf("%s, %s: %w", s.Name, modeName(workers), err)
			}
			failed += len(r.Problems)
			rounds = append(rounds, r)
		}
	}
	printReport(out, cfg, machine, rounds)
	if failed > 0 {
		return fmt.Errorf("%w: %d problems", ErrVerification, failed)
	}
	return nil
}
