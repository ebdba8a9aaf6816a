package daemon

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const validClusterYAML = `
nodes:
- name: node-a
  addresses: [192.168.1.10, "fd00::10"]
  podCIDRs: [10.244.0.0/24, "fd00:10:244::/64"]
- name: node-b
  addresses: [192.168.1.11]
  podCIDRs: [10.244.1.0/24]
- name: node-c
  addresses: []
  podCIDRs: []
services: []
`

func TestParseClusterValid(t *testing.T) {
	c, err := ParseCluster([]byte(validClusterYAML))
	if err != nil {
		t.Fatalf("ParseCluster: %v", err)
	}
	want := []Node{
		{
			Name:      "node-a",
			Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10")},
			PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:10:244::/64")},
		},
		{
			Name:      "node-b",
			Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.11")},
			PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
		},
		{Name: "node-c"},
	}
	if diff := cmp.Diff(want, c.Nodes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if len(c.Services) != 0 {
		t.Errorf("services = %v, want none", c.Services)
	}
	if n, ok := c.Node("node-b"); !ok || n.Name != "node-b" {
		t.Errorf("Node(node-b) = %v, %v", n, ok)
	}
	if _, ok := c.Node("node-x"); ok {
		t.Error("Node(node-x) found a node that is not there")
	}
}

func TestParseClusterErrors(t *testing.T) {
	const nodeA = "- name: a\n  addresses: [192.168.1.10]\n  podCIDRs: [10.244.0.0/24]\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{
			name: "bad address",
			yaml: "nodes:\n" + nodeA + "- name: b\n  addresses: [192.168.1.300]\n  podCIDRs: [10.244.1.0/24]\n",
			want: []string{"nodes[1].addresses[0]", "192.168.1.300"},
		},
		{
			name: "loopback address",
			yaml: "nodes:\n- name: a\n  addresses: [127.0.0.1]\n",
			want: []string{"nodes[0].addresses[0]"},
		},
		{
			name: "unspecified address",
			yaml: "nodes:\n" + nodeA + "- name: b\n  addresses: [192.168.1.11, \"::\"]\n",
			want: []string{"nodes[1].addresses[1]"},
		},
		{
			name: "not a CIDR",
			yaml: "nodes:\n- name: a\n  addresses: [192.168.1.10]\n  podCIDRs: [10.244.0.0]\n",
			want: []string{"nodes[0].podCIDRs[0]", "not a CIDR"},
		},
		{
			name: "unmasked CIDR",
			yaml: "nodes:\n" + nodeA + "- name: b\n  addresses: [192.168.1.11]\n  podCIDRs: [10.244.1.0/24, 10.244.2.7/24]\n",
			want: []string{"nodes[1].podCIDRs[1]", "network prefix"},
		},
		{
			name: "CIDR too small",
			yaml: "nodes:\n- name: a\n  addresses: [192.168.1.10]\n  podCIDRs: [10.244.0.0/31]\n",
			want: []string{"nodes[0].podCIDRs[0]", "too small"},
		},
		{
			name: "overlapping podCIDRs",
			yaml: "nodes:\n" + nodeA + "- name: b\n  addresses: [192.168.1.11]\n  podCIDRs: [10.244.0.128/25]\n",
			want: []string{"nodes[1].podCIDRs[0]", "overlaps 10.244.0.0/24 of node a"},
		},
		{
			name: "duplicate node name",
			yaml: "nodes:\n" + nodeA + "- name: a\n  addresses: [192.168.1.11]\n",
			want: []string{"nodes[1].name", "duplicate"},
		},
		{
			name: "missing name",
			yaml: "nodes:\n- addresses: [192.168.1.10]\n",
			want: []string{"nodes[0].name", "required"},
		},
		{
			name: "podCIDRs without address",
			yaml: "nodes:\n- name: a\n  podCIDRs: [10.244.0.0/24]\n",
			want: []string{"nodes[0].addresses"},
		},
		{
			name: "unknown field",
			yaml: "nodes:\n- name: a\n  addresses: [192.168.1.10]\n  podCIDR: 10.244.0.0/24\n",
			want: []string{`unknown field "podCIDR"`},
		},
		{
			name: "unknown top-level field",
			yaml: "nodes: []\nnode: x\n",
			want: []string{`unknown field "node"`},
		},
		{
			name: "invalid node with valid services",
			yaml: "nodes:\n- name: a\n  addresses: [192.168.1.300]\nservices:\n- name: web\n  clusterIPs: [10.96.0.10]\n  ports: [{port: 80}]\n",
			want: []string{"nodes[0].addresses[0]"},
		},
		{
			name: "services not a list",
			yaml: "nodes: []\nservices: {name: web}\n",
			want: []string{"decode: ", "services"},
		},
		{
			name: "yaml syntax error",
			yaml: "nodes:\n- name: a\n addresses: [192.168.1.10\n",
			want: []string{"yaml: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCluster([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseCluster = nil error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseCluster error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadClusterFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(good, []byte(validClusterYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	c, raw, err := LoadClusterFile(good)
	if err != nil {
		t.Fatalf("LoadClusterFile: %v", err)
	}
	if len(c.Nodes) != 3 || string(raw) != validClusterYAML {
		t.Errorf("LoadClusterFile = %d nodes, raw %q", len(c.Nodes), raw)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("nodes:\n- addresses: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadClusterFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadClusterFile(invalid) = %v, want an error naming the file", err)
	}
	if _, _, err := LoadClusterFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadClusterFile(missing) = %v, want os.ErrNotExist", err)
	}
}
