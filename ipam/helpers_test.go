package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// prefixes parses CIDR strings.
func prefixes(cidrs ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(cidrs))
	for i, c := range cidrs {
		out[i] = netip.MustParsePrefix(c)
	}
	return out
}

// newAllocator opens an Allocator on dir (a fresh one if empty) and closes
// it at the end of the test.
func newAllocator(t testing.TB, dir string, cidrs ...string) *Allocator {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	a, err := New(dir, prefixes(cidrs...))
	if err != nil {
		t.Fatalf("New(%q, %v): %v", dir, cidrs, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// mustAllocate allocates for (id, "eth0") and returns the addresses.
func mustAllocate(t testing.TB, a *Allocator, id string) []string {
	t.Helper()
	got, err := a.Allocate(id, "eth0")
	if err != nil {
		t.Fatalf("Allocate(%q): %v", id, err)
	}
	return addrs(got)
}

// mustRelease releases (id, "eth0").
func mustRelease(t testing.TB, a *Allocator, id string) {
	t.Helper()
	if _, err := a.Release(id, "eth0"); err != nil {
		t.Fatalf("Release(%q): %v", id, err)
	}
}

// addrs returns the addresses of allocs as text, without prefix length.
func addrs(allocs []Allocation) []string {
	out := make([]string, len(allocs))
	for i, al := range allocs {
		out[i] = al.Addr.Addr().String()
	}
	return out
}

// describe renders allocations as comparable text, one line each.
func describe(allocs []Allocation) []string {
	out := make([]string, len(allocs))
	for i, al := range allocs {
		out[i] = fmt.Sprintf("%s %s %s from %s at %s",
			al.ContainerID, al.IfName, al.Addr, al.Range, al.Created.Format(time.RFC3339Nano))
	}
	return out
}

func assertEqual[T comparable](t testing.TB, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}
