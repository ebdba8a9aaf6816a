package daemon

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		in      string
		want    target
		wantErr string
	}{
		{"10.244.1.5", target{host: "10.244.1.5", addr: a("10.244.1.5")}, ""},
		{"10.244.1.5:8080", target{host: "10.244.1.5", addr: a("10.244.1.5"), port: "8080"}, ""},
		{"10.244.1.5:53/udp", target{host: "10.244.1.5", addr: a("10.244.1.5"), port: "53", proto: "udp"}, ""},
		{"10.244.1.5/TCP", target{host: "10.244.1.5", addr: a("10.244.1.5"), proto: "tcp"}, ""},
		{"fd00::5", target{host: "fd00::5", addr: a("fd00::5")}, ""},
		{"[fd00::5]:80/sctp", target{host: "fd00::5", addr: a("fd00::5"), port: "80", proto: "sctp"}, ""},
		{"web", target{host: "web"}, ""},
		{"web:http", target{host: "web", port: "http"}, ""},
		{"default/web", target{host: "default/web"}, ""},
		{"default/web:80/tcp", target{host: "default/web", port: "80", proto: "tcp"}, ""},
		{"default/web/udp", target{host: "default/web", proto: "udp"}, ""},
		{"", target{}, "--to is required"},
		{"10.244.1.5/icmp", target{}, `protocol "icmp"`},
		{"10.244.1.5:80/icmp", target{}, `protocol "icmp"`},
		{"10.244.1.5:0", target{}, "want 1..65535"},
		{"10.244.1.5:http", target{}, "want 1..65535"},
		{"[fd00::5:80", target{}, "missing ]"},
		{"fd00::zz", target{}, "is not an address"},
		{":80", target{}, "no destination host"},
	}
	for _, tt := range tests {
		got, err := parseTarget(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseTarget(%q) = %+v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}
