package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// SyncRoutes makes podnet's routes in the main table exactly desired: it adds the
// missing ones, replaces those whose next hop changed, and removes podnet routes
// (protocol Proto) that are no longer desired. Routes of any other protocol are
// never changed; a desired route whose destination already has a foreign route is
// reported in Conflicts and skipped. It reads the kernel every time, so a route
// someone deleted is restored on the next call.
func (m *Manager) SyncRoutes(desired []Route) (RouteChanges, error) {
	var ch RouteChanges
	c, err := m.dial()
	if err != nil {
		return ch, err
	}
	defer c.Close()
	all, err := listMain(c)
	if err != nil {
		return ch, err
	}
	ours := map[netip.Prefix]Route{}
	foreign := map[netip.Prefix]bool{}
	for _, r := range all {
		if r.proto == Proto {
			ours[r.Dst] = r.Route
		} else {
			foreign[r.Dst] = true
		}
	}
	want := map[netip.Prefix]bool{}
	var errs []error
	for _, r := range desired {
		want[r.Dst] = true
		cur, have := ours[r.Dst]
		switch {
		case have && cur == r:
			continue
		case !have && foreign[r.Dst]:
			ch.Conflicts = append(ch.Conflicts, r)
			continue
		}
		if err := c.Route.Replace(routeMsg(r)); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.Dst, r.Via, err))
			continue
		}
		if have {
			ch.Replaced = append(ch.Replaced, r)
		} else {
			ch.Added = append(ch.Added, r)
		}
	}
	for dst, r := range ours {
		if want[dst] {
			continue
		}
		if err := c.Route.Delete(routeMsg(r)); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", dst, err))
			continue
		}
		ch.Removed = append(ch.Removed, r)
	}
	return ch, errors.Join(errs...)
}

// ListRoutes returns podnet's routes (protocol Proto) in the main table.
func (m *Manager) ListRoutes() ([]Route, error) {
	c, err := m.dial()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	all, err := listMain(c)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range all {
		if r.proto == Proto {
			out = append(out, r.Route)
		}
	}
	return out, nil
}

type kernelRoute struct {
	Route
	proto uint8
}

// listMain dumps unicast routes of the main table, both families.
func listMain(c *rtnetlink.Conn) ([]kernelRoute, error) {
	var out []kernelRoute
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := c.Route.ListMatch(&rtnetlink.RouteMessage{Family: fam, Table: unix.RT_TABLE_MAIN})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, m := range msgs {
			if m.Table != unix.RT_TABLE_MAIN || m.Type != unix.RTN_UNICAST {
				continue
			}
			dst, ok := netip.AddrFromSlice(m.Attributes.Dst)
			if !ok {
				continue // default route
			}
			r := kernelRoute{proto: m.Protocol, Route: Route{Dst: netip.PrefixFrom(dst.Unmap(), int(m.DstLength))}}
			if gw, ok := netip.AddrFromSlice(m.Attributes.Gateway); ok {
				r.Via = gw.Unmap()
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func routeMsg(r Route) *rtnetlink.RouteMessage {
	return &rtnetlink.RouteMessage{
		Family:    family(r.Dst.Addr()),
		DstLength: uint8(r.Dst.Bits()),
		Table:     unix.RT_TABLE_MAIN,
		Protocol:  Proto,
		Scope:     unix.RT_SCOPE_UNIVERSE,
		Type:      unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Dst:     net.IP(r.Dst.Addr().AsSlice()),
			Gateway: net.IP(r.Via.AsSlice()),
		},
	}
}
