package daemon

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidateDeployment(t *testing.T) {
	for _, change := range []func(*Config){
		func(c *Config) {},
		func(c *Config) { c.CNIPluginSrc = "/usr/local/lib/podnet/podnet" },
		func(c *Config) { c.HealthAddr = "127.0.0.1:9765" },
		func(c *Config) { c.HealthAddr = ":9765" },
		func(c *Config) { c.HealthAddr = "[::1]:0" },
		func(c *Config) { c.MetricsAddr = "[192.0.2.1]:9765" }, // the DaemonSet's [$(NODE_IP)]
		func(c *Config) { c.MetricsAddr, c.HealthAddr = "127.0.0.1:9765", "127.0.0.1:9765" },
		func(c *Config) { c.SysctlDir = "/host/proc/sys" },
	} {
		c := validConfig()
		change(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", c, err)
		}
	}

	tests := []struct {
		name   string
		change func(*Config)
		flag   string
	}{
		{"relative plugin source", func(c *Config) { c.CNIPluginSrc = "bin/podnet" }, "--cni-plugin-src"},
		{"health addr without port", func(c *Config) { c.HealthAddr = "127.0.0.1" }, "--health-addr"},
		{"health port not a number", func(c *Config) { c.HealthAddr = "127.0.0.1:http" }, "--health-addr"},
		{"health port too large", func(c *Config) { c.HealthAddr = "127.0.0.1:65536" }, "--health-addr"},
		{"metrics addr without port", func(c *Config) { c.MetricsAddr = "127.0.0.1" }, "--metrics-addr"},
		{"metrics port not a number", func(c *Config) { c.MetricsAddr = "127.0.0.1:metrics" }, "--metrics-addr"},
		{"health and metrics addrs differ", func(c *Config) { c.MetricsAddr, c.HealthAddr = "127.0.0.1:9765", "127.0.0.1:9766" }, "--health-addr"},
		{"empty sysctl dir", func(c *Config) { c.SysctlDir = "" }, "--sysctl-dir"},
		{"relative sysctl dir", func(c *Config) { c.SysctlDir = "proc/sys" }, "--sysctl-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.flag+":") {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.flag)
			}
		})
	}
}

// With --sysctl-dir, sysctls are written under it, as under /proc/sys; a
// value already in place is not written again.
func TestSysctlWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net", "ipv4", "ip_forward")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := sysctlWriter(dir)
	if err := set("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	checkContent(t, path, []byte("1"))

	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(path, old, old)
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil { // as the kernel shows it
		t.Fatal(err)
	}
	os.Chtimes(path, old, old)
	if err := set("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if statFile(t, path).mtime != old {
		t.Error("a sysctl already set was written again")
	}
	if err := set("net.bridge.bridge-nf-call-iptables", "1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing sysctl: err = %v, want one wrapping fs.ErrNotExist", err)
	}
}

func TestNewUsesSysctlDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net", "ipv4", "ip_forward")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("0\n"), 0o644)
	td := newTestDaemon(t, func(c *Config) { c.SysctlDir = dir })
	d, err := New(td.cfg, td.log, Deps{Kernel: td.kernel, NFT: td.nft})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	checkContent(t, path, []byte("1"))
}
