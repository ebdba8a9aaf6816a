package ipam

import (
	"errors"
	"math"
	"net/netip"
	"testing"
)

func TestGateway(t *testing.T) {
	tests := []struct{ r, want string }{
		{"10.244.1.0/24", "10.244.1.1"},
		{"10.244.0.0/16", "10.244.0.1"},
		{"10.244.1.128/25", "10.244.1.129"},
		{"fd00:10:244:1::/64", "fd00:10:244:1::1"},
	}
	for _, tt := range tests {
		if got := Gateway(netip.MustParsePrefix(tt.r)); got.String() != tt.want {
			t.Errorf("Gateway(%s) = %s, want %s", tt.r, got, tt.want)
		}
	}
	if got := Gateway(netip.Prefix{}); got.IsValid() {
		t.Errorf("Gateway(invalid) = %s, want zero Addr", got)
	}
}

func TestRangeValidation(t *testing.T) {
	tests := []struct {
		name   string
		ranges []netip.Prefix
		ok     bool
	}{
		{"ipv4 /24", prefixes("10.244.1.0/24"), true},
		{"ipv4 /30 smallest", prefixes("10.244.1.0/30"), true},
		{"ipv6 /126 smallest", prefixes("fd00::/126"), true},
		{"dual stack", prefixes("10.244.1.0/24", "fd00::/64"), true},
		{"disjoint", prefixes("10.244.1.0/24", "10.244.2.0/24"), true},
		{"empty", nil, true},
		{"host bits set", prefixes("10.244.1.5/24"), false},
		{"ipv4 /31", prefixes("10.244.1.0/31"), false},
		{"ipv4 /32", prefixes("10.244.1.0/32"), false},
		{"ipv6 /127", prefixes("fd00::/127"), false},
		{"ipv4-mapped", prefixes("::ffff:10.0.0.0/120"), false},
		{"zero prefix", []netip.Prefix{{}}, false},
		{"overlap", prefixes("10.244.0.0/16", "10.244.1.0/24"), false},
		{"duplicate", prefixes("fd00::/64", "fd00::/64"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(t.TempDir(), tt.ranges)
			if err == nil {
				a.Close()
			}
			if tt.ok != (err == nil) {
				t.Fatalf("New(%v) error = %v, want ok=%v", tt.ranges, err, tt.ok)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidRange) {
				t.Errorf("New(%v) error = %v, want ErrInvalidRange", tt.ranges, err)
			}
			b := newAllocator(t, "", "192.168.0.0/24")
			err = b.SetRanges(tt.ranges)
			if tt.ok != (err == nil) {
				t.Fatalf("SetRanges(%v) error = %v, want ok=%v", tt.ranges, err, tt.ok)
			}
			if !tt.ok && b.Ranges()[0].String() != "192.168.0.0/24" {
				t.Errorf("failed SetRanges changed ranges to %v", b.Ranges())
			}
		})
	}
}

func TestRangeSize(t *testing.T) {
	tests := []struct {
		r    string
		want uint64
	}{
		{"10.0.0.0/30", 1},
		{"10.0.0.0/29", 5},
		{"10.0.0.0/24", 253},
		{"10.0.0.0/16", 65533},
		{"0.0.0.0/0", 1<<32 - 3},
		{"fd00::/126", 2},
		{"fd00::/120", 254},
		{"fd00::/65", 1<<63 - 2},
		{"fd00::/64", math.MaxUint64 - 1},
		{"fd00::/63", math.MaxUint64},
		{"fd00::/48", math.MaxUint64},
	}
	for _, tt := range tests {
		if got := rangeSize(netip.MustParsePrefix(tt.r)); got != tt.want {
			t.Errorf("rangeSize(%s) = %d, want %d", tt.r, got, tt.want)
		}
	}
}

func TestNextInRangeWraps(t *testing.T) {
	tests := []struct{ r, from, want string }{
		{"10.0.0.0/29", "10.0.0.1", "10.0.0.2"},
		{"10.0.0.0/29", "10.0.0.5", "10.0.0.6"},
		{"10.0.0.0/29", "10.0.0.6", "10.0.0.2"}, // skips broadcast .7
		{"10.0.0.8/29", "10.0.0.14", "10.0.0.10"},
		{"fd00::/126", "fd00::2", "fd00::3"},
		{"fd00::/126", "fd00::3", "fd00::2"}, // IPv6 has no broadcast
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff", "fd00::2"},
		{"ffff:ffff:ffff:ffff::/64", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::2"},
		{"255.255.255.0/24", "255.255.255.254", "255.255.255.2"},
	}
	for _, tt := range tests {
		got := nextInRange(netip.MustParsePrefix(tt.r), netip.MustParseAddr(tt.from))
		if got.String() != tt.want {
			t.Errorf("nextInRange(%s, %s) = %s, want %s", tt.r, tt.from, got, tt.want)
		}
	}
}
