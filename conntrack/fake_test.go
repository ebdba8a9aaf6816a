package conntrack

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestFake(t *testing.T) {
	udp := uint8(unix.IPPROTO_UDP)
	var f Fake
	f.Add(udp4, udp6, nodePort4)

	endpointGone := []Filter{{Proto: udp, OrigDst: vip4, OrigPort: 53, ReplySrc: ep4}}
	if n, err := f.Delete(endpointGone); n != 1 || err != nil {
		t.Fatalf("Delete(endpoint gone) = %d, %v; want 1, nil", n, err)
	}
	invalid := []Filter{{Proto: udp}}
	if n, err := f.Delete(invalid); n != 0 || !errors.Is(err, ErrInvalidFilter) {
		t.Fatalf("Delete(invalid) = %d, %v; want 0, ErrInvalidFilter", n, err)
	}
	f.DeleteErr = errors.New("boom")
	nodePort := []Filter{{Proto: udp, OrigPort: 30053}}
	if n, err := f.Delete(nodePort); n != 0 || err != f.DeleteErr {
		t.Fatalf("Delete with DeleteErr = %d, %v; want 0, %v", n, err, f.DeleteErr)
	}

	entries := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.String())
		}
		return out
	}
	if diff := cmp.Diff(entries([]Entry{udp6, nodePort4}), entries(f.Entries())); diff != "" {
		t.Errorf("entries left (-want +got):\n%s", diff)
	}
	calls := f.Calls()
	want := [][]Filter{endpointGone, invalid, nodePort}
	if len(calls) != len(want) {
		t.Fatalf("recorded %d calls, want %d", len(calls), len(want))
	}
	for i := range want {
		if !cmp.Equal(calls[i], want[i], cmp.Comparer(func(a, b Filter) bool { return a == b })) {
			t.Errorf("call %d = %v, want %v", i, calls[i], want[i])
		}
	}
}

func TestFakeDeleteFunc(t *testing.T) {
	var f Fake
	f.Add(udp4, udp6, nodePort4)
	n, err := f.DeleteFunc(func(e Entry) bool { return e.OrigDst.Port() == 30053 })
	if n != 1 || err != nil {
		t.Fatalf("DeleteFunc = %d, %v; want 1, nil", n, err)
	}
	f.DeleteErr = errors.New("boom")
	if n, err := f.DeleteFunc(func(Entry) bool { return true }); n != 0 || err != f.DeleteErr {
		t.Fatalf("DeleteFunc with DeleteErr = %d, %v; want 0, %v", n, err, f.DeleteErr)
	}
	if got := f.Entries(); len(got) != 2 || got[0] != udp4 || got[1] != udp6 || f.FuncCalls() != 2 {
		t.Errorf("entries %v after %d calls, want udp4 and udp6 after 2", got, f.FuncCalls())
	}
}
