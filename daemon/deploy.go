package daemon

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// validateDeployment checks the options of deployed podnetd (the CNI plugin
// install, the health endpoints, the sysctl dir), each error naming its flag.
func (c Config) validateDeployment() error {
	var errs []error
	if c.CNIPluginSrc != "" && !filepath.IsAbs(c.CNIPluginSrc) {
		errs = append(errs, fmt.Errorf("--cni-plugin-src: must be an absolute path, got %q", c.CNIPluginSrc))
	}
	if c.HealthAddr != "" {
		_, port, err := net.SplitHostPort(c.HealthAddr)
		if _, perr := strconv.ParseUint(port, 10, 16); err == nil && perr != nil {
			err = fmt.Errorf("port %q is not a number in 0..65535", port)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--health-addr: want host:port, got %q: %w", c.HealthAddr, err))
		}
	}
	if !filepath.IsAbs(c.SysctlDir) {
		errs = append(errs, fmt.Errorf("--sysctl-dir: must be an absolute path, got %q", c.SysctlDir))
	}
	return errors.Join(errs...)
}
