package conntrack

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// stubConn is a flowConn over a fixed dump. Delete fails with the error that
// deleteErr holds for the flow's entry, wrapped as ti-mo/netfilter wraps
// kernel errors, or records the request.
type stubConn struct {
	flows     []ct.Flow
	dumpErr   error
	deleteErr map[Entry]error
	sent      []ct.Flow
}

func (s *stubConn) Dump(*ct.DumpOptions) ([]ct.Flow, error) { return s.flows, s.dumpErr }

func (s *stubConn) Delete(f ct.Flow) error {
	if err := s.deleteErr[entryOf(f)]; err != nil {
		return fmt.Errorf("netfilter query: %w", &netlink.OpError{Op: "receive", Err: err})
	}
	s.sent = append(s.sent, f)
	return nil
}

// flowOf returns a dumped flow for e, with attributes a delete must not send.
func flowOf(e Entry, id uint32) ct.Flow {
	f := ct.Flow{ID: id, Zone: 7, Timeout: 30, Mark: 0x4000, Status: ct.StatusSeenReply}
	f.TupleOrig.IP = ct.IPTuple{SourceAddress: e.OrigSrc.Addr(), DestinationAddress: e.OrigDst.Addr()}
	f.TupleOrig.Proto = ct.ProtoTuple{Protocol: e.Proto, SourcePort: e.OrigSrc.Port(), DestinationPort: e.OrigDst.Port()}
	f.TupleReply.IP = ct.IPTuple{SourceAddress: e.ReplySrc.Addr(), DestinationAddress: e.OrigSrc.Addr()}
	f.TupleReply.Proto = ct.ProtoTuple{Protocol: e.Proto, SourcePort: e.ReplySrc.Port(), DestinationPort: e.OrigSrc.Port()}
	return f
}

func TestDeleteMatching(t *testing.T) {
	udp := uint8(unix.IPPROTO_UDP)
	tcp4 := udp4
	tcp4.Proto = unix.IPPROTO_TCP
	c := &stubConn{flows: []ct.Flow{flowOf(udp4, 1), flowOf(udp6, 2), flowOf(tcp4, 3), flowOf(nodePort4, 4)}}
	// udp4 matches both filters and must be deleted once.
	n, err := deleteMatching(c, []Filter{
		{Proto: udp, OrigDst: vip4, OrigPort: 53},
		{Proto: udp, ReplySrc: ep4},
	})
	if err != nil || n != 2 {
		t.Fatalf("deleteMatching = %d, %v; want 2, nil", n, err)
	}
	var want []ct.Flow
	for _, f := range []ct.Flow{c.flows[0], c.flows[3]} {
		want = append(want, ct.Flow{Zone: f.Zone, TupleOrig: f.TupleOrig, TupleReply: f.TupleReply})
	}
	if !reflect.DeepEqual(c.sent, want) {
		t.Errorf("delete requests:\n%+v\nwant only zone and tuples of udp4 and nodePort4:\n%+v", c.sent, want)
	}
}

func TestDeleteMatchingVanished(t *testing.T) {
	c := &stubConn{
		flows:     []ct.Flow{flowOf(udp4, 1), flowOf(udp6, 2)},
		deleteErr: map[Entry]error{udp4: unix.ENOENT},
	}
	n, err := deleteMatching(c, []Filter{{Proto: unix.IPPROTO_UDP, OrigPort: 53}})
	if err != nil || n != 1 {
		t.Fatalf("deleteMatching = %d, %v; want 1, nil (ENOENT is not an error and not counted)", n, err)
	}
}

func TestDeleteMatchingFailure(t *testing.T) {
	c := &stubConn{
		flows:     []ct.Flow{flowOf(udp4, 1), flowOf(udp6, 2), flowOf(nodePort4, 3)},
		deleteErr: map[Entry]error{udp4: unix.EPERM, nodePort4: unix.EBUSY},
	}
	n, err := deleteMatching(c, []Filter{{Proto: unix.IPPROTO_UDP, ReplySrc: ep4}, {Proto: unix.IPPROTO_UDP, ReplySrc: ep6}})
	if n != 1 {
		t.Errorf("deleted %d, want 1: the failures must not stop the other deletes", n)
	}
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "2 of 3 matching entries not deleted") ||
		!strings.Contains(err.Error(), udp4.String()) {
		t.Errorf("err = %v, want the count and the first failure (EPERM deleting %s)", err, udp4)
	}
}

func TestDeleteMatchingDumpError(t *testing.T) {
	c := &stubConn{dumpErr: unix.ENOBUFS}
	n, err := deleteMatching(c, []Filter{{Proto: unix.IPPROTO_UDP, OrigPort: 53}})
	if n != 0 || !errors.Is(err, unix.ENOBUFS) {
		t.Errorf("deleteMatching = %d, %v; want 0 and the dump error", n, err)
	}
}

// Table.Delete checks its filters before it opens a socket, so these need no
// kernel: a zero Table would fail to dial.
func TestTableDeleteWithoutKernel(t *testing.T) {
	var tbl Table
	n, err := tbl.Delete([]Filter{{Proto: unix.IPPROTO_UDP, OrigPort: 53}, {Proto: unix.IPPROTO_UDP}})
	if n != 0 || !errors.Is(err, ErrInvalidFilter) || !strings.Contains(err.Error(), "filters[1]") {
		t.Errorf("Delete with an invalid filter = %d, %v; want 0 and ErrInvalidFilter naming filters[1]", n, err)
	}
	if n, err := tbl.Delete(nil); n != 0 || err != nil {
		t.Errorf("Delete(nil) = %d, %v; want 0, nil", n, err)
	}
}

func TestNewInvalidFd(t *testing.T) {
	if _, err := New(WithNetNSFd(-1)); err == nil {
		t.Error("New(WithNetNSFd(-1)) succeeded, want an error")
	}
}

func TestDeleteWhere(t *testing.T) {
	c := &stubConn{
		flows:     []ct.Flow{flowOf(udp4, 1), flowOf(udp6, 2), flowOf(nodePort4, 3)},
		deleteErr: map[Entry]error{udp6: unix.ENOENT},
	}
	var looked []Entry
	n, err := deleteWhere(c, func(e Entry) bool { looked = append(looked, e); return e != nodePort4 })
	if err != nil || n != 1 {
		t.Fatalf("deleteWhere = %d, %v; want 1 (udp6 vanished), nil", n, err)
	}
	if !reflect.DeepEqual(looked, []Entry{udp4, udp6, nodePort4}) {
		t.Errorf("match saw %v, want every dumped entry once", looked)
	}
	if len(c.sent) != 1 || entryOf(c.sent[0]) != udp4 {
		t.Errorf("delete requests %+v, want udp4's only", c.sent)
	}
}
