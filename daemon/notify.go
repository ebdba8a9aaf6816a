package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// errNotifyUnsupported is returned for a $NOTIFY_SOCKET this implementation
// cannot reach (systemd ≥ 253 also accepts vsock: addresses for VMs).
var errNotifyUnsupported = errors.New("unsupported NOTIFY_SOCKET address")

// sdNotify sends state, newline-separated VAR=value assignments such as
// "READY=1" or "STATUS=...", to the service manager's notification socket,
// the protocol of sd_notify(3): one datagram on the AF_UNIX socket named by
// socket, where a leading '@' names an abstract address. An empty socket
// (podnetd not started by systemd with Type=notify) sends nothing and returns
// nil. It fails when the socket cannot be reached or the datagram not sent;
// the service manager acknowledges nothing, so success means only that the
// kernel queued the datagram.
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	name := socket
	switch {
	case strings.HasPrefix(socket, "@"):
		name = "\x00" + socket[1:] // abstract namespace, see unix(7)
	case !strings.HasPrefix(socket, "/"):
		return fmt.Errorf("%w: %q", errNotifyUnsupported, socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", socket, err)
	}
	return nil
}

// notifySocket is the service manager's notification socket, or "" when
// podnetd was not started as a Type=notify service. It is read at each call
// (the variable stays set: podnetd sends STATUS= updates while it runs).
func notifySocket() string { return os.Getenv("NOTIFY_SOCKET") }
