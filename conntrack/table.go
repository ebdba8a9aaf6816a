package conntrack

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Interface is what the daemon uses to delete conntrack entries.
type Interface interface {
	// Delete deletes every entry, IPv4 or IPv6, that matches at least one of
	// filters, and returns how many it deleted. No filters deletes nothing.
	// If a filter is invalid (see Filter.Validate) it deletes nothing and
	// returns an error matching ErrInvalidFilter. An entry that vanished
	// before it could be deleted is not an error and is not counted. On other
	// failures it returns the entries it did delete with the error.
	Delete(filters []Filter) (deleted int, err error)
	// DeleteFunc deletes every entry, IPv4 or IPv6, for which match returns
	// true, and returns how many it deleted, with the same error rules as
	// Delete. It is for a reconciliation that must look at every entry (the
	// daemon's first sync after a start); match must not block.
	DeleteFunc(match func(Entry) bool) (deleted int, err error)
}

var (
	_ Interface = (*Table)(nil)
	_ Interface = (*Fake)(nil)
)

// Option configures New.
type Option func(*options)

type options struct {
	netnsFd int // 0: the process's own namespace
}

// WithNetNSFd makes the Table act on the conntrack table of the network
// namespace open as fd (for example /run/netns/NAME) instead of the process's
// own; fd 0 keeps the process's own. The fd must stay open while the Table is
// used; New fails if fd is negative or not a network namespace.
func WithNetNSFd(fd int) Option {
	return func(o *options) { o.netnsFd = fd }
}

// Table is the kernel implementation of Interface, over ctnetlink. It holds no
// socket: each Delete opens its own, bound to the namespace, so Table is safe
// for concurrent use and never switches a thread's namespace itself.
type Table struct {
	netnsFd int
}

// New returns a Table for the process's network namespace, or the one given
// with WithNetNSFd. It fails if ctnetlink cannot be reached there (no
// CAP_NET_ADMIN, no nf_conntrack_netlink in the kernel, or fd not a network
// namespace).
func New(opts ...Option) (*Table, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.netnsFd < 0 {
		return nil, fmt.Errorf("conntrack: invalid network namespace fd %d", o.netnsFd)
	}
	t := &Table{netnsFd: o.netnsFd}
	c, err := t.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// The per-CPU statistics are a small dump that any working ctnetlink
	// answers. Not StatsGlobal: the kernel marks its single reply multi-part
	// without a closing message, and with the mdlayher/netlink this module
	// uses (v1.11) it waits for one forever.
	if _, err := c.Stats(); err != nil {
		return nil, fmt.Errorf("conntrack: reach ctnetlink: %w", err)
	}
	return t, nil
}

func (t *Table) dial() (*ct.Conn, error) {
	c, err := ct.Dial(&netlink.Config{NetNS: t.netnsFd})
	if err != nil {
		return nil, fmt.Errorf("conntrack: open netlink: %w", err)
	}
	return c, nil
}

// Delete dumps the whole table (both families) once and deletes, one request
// each, the entries that match; see Interface.Delete. Its time and memory grow
// with the size of the table, not with the number of matches: the dump is held
// in memory whole, since ctnetlink can filter a dump by address and port
// (CTA_FILTER, Linux 5.8) but ti-mo/conntrack does not expose that. Entries
// created after the dump are not seen.
func (t *Table) Delete(filters []Filter) (int, error) {
	if err := validate(filters); err != nil {
		return 0, err
	}
	if len(filters) == 0 {
		return 0, nil
	}
	c, err := t.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return deleteMatching(c, filters)
}

// DeleteFunc dumps the whole table (both families) once and deletes, one
// request each, the entries match selects; see Interface.DeleteFunc. Like
// Delete, its cost grows with the table's size.
func (t *Table) DeleteFunc(match func(Entry) bool) (int, error) {
	c, err := t.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return deleteWhere(c, match)
}

// flowConn is the part of *ct.Conn that deleteMatching uses.
type flowConn interface {
	Dump(*ct.DumpOptions) ([]ct.Flow, error)
	Delete(ct.Flow) error
}

// deleteMatching deletes the dumped flows that match any filter. It keeps going
// after a failed delete and reports the first failure with their count.
func deleteMatching(c flowConn, filters []Filter) (int, error) {
	return deleteWhere(c, indexByPort(filters).matches)
}

// deleteWhere deletes the dumped flows whose entry match selects, as
// deleteMatching does.
func deleteWhere(c flowConn, match func(Entry) bool) (int, error) {
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: dump: %w", err)
	}
	var deleted, failed int
	var firstErr error
	for _, fl := range flows {
		e := entryOf(fl)
		if !match(e) {
			continue
		}
		switch err := c.Delete(deleteKey(fl)); {
		case err == nil:
			deleted++
		case errors.Is(err, unix.ENOENT):
			// Expired, or deleted by someone else, since the dump.
		default:
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("delete %s: %w", e, err)
			}
		}
	}
	if failed > 0 {
		return deleted, fmt.Errorf("conntrack: %d of %d matching entries not deleted, first: %w",
			failed, deleted+failed, firstErr)
	}
	return deleted, nil
}

// entryOf returns the fields of f that filters look at.
func entryOf(f ct.Flow) Entry {
	o, r := f.TupleOrig, f.TupleReply
	return Entry{
		Proto:    o.Proto.Protocol,
		OrigSrc:  netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
		OrigDst:  netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort),
		ReplySrc: netip.AddrPortFrom(r.IP.SourceAddress, r.Proto.SourcePort),
	}
}

// deleteKey is the request that deletes the dumped flow f. The kernel looks the
// entry up by original tuple and zone. Both tuples are sent because
// ti-mo/conntrack sends an IPv6 request only when both are IPv6: with the
// original alone, IPv6 deletes fail. The flow's ID, which would make the kernel
// refuse an entry that replaced f under the same tuple since the dump, is left
// out: ti-mo/conntrack v0.6.0 never sends it (despite what Conn.Delete's doc
// says). Such a replacement is deleted too; its next packet makes a new entry.
func deleteKey(f ct.Flow) ct.Flow {
	return ct.Flow{Zone: f.Zone, TupleOrig: f.TupleOrig, TupleReply: f.TupleReply}
}
