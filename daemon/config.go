// Package daemon is podnetd: it wires the cluster-state source, IPAM, routing and
// nftables together, keeps the node's kernel state in step with the cluster, and
// serves the CNI plugin and the debug API on a unix socket. It is the only part
// of podnet that logs.
package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Config is podnetd's configuration. Build it with Default, change fields, then
// call Validate.
type Config struct {
	NodeName    string
	ClusterFile string // standalone mode: YAML file with nodes (and services)
	Socket      string
	// SocketGroup, a group name or number, may read the debug API: the
	// socket becomes mode 0660 with this group. Empty: root only (0600).
	SocketGroup string
	StateDir    string
	CNIConfDir  string
	CNIBinDir   string
	CNIVersion  string
	Bridge      string
	// MTU of pod interfaces and the bridge; 0 means the MTU of the interface that
	// holds the node's address.
	MTU int
	// ResyncInterval is how often the full node state is re-checked against the
	// kernel even without events.
	ResyncInterval time.Duration
	// PollInterval is how often the cluster file is checked for changes.
	PollInterval time.Duration
	LogFormat    string // console or json
	LogLevel     string // debug, info, warn, error

	// Cluster-state source (source.go).

	// Source is where the cluster state comes from: SourceFile (ClusterFile)
	// or SourceKube (the Kubernetes API); empty picks SourceKube when
	// Kubeconfig is set, or when ClusterFile is not and podnetd runs in a
	// pod, SourceFile otherwise.
	Source string
	// Kubeconfig is the kubeconfig file of Kubernetes mode; empty: the
	// in-cluster config of the pod's service account.
	Kubeconfig string

	// Deployment options (deploy.go).

	// CNIPluginSrc is the podnet CNI plugin binary that podnetd copies into
	// CNIBinDir at start when it differs; empty: the plugin is installed by
	// other means.
	CNIPluginSrc string
	// MetricsAddr is the host:port of the HTTP listener serving /metrics
	// (Prometheus, docs/metrics.md), /healthz and /readyz; empty: not served.
	MetricsAddr string
	// HealthAddr is the deprecated name of MetricsAddr, kept for existing
	// deployments: set alone, it serves all three endpoints too. Validate
	// rejects both set to different addresses.
	HealthAddr string
	// SysctlDir is where the net.* sysctls are written: /proc/sys, or in a
	// container (whose /proc/sys is read-only) a directory holding a
	// read-write mount of the host's /proc/sys/net.
	SysctlDir string
}

// Default returns the configuration podnetd uses unless told otherwise.
func Default() Config {
	return Config{
		Socket:         "/run/podnet/podnet.sock",
		StateDir:       "/var/lib/podnet",
		CNIConfDir:     "/etc/cni/net.d",
		CNIBinDir:      "/opt/cni/bin",
		CNIVersion:     "1.1.0",
		Bridge:         "podnet0",
		ResyncInterval: 30 * time.Second,
		PollInterval:   time.Second,
		LogFormat:      "console",
		LogLevel:       "info",
		SysctlDir:      "/proc/sys",
	}
}

var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// Validate reports the first invalid field, named as its flag.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...)))
	}
	if c.NodeName == "" {
		bad("node-name", "required")
	}
	errs = append(errs, c.validateSource())
	for flag, p := range map[string]string{"socket": c.Socket, "state-dir": c.StateDir, "cni-conf-dir": c.CNIConfDir, "cni-bin-dir": c.CNIBinDir} {
		if !filepath.IsAbs(p) {
			bad(flag, "must be an absolute path, got %q", p)
		}
	}
	switch c.CNIVersion {
	case "0.3.1", "0.4.0", "1.0.0", "1.1.0":
	default:
		bad("cni-version", "must be one of 0.3.1, 0.4.0, 1.0.0, 1.1.0, got %q", c.CNIVersion)
	}
	if !ifNameRE.MatchString(c.Bridge) {
		bad("bridge", "invalid interface name %q", c.Bridge)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		bad("mtu", "must be 0 (auto) or 576..65535, got %d", c.MTU)
	}
	if c.ResyncInterval < time.Second {
		bad("resync-interval", "must be at least 1s, got %s", c.ResyncInterval)
	}
	if c.PollInterval < 10*time.Millisecond {
		bad("poll-interval", "must be at least 10ms, got %s", c.PollInterval)
	}
	if c.LogFormat != "console" && c.LogFormat != "json" {
		bad("log-format", "must be console or json, got %q", c.LogFormat)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	errs = append(errs, c.validateDeployment())
	return errors.Join(errs...)
}
