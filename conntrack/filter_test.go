package conntrack

import (
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	addr = netip.MustParseAddr
	ap   = netip.MustParseAddrPort

	vip4, vip6 = addr("10.96.0.10"), addr("fd00:96::10")
	ep4, ep6   = addr("10.244.2.5"), addr("fd00:244:2::5")
)

// udp4 is a UDP entry from a client to VIP 10.96.0.10:53, DNATed to 10.244.2.5.
var udp4 = Entry{
	Proto:    unix.IPPROTO_UDP,
	OrigSrc:  ap("10.244.1.7:40001"),
	OrigDst:  ap("10.96.0.10:53"),
	ReplySrc: ap("10.244.2.5:5353"),
}

// udp6 is udp4 in IPv6.
var udp6 = Entry{
	Proto:    unix.IPPROTO_UDP,
	OrigSrc:  ap("[fd00:244:1::7]:40001"),
	OrigDst:  ap("[fd00:96::10]:53"),
	ReplySrc: ap("[fd00:244:2::5]:5353"),
}

// nodePort4 is a UDP entry to NodePort 30053 on node address 192.0.2.11.
var nodePort4 = Entry{
	Proto:    unix.IPPROTO_UDP,
	OrigSrc:  ap("198.51.100.7:40001"),
	OrigDst:  ap("192.0.2.11:30053"),
	ReplySrc: ap("10.244.2.5:5353"),
}

func TestFilterMatches(t *testing.T) {
	udp := uint8(unix.IPPROTO_UDP)
	tests := []struct {
		name   string
		filter Filter
		entry  Entry
		want   bool
	}{
		{"endpoint removed", Filter{Proto: udp, OrigDst: vip4, OrigPort: 53, ReplySrc: ep4}, udp4, true},
		{"endpoint removed, IPv6", Filter{Proto: udp, OrigDst: vip6, OrigPort: 53, ReplySrc: ep6}, udp6, true},
		{"other endpoint", Filter{Proto: udp, OrigDst: vip4, OrigPort: 53, ReplySrc: addr("10.244.2.6")}, udp4, false},
		{"other service port", Filter{Proto: udp, OrigDst: vip4, OrigPort: 54, ReplySrc: ep4}, udp4, false},
		{"other VIP", Filter{Proto: udp, OrigDst: addr("10.96.0.11"), OrigPort: 53}, udp4, false},
		{"other protocol", Filter{Proto: unix.IPPROTO_TCP, OrigDst: vip4, OrigPort: 53}, udp4, false},
		{"service got endpoints", Filter{Proto: udp, OrigDst: vip4, OrigPort: 53}, udp4, true},
		{"any port of the VIP", Filter{Proto: udp, OrigDst: vip4}, udp4, true},
		{"VIP of the other family", Filter{Proto: udp, OrigDst: vip4, OrigPort: 53}, udp6, false},
		{"the endpoint's port is not compared", Filter{Proto: udp, ReplySrc: ep4}, udp4, true},
		{"NodePort on any address", Filter{Proto: udp, OrigPort: 30053}, nodePort4, true},
		{"NodePort matches IPv6 too", Filter{Proto: udp, OrigPort: 53}, udp6, true},
		{"NodePort endpoint removed", Filter{Proto: udp, OrigPort: 30053, ReplySrc: ep4}, nodePort4, true},
		{"NodePort other endpoint", Filter{Proto: udp, OrigPort: 30053, ReplySrc: ep6}, nodePort4, false},
		{"other NodePort", Filter{Proto: udp, OrigPort: 30054}, nodePort4, false},
		{"OrigDst is not ReplySrc", Filter{Proto: udp, OrigDst: ep4}, udp4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Matches(tt.entry); got != tt.want {
				t.Errorf("Filter{%s}.Matches(%s) = %v, want %v", tt.filter, tt.entry, got, tt.want)
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	udp := uint8(unix.IPPROTO_UDP)
	tests := []struct {
		name    string
		filter  Filter
		wantErr bool
	}{
		{"endpoint removed", Filter{Proto: udp, OrigDst: vip4, OrigPort: 53, ReplySrc: ep4}, false},
		{"VIP and port", Filter{Proto: udp, OrigDst: vip6, OrigPort: 53}, false},
		{"NodePort", Filter{Proto: udp, OrigPort: 30053}, false},
		{"endpoint only", Filter{Proto: udp, ReplySrc: ep6}, false},
		{"no protocol", Filter{OrigDst: vip4, OrigPort: 53}, true},
		{"protocol only", Filter{Proto: udp}, true},
		{"zero", Filter{}, true},
		{"zone", Filter{Proto: udp, OrigDst: addr("fe80::1%eth0")}, true},
		{"IPv4-mapped", Filter{Proto: udp, OrigDst: addr("::ffff:10.96.0.10")}, true},
		{"IPv4-mapped endpoint", Filter{Proto: udp, OrigDst: vip6, ReplySrc: addr("::ffff:10.244.2.5")}, true},
		{"mixed families", Filter{Proto: udp, OrigDst: vip4, ReplySrc: ep6}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.filter.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate(%s) = %v, want error: %v", tt.filter, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidFilter) {
				t.Errorf("Validate(%s) = %v, does not match ErrInvalidFilter", tt.filter, err)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{Filter{Proto: unix.IPPROTO_UDP, OrigDst: vip4, OrigPort: 53, ReplySrc: ep4}.String(),
			"-p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.2.5"},
		{Filter{Proto: unix.IPPROTO_UDP, OrigPort: 30053}.String(), "-p udp --orig-port-dst 30053"},
		{Filter{Proto: 250, OrigDst: vip6}.String(), "-p 250 --orig-dst fd00:96::10"},
		{udp6.String(), "udp [fd00:244:1::7]:40001 -> [fd00:96::10]:53 reply-src [fd00:244:2::5]:5353"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// The port index used on large tables must agree with trying every filter.
func TestPortIndexAgrees(t *testing.T) {
	udp := uint8(unix.IPPROTO_UDP)
	icmp := Entry{Proto: unix.IPPROTO_ICMP, OrigSrc: ap("10.244.1.7:0"), OrigDst: ap("10.96.0.10:0"), ReplySrc: ap("10.244.2.5:0")}
	entries := []Entry{udp4, udp6, nodePort4, icmp}
	filterSets := [][]Filter{
		nil,
		{{Proto: udp, OrigDst: vip4, OrigPort: 53, ReplySrc: ep4}},
		{{Proto: udp, OrigPort: 30053}, {Proto: udp, OrigDst: vip6, OrigPort: 53}},
		{{Proto: udp, OrigDst: vip4}},
		{{Proto: udp, ReplySrc: ep4}, {Proto: udp, OrigPort: 54}},
		{{Proto: unix.IPPROTO_ICMP, OrigDst: vip4}},
	}
	for _, filters := range filterSets {
		idx := indexByPort(filters)
		for _, e := range entries {
			if got, want := idx.matches(e), matchAny(filters, e); got != want {
				t.Errorf("filters %v, entry %s: index says %v, trying every filter %v", filters, e, got, want)
			}
		}
	}
}
