package conntrack

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/podnet/podnet/integration/sandbox"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { sandbox.Main(m) }

// labEntries is what the lab's flows leave in the node's table, as sorted text.
func labEntries() []string {
	var out []string
	for _, fl := range append(flows(lab4), flows(lab6)...) {
		out = append(out, fl.entry().String())
	}
	slices.Sort(out)
	return out
}

func TestTableDelete(t *testing.T) {
	sandbox.Require(t)
	udp, tcp := uint8(unix.IPPROTO_UDP), uint8(unix.IPPROTO_TCP)
	tests := []struct {
		name    string
		filters []Filter
		deleted []string
	}{{
		name:    "endpoint of a VIP removed",
		filters: []Filter{{Proto: udp, OrigDst: lab4.vip, OrigPort: 53, ReplySrc: lab4.ep1}},
		deleted: []string{"udp 10.0.0.1:40001 -> 10.96.0.10:53 reply-src 10.0.0.11:5353"},
	}, {
		name:    "IPv6 endpoint of a VIP removed",
		filters: []Filter{{Proto: udp, OrigDst: lab6.vip, OrigPort: 53, ReplySrc: lab6.ep2}},
		deleted: []string{"udp [fd00::1]:40002 -> [fd00:96::10]:53 reply-src [fd00::12]:5353"},
	}, {
		name:    "dual-stack VIP got endpoints",
		filters: []Filter{{Proto: udp, OrigDst: lab4.vip, OrigPort: 53}, {Proto: udp, OrigDst: lab6.vip, OrigPort: 53}},
		deleted: []string{
			"udp 10.0.0.1:40001 -> 10.96.0.10:53 reply-src 10.0.0.11:5353",
			"udp 10.0.0.1:40002 -> 10.96.0.10:53 reply-src 10.0.0.12:5353",
			"udp [fd00::1]:40001 -> [fd00:96::10]:53 reply-src [fd00::11]:5353",
			"udp [fd00::1]:40002 -> [fd00:96::10]:53 reply-src [fd00::12]:5353",
		},
	}, {
		name:    "NodePort on any address",
		filters: []Filter{{Proto: udp, OrigPort: nodePort}},
		deleted: []string{
			"udp 10.0.0.1:40005 -> 10.0.0.2:30053 reply-src 10.0.0.11:5353",
			"udp 10.0.0.1:40006 -> 10.0.0.2:30053 reply-src 10.0.0.12:5353",
			"udp [fd00::1]:40005 -> [fd00::2]:30053 reply-src [fd00::11]:5353",
			"udp [fd00::1]:40006 -> [fd00::2]:30053 reply-src [fd00::12]:5353",
		},
	}, {
		name:    "NodePort endpoint removed",
		filters: []Filter{{Proto: udp, OrigPort: nodePort, ReplySrc: lab6.ep2}},
		deleted: []string{"udp [fd00::1]:40006 -> [fd00::2]:30053 reply-src [fd00::12]:5353"},
	}, {
		name: "overlapping filters delete an entry once",
		filters: []Filter{
			{Proto: udp, OrigDst: lab4.vip, OrigPort: 54},
			{Proto: udp, OrigDst: lab4.vip, ReplySrc: lab4.ep1},
		},
		deleted: []string{
			"udp 10.0.0.1:40001 -> 10.96.0.10:53 reply-src 10.0.0.11:5353",
			"udp 10.0.0.1:40003 -> 10.96.0.10:54 reply-src 10.0.0.11:5353",
		},
	}, {
		name:    "TCP",
		filters: []Filter{{Proto: tcp, OrigDst: lab6.vip, OrigPort: 53}},
		deleted: []string{"tcp [fd00::1]:40004 -> [fd00:96::10]:53 reply-src [fd00::11]:5353"},
	}, {
		name:    "nothing matches",
		filters: []Filter{{Proto: udp, OrigDst: lab4.vip, OrigPort: 55}, {Proto: udp, ReplySrc: lab4.client}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := newLab(t)
			all := labEntries()
			if diff := cmp.Diff(all, listEntries(t, node)); diff != "" {
				t.Fatalf("entries after the lab's traffic (-want +got):\n%s", diff)
			}
			tbl, err := New(WithNetNSFd(node.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			n, err := tbl.Delete(tt.filters)
			if err != nil {
				t.Fatalf("Delete(%v): %v", tt.filters, err)
			}
			if n != len(tt.deleted) {
				t.Errorf("Delete(%v) = %d, want %d", tt.filters, n, len(tt.deleted))
			}
			left := slices.DeleteFunc(slices.Clone(all), func(e string) bool { return slices.Contains(tt.deleted, e) })
			if diff := cmp.Diff(left, listEntries(t, node)); diff != "" {
				t.Errorf("entries left after Delete(%v) (-want +got):\n%s", tt.filters, diff)
			}
		})
	}
}

// TestKernelDeleteGone checks what deleteMatching relies on: deleting an entry
// that is already gone fails with ENOENT, which ti-mo/conntrack's error chain
// keeps for errors.Is, in both families.
func TestKernelDeleteGone(t *testing.T) {
	sandbox.Require(t)
	node := newLab(t)
	c, err := ct.Dial(&netlink.Config{NetNS: node.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v4, v6 ct.Flow
	for _, f := range listFlows(t, node) {
		switch entryOf(f).OrigSrc.Addr() {
		case lab4.client:
			v4 = f
		case lab6.client:
			v6 = f
		}
	}
	if !v4.TupleOrig.IP.SourceAddress.IsValid() || !v6.TupleOrig.IP.SourceAddress.IsValid() {
		t.Fatalf("no lab entry of each family found: %v, %v", v4.TupleOrig, v6.TupleOrig)
	}

	for _, f := range []ct.Flow{v4, v6} {
		if err := c.Delete(deleteKey(f)); err != nil {
			t.Errorf("delete %s: %v", entryOf(f), err)
		}
		if err := c.Delete(deleteKey(f)); !errors.Is(err, unix.ENOENT) {
			t.Errorf("delete %s again: %v, want ENOENT", entryOf(f), err)
		}
	}
	left := listEntries(t, node)
	if want := len(labEntries()) - 2; len(left) != want {
		t.Errorf("%d entries left, want %d:\n%v", len(left), want, left)
	}
}

func TestNewNotANetNS(t *testing.T) {
	sandbox.Require(t)
	// fd 2 is open, but not a network namespace.
	if _, err := New(WithNetNSFd(2)); err == nil {
		t.Error("New(WithNetNSFd(2)) succeeded, want an error")
	}
}

// DeleteFunc deletes exactly the entries its function selects, in both
// families, from one dump of the real table.
func TestTableDeleteFunc(t *testing.T) {
	sandbox.Require(t)
	node := newLab(t)
	all := labEntries()
	tbl, err := New(WithNetNSFd(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	// The entries DNATed to the second endpoint of either family.
	n, err := tbl.DeleteFunc(func(e Entry) bool {
		seen++
		return e.ReplySrc.Addr() == lab4.ep2 || e.ReplySrc.Addr() == lab6.ep2
	})
	if err != nil {
		t.Fatalf("DeleteFunc: %v", err)
	}
	var deleted []string
	for _, e := range all {
		if strings.Contains(e, "reply-src "+netip.AddrPortFrom(lab4.ep2, 5353).String()) ||
			strings.Contains(e, "reply-src "+netip.AddrPortFrom(lab6.ep2, 5353).String()) {
			deleted = append(deleted, e)
		}
	}
	if len(deleted) == 0 || n != len(deleted) || seen < len(all) {
		t.Errorf("DeleteFunc deleted %d after looking at %d entries; want %d of the lab's %d", n, seen, len(deleted), len(all))
	}
	left := slices.DeleteFunc(slices.Clone(all), func(e string) bool { return slices.Contains(deleted, e) })
	if diff := cmp.Diff(left, listEntries(t, node)); diff != "" {
		t.Errorf("entries left after DeleteFunc (-want +got):\n%s", diff)
	}
}
