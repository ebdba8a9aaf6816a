package cluster

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
)

// HostState is what the cluster must leave as it found it in the machine's own
// namespaces: links, addresses and routes of the network namespace, and the
// sysctls kubelet, containerd or runc could be tempted to change.
type HostState struct {
	Links, Addrs, Routes []string
	Sysctls              map[string]string
	// Paths lists, for each of watchedPaths, what exists there: each file and
	// directory below with its mode, size and modification time.
	Paths []string
}

// watchedPaths are where a node's kubelet, containerd or podnet would write on
// the machine's disk if a node's mount namespace let them through (see
// nodeInitScript): CNI configs and plugins, podnet's state and socket,
// kubelet's fixed paths, pod logs.
var watchedPaths = []string{
	"/etc/cni", "/opt/cni", "/var/lib/podnet", "/var/lib/cni", "/var/lib/kubelet",
	"/var/lib/containerd", "/run/podnet", "/var/log/pods", "/var/log/containers",
}

// watchedSysctls are read by SnapshotHost: forwarding, bridge netfilter,
// kubelet's protectKernelDefaults set, and a few more kubelet or a CNI plugin
// write on a real node. Globs whose files do not exist (br_netfilter not
// loaded) are skipped.
var watchedSysctls = []string{
	"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding",
	"net/ipv4/conf/all/route_localnet", "net/ipv4/conf/all/rp_filter",
	"net/bridge/*", "net/netfilter/nf_conntrack_max",
	"kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"vm/overcommit_memory", "vm/panic_on_oom",
}

// SnapshotHost reads the state of the namespaces this process runs in; call it
// outside the sandbox, before and after.
func SnapshotHost() (*HostState, error) {
	s := &HostState{Sysctls: map[string]string{}}
	for _, g := range watchedSysctls {
		paths, err := filepath.Glob(filepath.Join("/proc/sys", g))
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				continue // write-only or gone
			}
			s.Sysctls[strings.TrimPrefix(p, "/proc/sys/")] = strings.TrimSpace(string(b))
		}
	}
	for _, root := range watchedPaths {
		s.Paths = append(s.Paths, listPath(root)...)
	}
	sort.Strings(s.Paths)
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("host state: %w", err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, fmt.Errorf("host state: links: %w", err)
	}
	for _, l := range links {
		if l.Attributes != nil {
			s.Links = append(s.Links, fmt.Sprintf("%d %s flags=%#x master=%v", l.Index, l.Attributes.Name, l.Flags, deref(l.Attributes.Master)))
		}
	}
	addrs, err := c.Address.List()
	if err != nil {
		return nil, fmt.Errorf("host state: addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Attributes != nil {
			s.Addrs = append(s.Addrs, fmt.Sprintf("if%d %s/%d", a.Index, a.Attributes.Address, a.PrefixLength))
		}
	}
	routes, err := c.Route.List()
	if err != nil {
		return nil, fmt.Errorf("host state: routes: %w", err)
	}
	for _, r := range routes {
		a := r.Attributes
		s.Routes = append(s.Routes, fmt.Sprintf("table=%d %s/%d via %s dev if%d type=%d", a.Table, ipOr(a.Dst), r.DstLength, ipOr(a.Gateway), a.OutIface, r.Type))
	}
	sort.Strings(s.Links)
	sort.Strings(s.Addrs)
	sort.Strings(s.Routes)
	return s, nil
}

// Diff describes what changed from s to t, empty when nothing did.
func (s *HostState) Diff(t *HostState) string {
	var b strings.Builder
	diffList(&b, "link", s.Links, t.Links)
	diffList(&b, "address", s.Addrs, t.Addrs)
	diffList(&b, "route", s.Routes, t.Routes)
	diffList(&b, "path", s.Paths, t.Paths)
	keys := map[string]bool{}
	for k := range s.Sysctls {
		keys[k] = true
	}
	for k := range t.Sysctls {
		keys[k] = true
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if s.Sysctls[k] != t.Sysctls[k] {
			fmt.Fprintf(&b, "sysctl %s: %q → %q\n", strings.ReplaceAll(k, "/", "."), s.Sysctls[k], t.Sysctls[k])
		}
	}
	return b.String()
}

func diffList(b *strings.Builder, what string, before, after []string) {
	in := func(l []string, x string) bool {
		i := sort.SearchStrings(l, x)
		return i < len(l) && l[i] == x
	}
	for _, x := range before {
		if !in(after, x) {
			fmt.Fprintf(b, "%s gone: %s\n", what, x)
		}
	}
	for _, x := range after {
		if !in(before, x) {
			fmt.Fprintf(b, "%s new: %s\n", what, x)
		}
	}
}

func deref(p *uint32) uint32 {
	if p == nil {
		return 0
	}
	return *p
}

func ipOr(ip net.IP) string {
	if ip == nil {
		return "-"
	}
	return ip.String()
}

// listPath describes root and everything below it (at most 2000 entries), one
// line each, or that it does not exist.
func listPath(root string) []string {
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", path, err))
			return nil
		}
		if len(out) >= 2000 {
			return fs.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", path, err))
			return nil
		}
		out = append(out, fmt.Sprintf("%s %s %d %s", path, info.Mode(), info.Size(), info.ModTime().UTC().Format(time.RFC3339Nano)))
		return nil
	})
	if err != nil {
		out = append(out, fmt.Sprintf("%s: %v", root, err))
	}
	sort.Strings(out)
	return out
}
