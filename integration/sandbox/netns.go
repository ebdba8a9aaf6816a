package sandbox

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NetNS is a named network namespace bind-mounted under /run/netns, like one made by
// `ip netns add`. Its File stays open until Delete.
type NetNS struct {
	Name    string
	Path    string
	File    *os.File
	deleted bool
}

// Fd returns the namespace's file descriptor, for netlink handles bound to it.
func (n *NetNS) Fd() int { return int(n.File.Fd()) }

// NewNetNS creates the named network namespace with lo up. The calling goroutine's
// thread is switched for the shortest span and always switched back.
func NewNetNS(name string) (*NetNS, error) {
	path := filepath.Join(NetNSDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	f.Close()
	if err := bindNewNetNS(path); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	ns := &NetNS{Name: name, Path: path, File: file}
	if err := SetLinkUp(ns.Fd(), "lo"); err != nil {
		ns.Delete()
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	return ns, nil
}

// bindNewNetNS unshares a new network namespace on a locked thread, bind-mounts it on
// path, then returns the thread to its original namespace.
func bindNewNetNS(path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: if anything below fails half-way it dies
		// with the goroutine instead of serving others in the wrong namespace.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		mountErr := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		if mountErr != nil {
			errc <- fmt.Errorf("bind mount: %w", mountErr)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// Delete unmounts and removes the namespace. Processes still inside keep it
// alive. Deleting it again is a no-op.
func (n *NetNS) Delete() error {
	if n.deleted {
		return nil
	}
	n.deleted = true
	n.File.Close()
	if err := unix.Unmount(n.Path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("netns %s: unmount: %w", n.Name, err)
	}
	return os.Remove(n.Path)
}

// Do runs fn on a thread switched into the namespace, for sockets that must be
// created there (a socket stays in the namespace it was created in).
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// Start starts cmd as a process inside the namespace.
func (n *NetNS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Dial opens an rtnetlink connection bound to the namespace.
func (n *NetNS) Dial() (*rtnetlink.Conn, error) {
	return rtnetlink.Dial(&netlink.Config{NetNS: n.Fd()})
}

// SetLinkUp sets the named link up in the namespace fd (fd < 0: this process's own).
func SetLinkUp(fd int, name string) error {
	cfg := &netlink.Config{}
	if fd >= 0 {
		cfg.NetNS = fd
	}
	c, err := rtnetlink.Dial(cfg)
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	ifi, err := linkByName(c, name)
	if err != nil {
		return err
	}
	return c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Type: ifi.Type, Index: ifi.Index,
		Flags: unix.IFF_UP, Change: unix.IFF_UP,
	})
}

func linkByName(c *rtnetlink.Conn, name string) (rtnetlink.LinkMessage, error) {
	links, err := c.Link.List()
	if err != nil {
		return rtnetlink.LinkMessage{}, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if l.Attributes != nil && l.Attributes.Name == name {
			return l, nil
		}
	}
	return rtnetlink.LinkMessage{}, fmt.Errorf("link %q not found", name)
}

// Uplink connects ns to a bridge in the sandbox's own namespace: a veth whose
// host end hostName joins bridge and whose other end is eth0 in ns with addr.
func Uplink(ns *NetNS, hostName, bridge string, addr netip.Prefix) error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: hostName, Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{
			PeerInfo: &rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
				Name: "eth0", NetNS: rtnetlink.NetNSForFD(uint32(ns.Fd())),
			}},
		}},
	}})
	if err != nil {
		return fmt.Errorf("veth %s: %w", hostName, err)
	}
	host, err := linkByName(c, hostName)
	if err != nil {
		return err
	}
	br, err := linkByName(c, bridge)
	if err != nil {
		return err
	}
	if err := c.Link.SetMaster(host.Index, br.Index, nil); err != nil {
		return fmt.Errorf("attach %s to %s: %w", hostName, bridge, err)
	}
	if err := SetLinkUp(-1, hostName); err != nil {
		return err
	}
	return AddAddr(ns, "eth0", addr)
}

// AddAddr adds addr to the named link in ns and sets the link up.
func AddAddr(ns *NetNS, link string, addr netip.Prefix) error {
	c, err := ns.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := linkByName(c, link)
	if err != nil {
		return err
	}
	fam := uint8(unix.AF_INET)
	if addr.Addr().Is6() {
		fam = unix.AF_INET6
	}
	ip := net.IP(addr.Addr().AsSlice())
	err = c.Address.New(&rtnetlink.AddressMessage{
		Family: fam, PrefixLength: uint8(addr.Bits()), Index: l.Index,
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD},
	})
	if err != nil {
		return fmt.Errorf("add %s to %s: %w", addr, link, err)
	}
	return SetLinkUp(ns.Fd(), link)
}

// DeleteLink deletes the named link in the namespace fd (fd < 0: this process's
// own); a missing link is not an error.
func DeleteLink(fd int, name string) error {
	cfg := &netlink.Config{}
	if fd >= 0 {
		cfg.NetNS = fd
	}
	c, err := rtnetlink.Dial(cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := linkByName(c, name)
	if err != nil {
		return nil
	}
	return c.Link.Delete(l.Index)
}
