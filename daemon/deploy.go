package daemon

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// validateDeployment checks the options of deployed podnetd (the CNI plugin
// install, the metrics and health endpoints, the sysctl dir), each error
// naming its flag.
func (c Config) validateDeployment() error {
	var errs []error
	if c.CNIPluginSrc != "" && !filepath.IsAbs(c.CNIPluginSrc) {
		errs = append(errs, fmt.Errorf("--cni-plugin-src: must be an absolute path, got %q", c.CNIPluginSrc))
	}
	for _, f := range []struct{ flag, addr string }{{"metrics-addr", c.MetricsAddr}, {"health-addr", c.HealthAddr}} {
		if f.addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(f.addr)
		if _, perr := strconv.ParseUint(port, 10, 16); err == nil && perr != nil {
			err = fmt.Errorf("port %q is not a number in 0..65535", port)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: want host:port, got %q: %w", f.flag, f.addr, err))
		}
	}
	if c.MetricsAddr != "" && c.HealthAddr != "" && c.MetricsAddr != c.HealthAddr {
		errs = append(errs, fmt.Errorf("--health-addr: deprecated name of --metrics-addr, which serves /healthz and /readyz too; got %q and --metrics-addr %q: drop --health-addr", c.HealthAddr, c.MetricsAddr))
	}
	if !filepath.IsAbs(c.SysctlDir) {
		errs = append(errs, fmt.Errorf("--sysctl-dir: must be an absolute path, got %q", c.SysctlDir))
	}
	return errors.Join(errs...)
}

// metricsAddr is the address of the listener of /metrics, /healthz and
// /readyz: --metrics-addr, or the deprecated --health-addr; empty: none.
func (c Config) metricsAddr() string {
	if c.MetricsAddr != "" {
		return c.MetricsAddr
	}
	return c.HealthAddr
}
