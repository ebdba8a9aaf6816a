package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon/api"
)

// Who may use the socket. The socket file is mode 0600 (root only), or 0660
// owned by the group of --socket-group; podnetd then checks every connection's
// peer credentials (SO_PEERCRED, SO_PEERGROUPS) as well, so a socket whose mode
// someone loosened still refuses strangers. Root may do everything; members of
// the group may read the debug API and trace without a probe. CNI calls and
// probes, which change or send something, need root.

// peer is the credentials of the process at the other end of a connection.
type peer struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups
	pid      int32
	err      error // why the credentials could not be read
}

type peerKey struct{}

// peerContext stores the connection's peer credentials in its context
// (http.Server.ConnContext).
func peerContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, readPeer(c))
}

func readPeer(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("not a unix socket connection: %T", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var p peer
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			p.err = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p.uid, p.gid, p.pid = cred.Uid, cred.Gid, cred.Pid
		p.groups, _ = peerGroups(int(fd)) // best effort: the primary group is known
	})
	if cerr != nil {
		return peer{err: cerr}
	}
	return p
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13): the peer's supplementary
// groups, which let a member whose primary group is another one in.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]byte, 4*64)
	for range 3 {
		n := uint32(len(buf))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if errno == unix.ERANGE {
			buf = make([]byte, n)
			continue
		}
		if errno != 0 {
			return nil, errno
		}
		out := make([]uint32, 0, n/4)
		for i := 0; i+4 <= int(n); i += 4 {
			out = append(out, binary.NativeEndian.Uint32(buf[i:i+4]))
		}
		return out, nil
	}
	return nil, unix.ERANGE
}

// access is what a caller may do.
type access int

const (
	accessNone access = iota
	accessRead        // the debug API, trace without a probe
	accessRoot        // everything
)

// accessOf returns what the peer may do given the socket's group (-1: none).
func accessOf(p peer, group int) access {
	if p.err != nil {
		return accessNone
	}
	if p.uid == 0 {
		return accessRoot
	}
	if group >= 0 && (p.gid == uint32(group) || slices.Contains(p.groups, uint32(group))) {
		return accessRead
	}
	return accessNone
}

// guard refuses callers with less than need, with 403 and a message that
// says what would be allowed.
func (d *Daemon) guard(need access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok { // served without peerContext: trust nobody
			p.err = errors.New("the connection has no peer credentials")
		}
		if got := accessOf(p, d.socketGID); got < need {
			msg := fmt.Sprintf("uid %d is not allowed: podnetd's socket serves root", p.uid)
			if d.socketGID >= 0 {
				msg += " and, to read, members of group " + d.cfg.SocketGroup
			}
			if got == accessRead {
				msg = fmt.Sprintf("uid %d may read but not do this: it needs root", p.uid)
			}
			if p.err != nil {
				msg = "peer credentials unreadable: " + p.err.Error()
			}
			writeJSON(w, http.StatusForbidden, &api.Error{Code: 0, Msg: api.ErrAccessDenied.Error(), Details: msg})
			return
		}
		h(w, r)
	}
}

// lookupGroup resolves a group name or number; "" is no group (-1).
func lookupGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if gid, err := strconv.ParseUint(name, 10, 31); err == nil {
		return int(gid), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("--socket-group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("--socket-group: group %s has gid %q", name, g.Gid)
	}
	return gid, nil
}
