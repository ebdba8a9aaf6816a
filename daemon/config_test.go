package daemon

import (
	"strings"
	"testing"
	"time"
)

// validConfig is Default plus the fields it leaves empty.
func validConfig() Config {
	c := Default()
	c.NodeName = "node-a"
	c.ClusterFile = "/etc/podnet/cluster.yaml"
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := Default().Validate(); err == nil {
		t.Fatal("Default() without --node-name and --cluster-file validated")
	}
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("Default() plus required fields: %v", err)
	}

	tests := []struct {
		name   string
		change func(*Config)
		flag   string
	}{
		{"no node name", func(c *Config) { c.NodeName = "" }, "--node-name"},
		{"no cluster file", func(c *Config) { c.ClusterFile = "" }, "--cluster-file"},
		{"relative socket", func(c *Config) { c.Socket = "run/podnet.sock" }, "--socket"},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, "--state-dir"},
		{"relative conf dir", func(c *Config) { c.CNIConfDir = "net.d" }, "--cni-conf-dir"},
		{"empty bin dir", func(c *Config) { c.CNIBinDir = "" }, "--cni-bin-dir"},
		{"cni version", func(c *Config) { c.CNIVersion = "2.0.0" }, "--cni-version"},
		{"bridge too long", func(c *Config) { c.Bridge = "abcdefghijklmnop" }, "--bridge"},
		{"bridge with slash", func(c *Config) { c.Bridge = "br/0" }, "--bridge"},
		{"mtu too small", func(c *Config) { c.MTU = 575 }, "--mtu"},
		{"mtu too large", func(c *Config) { c.MTU = 65536 }, "--mtu"},
		{"mtu negative", func(c *Config) { c.MTU = -1 }, "--mtu"},
		{"resync too short", func(c *Config) { c.ResyncInterval = 999 * time.Millisecond }, "--resync-interval"},
		{"poll too short", func(c *Config) { c.PollInterval = time.Millisecond }, "--poll-interval"},
		{"log format", func(c *Config) { c.LogFormat = "text" }, "--log-format"},
		{"log level", func(c *Config) { c.LogLevel = "trace" }, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %s", tt.flag)
			}
			if !strings.Contains(err.Error(), tt.flag+":") {
				t.Errorf("Validate() = %q, want it to name %s", err, tt.flag)
			}
		})
	}
}

func TestConfigValidateAcceptsEdges(t *testing.T) {
	for _, change := range []func(*Config){
		func(c *Config) { c.MTU = 576 },
		func(c *Config) { c.MTU = 65535 },
		func(c *Config) { c.CNIVersion = "0.3.1" },
		func(c *Config) { c.LogFormat = "json" },
		func(c *Config) { c.LogLevel = "DEBUG" },
		func(c *Config) { c.ResyncInterval = time.Second },
		func(c *Config) { c.PollInterval = 10 * time.Millisecond },
	} {
		c := validConfig()
		change(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", c, err)
		}
	}
}

func TestConfigValidateReportsEveryField(t *testing.T) {
	c := validConfig()
	c.NodeName, c.MTU, c.LogFormat = "", 1, "xml"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, flag := range []string{"--node-name", "--mtu", "--log-format"} {
		if !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate() = %q, missing %s", err, flag)
		}
	}
}
