package build

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Debian 12's programs the images take, at the paths their packages install them.
const (
	hostBusybox = "/bin/busybox" // busybox-static: no shared libraries
	hostDash    = "/bin/dash"
	hostBash    = "/bin/bash"
	hostNetcat  = "/bin/nc.openbsd"
	hostCurl    = "/usr/bin/curl"
	hostDig     = "/usr/bin/dig"
	hostGetent  = "/usr/bin/getent"
	caBundle    = "/etc/ssl/certs/ca-certificates.crt"
)

// hostPackages maps each host file to the Debian package that provides it.
var hostPackages = map[string]string{
	hostBusybox: "busybox-static",
	hostDash:    "dash",
	hostBash:    "bash",
	hostNetcat:  "netcat-openbsd",
	hostCurl:    "curl",
	hostDig:     "bind9-dnsutils",
	hostGetent:  "libc-bin",
	caBundle:    "ca-certificates",
}

// ErrMissingPackages is returned (wrapped, naming them) when Debian packages the
// images take programs from are not installed.
var ErrMissingPackages = errors.New("missing Debian packages")

// checkHost fails with ErrMissingPackages, and the apt-get command that fixes it,
// when a host file the images need is absent, and when busybox is not the static one.
func checkHost() error {
	var missing []string
	for f, pkg := range hostPackages {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		if dyn, err := isDynamic(hostBusybox); err != nil || dyn {
			missing = append(missing, "busybox-static")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	missing = slices.Compact(missing)
	return fmt.Errorf("%w: apt-get install %s", ErrMissingPackages, strings.Join(missing, " "))
}

// user is a line of /etc/passwd and its primary group's line of /etc/group.
type user struct {
	name     string
	id       int
	home     string
	shell    string
	groups   []string // supplementary groups, by name: they must be users' or extraGroups'
	noSelfGr bool     // no group of its own
}

type group struct {
	name string
	id   int
}

// accounts are an image's users and groups.
type accounts struct {
	users  []user
	groups []group
}

var (
	root   = user{name: "root", id: 0, home: "/root", shell: "/bin/sh"}
	nobody = user{name: "nobody", id: 65534, home: "/nonexistent", shell: "/bin/false", noSelfGr: true}
	// nogroup is Debian's group 65534.
	nogroup = group{name: "nogroup", id: 65534}

	baseUsers = accounts{users: []user{root, nobody}, groups: []group{nogroup}}

	// test/images/agnhost/Dockerfile: user-defined-in-image (1000) in
	// group-defined-in-image (50000), for the SupplementalGroups tests.
	agnhostUsers = accounts{
		users: []user{root, nobody,
			{name: "user-defined-in-image", id: 1000, home: "/home/user-defined-in-image", shell: "/bin/sh",
				groups: []string{"group-defined-in-image"}}},
		groups: []group{nogroup, {name: "group-defined-in-image", id: 50000}},
	}

	// gcr.io/distroless/static's accounts, whose nonroot user the podnet image runs as.
	distrolessUsers = accounts{
		users: []user{
			{name: "root", id: 0, home: "/root", shell: "/sbin/nologin"},
			{name: "nobody", id: 65534, home: "/nonexistent", shell: "/sbin/nologin"},
			{name: "nonroot", id: 65532, home: "/home/nonroot", shell: "/sbin/nologin"},
		},
	}
)

// passwd and group render the accounts as /etc/passwd and /etc/group.
func (a accounts) passwd() string {
	var b strings.Builder
	for _, u := range a.users {
		gid := u.id
		if u.noSelfGr {
			gid = 65534
		}
		fmt.Fprintf(&b, "%s:x:%d:%d:%s:%s:%s\n", u.name, u.id, gid, u.name, u.home, u.shell)
	}
	return b.String()
}

func (a accounts) group() string {
	members := map[string][]string{}
	for _, u := range a.users {
		for _, g := range u.groups {
			members[g] = append(members[g], u.name)
		}
	}
	var b strings.Builder
	for _, u := range a.users {
		if !u.noSelfGr {
			fmt.Fprintf(&b, "%s:x:%d:%s\n", u.name, u.id, strings.Join(members[u.name], ","))
		}
	}
	for _, g := range a.groups {
		fmt.Fprintf(&b, "%s:x:%d:%s\n", g.name, g.id, strings.Join(members[g.name], ","))
	}
	return b.String()
}

// nsswitch makes glibc (getent, curl) and Go's resolver read /etc/hosts, which
// kubelet writes, before asking DNS.
const nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"

// addBase adds what every image but pause has: accounts, name service order, CA
// certificates, /tmp and root's home.
func addBase(t *Tree, a accounts) {
	t.AddBytes("/etc/passwd", []byte(a.passwd()), 0o644)
	t.AddBytes("/etc/group", []byte(a.group()), 0o644)
	t.AddBytes("/etc/nsswitch.conf", []byte(nsswitch), 0o644)
	t.AddFile(caBundle, caBundle)
	t.AddDir("/tmp", 0o777|os.ModeSticky)
	t.AddDir("/root", 0o700)
}
