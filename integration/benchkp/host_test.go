package benchkp

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHostStateDiff(t *testing.T) {
	before := HostState{
		Files:   map[string]string{"/proc/sys/net/netfilter/nf_conntrack_max": "262144", "/sys/module/nf_conntrack/parameters/hashsize": "65536"},
		Ruleset: []string{"chain 2 filter input: 3 rules", "table 2 filter"},
	}
	if d := before.Diff(before); d != nil {
		t.Errorf("Diff of the same state = %v, want nil", d)
	}
	after := HostState{
		Files:   map[string]string{"/proc/sys/net/netfilter/nf_conntrack_max": "524288", "/sys/module/nf_conntrack/parameters/hashsize": "65536"},
		Ruleset: []string{"chain 2 filter input: 4 rules", "table 2 filter", "table 2 kube-proxy"},
	}
	want := []string{
		"/proc/sys/net/netfilter/nf_conntrack_max: 524288, was 262144",
		"nftables: gone or changed: chain 2 filter input: 3 rules",
		"nftables: new or changed: chain 2 filter input: 4 rules",
		"nftables: new or changed: table 2 kube-proxy",
	}
	if diff := cmp.Diff(want, after.Diff(before)); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
}
