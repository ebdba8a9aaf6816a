package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAllocateSkipsReservedUntilExhausted(t *testing.T) {
	tests := []struct {
		r    string
		want []string
	}{
		{"10.0.0.0/30", []string{"10.0.0.2"}},
		{"10.0.0.0/29", []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}},
		{"10.0.0.8/29", []string{"10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}},
		{"fd00::/126", []string{"fd00::2", "fd00::3"}},
	}
	for _, tt := range tests {
		t.Run(tt.r, func(t *testing.T) {
			a := newAllocator(t, "", tt.r)
			var got []string
			for i := range len(tt.want) {
				got = append(got, mustAllocate(t, a, fmt.Sprint("c", i))...)
			}
			assertEqual(t, "allocated", got, tt.want)

			_, err := a.Allocate("one-too-many", "eth0")
			if !errors.Is(err, ErrExhausted) {
				t.Fatalf("Allocate on full range: error = %v, want ErrExhausted", err)
			}
			if !strings.Contains(err.Error(), tt.r) {
				t.Errorf("error %q does not name range %s", err, tt.r)
			}
			if got := a.Get("one-too-many", "eth0"); got != nil {
				t.Errorf("failed Allocate left %v", describe(got))
			}
			// Freeing the first address makes it the only candidate: the walk
			// must wrap past the end of the range onto it.
			mustRelease(t, a, "c0")
			assertEqual(t, "after wrap", mustAllocate(t, a, "again"), tt.want[:1])
		})
	}
}

func TestAllocateIdempotent(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24", "fd00::/64")
	first, err := a.Allocate("c1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Allocate("c1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "re-Allocate", describe(again), describe(first))
	assertEqual(t, "Get", describe(a.Get("c1", "eth0")), describe(first))
	assertEqual(t, "other interface", mustAllocateIf(t, a, "c1", "net1"), []string{"10.0.0.3", "fd00::3"})
	if n := len(a.List()); n != 4 {
		t.Errorf("List has %d allocations, want 4", n)
	}
}

func mustAllocateIf(t *testing.T, a *Allocator, id, ifName string) []string {
	t.Helper()
	got, err := a.Allocate(id, ifName)
	if err != nil {
		t.Fatalf("Allocate(%q, %q): %v", id, ifName, err)
	}
	return addrs(got)
}

// TestRoundRobin checks that a released address is not handed out again
// until the cursor has gone round the range.
func TestRoundRobin(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/29") // usable .2 to .6
	steps := []struct {
		op, id, want string // op "+" allocates, "-" releases
	}{
		{"+", "a", "10.0.0.2"},
		{"-", "a", ""},
		{"+", "b", "10.0.0.3"},
		{"+", "c", "10.0.0.4"},
		{"-", "b", ""},
		{"+", "d", "10.0.0.5"},
		{"+", "e", "10.0.0.6"},
		{"+", "f", "10.0.0.2"}, // wraps past broadcast to the first usable
		{"+", "g", "10.0.0.3"}, // skips nothing: .3 was freed
		{"-", "d", ""},
		{"+", "h", "10.0.0.5"}, // .4 is taken, next free after .3
	}
	for i, s := range steps {
		if s.op == "-" {
			mustRelease(t, a, s.id)
			continue
		}
		if got := mustAllocate(t, a, s.id); len(got) != 1 || got[0] != s.want {
			t.Fatalf("step %d: Allocate(%q) = %v, want %s", i, s.id, got, s.want)
		}
	}
}

func TestDualStack(t *testing.T) {
	a := newAllocator(t, "", "fd00:10:244:1::/64", "10.244.1.0/24")
	got, err := a.Allocate("c1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"c1 eth0 10.244.1.2/24 from 10.244.1.0/24",
		"c1 eth0 fd00:10:244:1::2/64 from fd00:10:244:1::/64",
	}
	var lines []string
	for _, line := range describe(got) {
		lines = append(lines, line[:strings.Index(line, " at ")])
	}
	assertEqual(t, "dual-stack allocation", lines, want)
}

// TestDualStackRollback checks that the IPv4 address is given back when
// the IPv6 range is full.
func TestDualStackRollback(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.0.0.0/24", "fd00::/126")
	mustAllocate(t, a, "c1")
	mustAllocate(t, a, "c2")
	_, err := a.Allocate("c3", "eth0")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "fd00::/126") {
		t.Fatalf("Allocate with IPv6 full: error = %v, want ErrExhausted naming fd00::/126", err)
	}
	if got := a.Get("c3", "eth0"); got != nil {
		t.Errorf("rolled back attachment still holds %v", describe(got))
	}
	if got := a.Stats()[0].Used; got != 2 {
		t.Errorf("IPv4 used = %d after rollback, want 2", got)
	}
	a.Close()
	b := newAllocator(t, dir, "10.0.0.0/24", "fd00::/126")
	if n := len(b.List()); n != 4 {
		t.Errorf("after restart %d allocations on disk, want 4: %v", n, describe(b.List()))
	}
}

func TestIPv6Slash64IsFast(t *testing.T) {
	a := newAllocator(t, "", "fd00:10:244:1::/64")
	start := time.Now()
	const n = 500
	seen := make(map[string]bool, n)
	for i := range n {
		for _, addr := range mustAllocate(t, a, fmt.Sprint("c", i)) {
			if seen[addr] {
				t.Fatalf("address %s handed out twice", addr)
			}
			seen[addr] = true
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("%d allocations from a /64 took %v", n, d)
	}
	st := a.Stats()[0]
	if st.Used != n || st.Size != 1<<64-2 {
		t.Errorf("Stats = %+v, want Used %d and Size 2^64-2", st, n)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24", "fd00::/64")
	const n = 64
	results := make([][]Allocation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i], errs[i] = a.Allocate(fmt.Sprint("c", i), "eth0") })
	}
	wg.Wait()
	seen := make(map[netip.Addr]int)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Allocate c%d: %v", i, errs[i])
		}
		if len(results[i]) != 2 {
			t.Errorf("c%d got %d addresses, want 2", i, len(results[i]))
		}
		for _, al := range results[i] {
			if prev, dup := seen[al.Addr.Addr()]; dup {
				t.Errorf("%s handed to both c%d and c%d", al.Addr, prev, i)
			}
			seen[al.Addr.Addr()] = i
		}
	}
	for _, st := range a.Stats() {
		if st.Used != n {
			t.Errorf("Stats(%s).Used = %d, want %d", st.Range, st.Used, n)
		}
	}
}

func TestSetRanges(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24")
	mustAllocate(t, a, "old")
	if err := a.SetRanges(prefixes("10.1.0.0/24")); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "old allocation kept", addrs(a.Get("old", "eth0")), []string{"10.0.0.2"})
	assertEqual(t, "new allocation", mustAllocate(t, a, "new"), []string{"10.1.0.2"})
	assertEqual(t, "List", addrs(a.List()), []string{"10.0.0.2", "10.1.0.2"})
	assertEqual(t, "Stats", a.Stats(), []RangeStats{{prefixes("10.1.0.0/24")[0], 253, 1}})
	released, err := a.Release("old", "eth0")
	if err != nil || len(released) != 1 || released[0].Range.String() != "10.0.0.0/24" {
		t.Errorf("Release(old) = %v, %v; want the 10.0.0.0/24 allocation", describe(released), err)
	}
	// Widening to a range that contains an old allocation counts it.
	mustAllocate(t, a, "old2")
	if err := a.SetRanges(prefixes("10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if got := a.Stats()[0].Used; got != 2 {
		t.Errorf("Used after widening = %d, want 2", got)
	}
}

func TestGC(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24", "fd00::/64")
	for _, id := range []string{"keep1", "drop1", "keep2", "drop2"} {
		mustAllocate(t, a, id)
	}
	released, err := a.GC(func(id, ifName string) bool { return strings.HasPrefix(id, "keep") })
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "released", addrs(released), []string{"10.0.0.3", "10.0.0.5", "fd00::3", "fd00::5"})
	var left []string
	for _, al := range a.List() {
		left = append(left, al.ContainerID)
	}
	assertEqual(t, "kept", left, []string{"keep1", "keep2", "keep1", "keep2"})
}

func TestStats(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/29", "10.0.1.0/30", "fd00::/64")
	for i := range 6 { // fills 10.0.0.0/29, then one from 10.0.1.0/30
		mustAllocate(t, a, fmt.Sprint("c", i))
	}
	r := prefixes("10.0.0.0/29", "10.0.1.0/30", "fd00::/64")
	want := []RangeStats{{r[0], 5, 5}, {r[1], 1, 1}, {r[2], 1<<64 - 2, 6}}
	assertEqual(t, "Stats", a.Stats(), want)
	_, err := a.Allocate("c6", "eth0")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.0.0.0/29, 10.0.1.0/30") {
		t.Errorf("error = %v, want ErrExhausted naming both IPv4 ranges", err)
	}
	mustRelease(t, a, "c0")
	want[0].Used, want[2].Used = 4, 5
	assertEqual(t, "Stats after release", a.Stats(), want)
}

func TestInvalidAttachment(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24")
	tests := []struct {
		id, ifName string
		ok         bool
	}{
		{"c", "eth0", true},
		{"c/with/slashes and spaces", "eth0", true},
		{"c", "exactly15chars_", true},
		{"", "eth0", false},
		{"c", "", false},
		{"c", "a/b", false},
		{"c", "sixteen_chars_ab", false},
	}
	for _, tt := range tests {
		_, err := a.Allocate(tt.id, tt.ifName)
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, ErrInvalidAttachment)) {
			t.Errorf("Allocate(%q, %q) error = %v, want ok=%v", tt.id, tt.ifName, err, tt.ok)
		}
		if _, err := a.Release(tt.id, tt.ifName); tt.ok != (err == nil) {
			t.Errorf("Release(%q, %q) error = %v, want ok=%v", tt.id, tt.ifName, err, tt.ok)
		}
	}
}

func TestReleaseUnknown(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24")
	got, err := a.Release("nobody", "eth0")
	if got != nil || err != nil {
		t.Errorf("Release(unknown) = %v, %v; want nil, nil", got, err)
	}
}

func TestNoRange(t *testing.T) {
	a := newAllocator(t, "")
	if _, err := a.Allocate("c", "eth0"); !errors.Is(err, ErrNoRange) {
		t.Fatalf("Allocate without ranges: error = %v, want ErrNoRange", err)
	}
	if err := a.SetRanges(prefixes("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "after SetRanges", mustAllocate(t, a, "c"), []string{"10.0.0.2"})
}

func TestClosed(t *testing.T) {
	a := newAllocator(t, "", "10.0.0.0/24")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := a.Allocate("c", "eth0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Allocate after Close: error = %v, want ErrClosed", err)
	}
	if _, err := a.Release("c", "eth0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Release after Close: error = %v, want ErrClosed", err)
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	a := newAllocator(b, "", "10.0.0.0/16", "fd00::/64")
	for i := range 1000 { // a realistically busy node
		mustAllocate(b, a, fmt.Sprint("resident", i))
	}
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprint("c", i)
		if _, err := a.Allocate(id, "eth0"); err != nil {
			b.Fatal(err)
		}
		if _, err := a.Release(id, "eth0"); err != nil {
			b.Fatal(err)
		}
	}
}
