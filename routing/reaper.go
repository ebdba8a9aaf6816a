package routing

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// PendingGroup is the network device group (`ip link show group 1886257153`)
// that DelPod moves a host veth into, down, before the reaper deletes it.
//
// Deleting a veth costs the kernel an rcu_barrier (~16 ms here) per RTM_DELLINK.
// DEL therefore only takes the pod off the bridge (link down, which disables the
// bridge port at once, so its address can be reused safely) and hands the link
// to the reaper, which deletes every pending link with one group RTM_DELLINK:
// one barrier per batch instead of one per pod, and off the CNI call's path.
// Links left pending by a crash are deleted by the next Reap.
const PendingGroup = 0x706e0001

// reaper batches the deletion of pending links.
type reaper struct {
	once sync.Once
	kick chan struct{}
}

// retire takes a host veth down and moves it to PendingGroup in one request.
func (m *Manager) retire(index uint32) error {
	return m.rawLink(unix.RTM_NEWLINK, index, 0, unix.IFF_UP)
}

// Reap deletes every link in PendingGroup now. It is safe to call at any time
// and cheap when nothing is pending.
func (m *Manager) Reap() error {
	return m.rawLink(unix.RTM_DELLINK, 0, 0, 0)
}

// scheduleReap asks the background reaper for a Reap soon (after a short pause
// that lets a burst of DELs share one deletion).
func (m *Manager) scheduleReap() {
	m.reaper.once.Do(func() {
		m.reaper.kick = make(chan struct{}, 1)
		go func() {
			for range m.reaper.kick {
				time.Sleep(20 * time.Millisecond)
				_ = m.Reap() // a failure leaves links pending for the next Reap
			}
		}()
	})
	select {
	case m.reaper.kick <- struct{}{}:
	default:
	}
}

// rawLink sends an ifinfomsg with IFLA_GROUP=PendingGroup (rtnetlink/v2 cannot
// encode IFLA_GROUP): RTM_NEWLINK on index sets flags/change and the group;
// RTM_DELLINK with index 0 deletes the whole group.
func (m *Manager) rawLink(typ netlink.HeaderType, index, flags, change uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.IFLA_GROUP, PendingGroup)
	err := rawLinkMsg(m.netnsFd, typ, index, flags, change, ae)
	if err != nil && !(typ == unix.RTM_DELLINK && isNotFound(err)) {
		return fmt.Errorf("link group %#x: %w", PendingGroup, err)
	}
	return nil
}

// rawLinkMsg sends one ifinfomsg with the given attributes in the namespace fd
// (fd < 0: the process's own) and waits for the kernel's acknowledgement.
func rawLinkMsg(fd int, typ netlink.HeaderType, index, flags, change uint32, ae *netlink.AttributeEncoder) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nsConfig(fd))
	if err != nil {
		return fmt.Errorf("netlink dial: %w", err)
	}
	defer c.Close()
	ifi := make([]byte, unix.SizeofIfInfomsg)
	ifi[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(ifi[4:8], index)
	binary.NativeEndian.PutUint32(ifi[8:12], flags)
	binary.NativeEndian.PutUint32(ifi[12:16], change)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(ifi, attrs...),
	})
	return err
}

// noLinkLocal stops the kernel from giving the link an IPv6 link-local address
// (addrgenmode none). Must be applied while the link is down.
func noLinkLocal(fd int, index uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(nae *netlink.AttributeEncoder) error {
		nae.Nested(unix.AF_INET6, func(v6 *netlink.AttributeEncoder) error {
			v6.Uint8(unix.IFLA_INET6_ADDR_GEN_MODE, in6AddrGenModeNone)
			return nil
		})
		return nil
	})
	if err := rawLinkMsg(fd, unix.RTM_NEWLINK, index, 0, 0, ae); err != nil {
		return fmt.Errorf("addrgenmode none: %w", err)
	}
	return nil
}

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE from linux/if_link.h.
const in6AddrGenModeNone = 1
