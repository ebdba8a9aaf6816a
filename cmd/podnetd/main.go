// Command podnetd is podnet's node daemon. It only parses flags, builds the
// configuration, wires the daemon and runs it until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/daemon"
)

// Garbage collector settings unless GOGC / GOMEMLIMIT say otherwise: the heap
// may grow to 1.5× the live data (Go's default is 2×), and the collector works
// harder as the heap nears memLimit (a soft limit: above it, with more live
// data, podnetd only spends more CPU). At 50k services the live data is
// ~140 MB, and the start (the whole table in one batch) adds the batch.
const (
	gcPercent = 50
	memLimit  = 256 << 20
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memLimit)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podnetd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := daemon.Default()
	fs := flag.NewFlagSet("podnetd", flag.ContinueOnError)
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "this node's name in the cluster state")
	fs.StringVar(&cfg.ClusterFile, "cluster-file", cfg.ClusterFile, "standalone mode: YAML file listing nodes and services, re-read on change")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", cfg.Kubeconfig, "Kubernetes mode: kubeconfig of the API server to read Nodes, Services and EndpointSlices from")
	fs.StringVar(&cfg.Source, "source", cfg.Source, "file or kube (default: kube with --kubeconfig, or in a pod without --cluster-file, which then uses the in-cluster config; file otherwise)")
	fs.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket for the CNI plugin and podnetctl")
	fs.StringVar(&cfg.SocketGroup, "socket-group", cfg.SocketGroup, "group (name or gid) whose members may read the debug API on the socket (empty: root only)")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "persistent state (IPAM)")
	fs.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "where the CNI conflist is written")
	fs.StringVar(&cfg.CNIBinDir, "cni-bin-dir", cfg.CNIBinDir, "where CNI plugin binaries live")
	fs.StringVar(&cfg.CNIVersion, "cni-version", cfg.CNIVersion, "cniVersion of the conflist (1.0.0 for containerd 1.6/1.7)")
	fs.StringVar(&cfg.Bridge, "bridge", cfg.Bridge, "node bridge name")
	fs.IntVar(&cfg.MTU, "mtu", cfg.MTU, "pod MTU; 0 = MTU of the interface holding the node address")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", cfg.ResyncInterval, "full kernel re-check interval")
	fs.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "cluster file change check interval")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "console or json")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	// Deployment (daemon/deploy.go).
	fs.StringVar(&cfg.CNIPluginSrc, "cni-plugin-src", cfg.CNIPluginSrc, "CNI plugin binary to copy into --cni-bin-dir at start when it differs (empty: installed by other means)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "host:port serving HTTP /metrics (Prometheus), /healthz and /readyz (empty: off)")
	fs.StringVar(&cfg.HealthAddr, "health-addr", cfg.HealthAddr, "deprecated: the old name of --metrics-addr, which serves /healthz and /readyz too")
	fs.StringVar(&cfg.SysctlDir, "sysctl-dir", cfg.SysctlDir, "where net.* sysctls are written; in a container, a dir holding a read-write mount of the host's /proc/sys/net at net/")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Println(daemon.Version)
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := daemon.NewLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	d, err := daemon.New(cfg, log, deps(log))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return d.Run(ctx)
}

// deps are the daemon's kernel-facing parts: the real ones. Without ctnetlink,
// podnetd still runs, but leaves stale UDP conntrack entries to time out.
func deps(log *zap.Logger) daemon.Deps {
	var d daemon.Deps
	ct, err := conntrack.New()
	if err != nil {
		log.Warn("conntrack not reachable: stale UDP conntrack entries will not be deleted when service endpoints go away", zap.Error(err))
		return d
	}
	d.Conntrack = ct
	return d
}
