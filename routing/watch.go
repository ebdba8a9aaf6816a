package routing

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// MTUOf returns the MTU of the link that holds addr (the node's uplink), so pod
// MTU follows the underlay instead of a guess; loopback is never chosen.
func (m *Manager) MTUOf(addr netip.Addr) (int, error) {
	c, err := m.dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msgs, err := c.Address.List()
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range msgs {
		if ip, ok := netip.AddrFromSlice(a.Attributes.Address); ok && ip.Unmap() == addr {
			l, err := c.Link.Get(a.Index)
			if err != nil {
				return 0, fmt.Errorf("link of %s: %w", addr, err)
			}
			if l.Flags&unix.IFF_LOOPBACK != 0 {
				break
			}
			return int(l.Attributes.MTU), nil
		}
	}
	return 0, fmt.Errorf("no non-loopback interface holds %s", addr)
}

// Watch calls notify whenever the kernel reports a change that may undo podnet's
// work: a podnet route deleted, an address deleted, or a link of the given name
// changed or deleted. It returns when ctx ends or the subscription fails.
func (m *Manager) Watch(ctx context.Context, bridge string, notify func()) error {
	cfg := nsConfig(m.netnsFd)
	cfg.Groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
		unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE
	c, err := rtnetlink.Dial(cfg)
	if err != nil {
		return fmt.Errorf("subscribe to rtnetlink: %w", err)
	}
	defer c.Close()
	go func() {
		<-ctx.Done()
		c.SetReadDeadline(time.Now())
	}()
	var bridgeIndex uint32
	if l, ok, err := m.linkIndex(bridge); err == nil && ok {
		bridgeIndex = l
	}
	for {
		msgs, raw, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("rtnetlink receive: %w", err)
		}
		for i, msg := range msgs {
			if l, ok := msg.(*rtnetlink.LinkMessage); ok && l.Attributes != nil && l.Attributes.Name == bridge {
				bridgeIndex = l.Index
			}
			if relevant(raw[i].Header.Type, msg, bridge, bridgeIndex) {
				notify()
				break
			}
		}
	}
}

// relevant filters out the churn of pod attachments (their veths and link-local
// addresses come and go all the time) so that only changes to podnet's own
// routes and bridge trigger a node sync.
func relevant(t netlink.HeaderType, msg rtnetlink.Message, bridge string, bridgeIndex uint32) bool {
	switch m := msg.(type) {
	case *rtnetlink.RouteMessage:
		return t == unix.RTM_DELROUTE && m.Protocol == Proto
	case *rtnetlink.AddressMessage:
		return t == unix.RTM_DELADDR && m.Index == bridgeIndex
	case *rtnetlink.LinkMessage:
		return m.Attributes != nil && m.Attributes.Name == bridge && (t == unix.RTM_DELLINK || m.Flags&unix.IFF_UP == 0)
	}
	return false
}

func (m *Manager) linkIndex(name string) (uint32, bool, error) {
	c, err := m.dial()
	if err != nil {
		return 0, false, err
	}
	defer c.Close()
	l, ok, err := linkByName(c, name)
	return l.Index, ok, err
}
