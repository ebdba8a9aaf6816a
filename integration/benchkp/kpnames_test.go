package benchkp

import (
	"bytes"
	"net/netip"
	"testing"
)

// The expected names are kube-proxy's own, from the expected rulesets of
// pkg/proxy/nftables/proxier_test.go (v1.37.2).
func TestKPServiceChain(t *testing.T) {
	for _, tc := range []struct{ ns, name, port, want string }{
		{"ns1", "svc1", "p80", "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{"ns4", "svc4", "p80", "service-LAUZTJTB-ns4/svc4/tcp/p80"},
	} {
		if got := kpServiceChain(tc.ns, tc.name, "tcp", tc.port); got != tc.want {
			t.Errorf("kpServiceChain(%s/%s:%s) = %q, want %q", tc.ns, tc.name, tc.port, got, tc.want)
		}
	}
}

func TestServiceKey(t *testing.T) {
	// 10.96.0.16 . tcp . 80, each field padded to 4 bytes.
	want := []byte{10, 96, 0, 16, 6, 0, 0, 0, 0, 80, 0, 0}
	if got := serviceKey(netip.MustParseAddr("10.96.0.16"), 80); !bytes.Equal(got, want) {
		t.Errorf("serviceKey = %v, want %v", got, want)
	}
	ap, ok := addrPort([]byte{10, 244, 10, 3, 0x1f, 0x90, 0, 0})
	if !ok || ap != netip.MustParseAddrPort("10.244.10.3:8080") {
		t.Errorf("addrPort = %v, %v", ap, ok)
	}
	if _, ok := addrPort([]byte{1, 2, 3}); ok {
		t.Error("addrPort of 3 bytes: ok")
	}
}
