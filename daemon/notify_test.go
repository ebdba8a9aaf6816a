package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// notifyListener is a stand-in for the service manager: a datagram socket
// whose messages the test reads back.
type notifyListener struct {
	addr string // as $NOTIFY_SOCKET names it
	conn *net.UnixConn
}

func listenNotify(t *testing.T, addr string) *notifyListener {
	t.Helper()
	name := addr
	if addr[0] == '@' {
		name = "\x00" + addr[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifyListener{addr: addr, conn: conn}
}

// next returns the next datagram, failing the test after a second without one.
func (l *notifyListener) next(t *testing.T) string {
	t.Helper()
	buf := make([]byte, 4096)
	l.conn.SetReadDeadline(time.Now().Add(time.Second))
	n, err := l.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification on %s: %v", l.addr, err)
	}
	return string(buf[:n])
}

// none fails the test if a datagram is waiting.
func (l *notifyListener) none(t *testing.T) {
	t.Helper()
	buf := make([]byte, 4096)
	l.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := l.conn.Read(buf); err == nil {
		t.Fatalf("unexpected notification %q", buf[:n])
	}
}

func TestSdNotifyPathSocket(t *testing.T) {
	l := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	for _, msg := range []string{"READY=1", "READY=1\nSTATUS=synced", "STOPPING=1"} {
		if err := sdNotify(l.addr, msg); err != nil {
			t.Fatalf("sdNotify(%q): %v", msg, err)
		}
		if got := l.next(t); got != msg {
			t.Errorf("received %q, want %q", got, msg)
		}
	}
}

func TestSdNotifyAbstractSocket(t *testing.T) {
	l := listenNotify(t, fmt.Sprintf("@podnet-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := sdNotify(l.addr, "READY=1"); err != nil {
		t.Fatalf("sdNotify: %v", err)
	}
	if got := l.next(t); got != "READY=1" {
		t.Errorf("received %q, want READY=1", got)
	}
}

func TestSdNotifyWithoutSocket(t *testing.T) {
	if err := sdNotify("", "READY=1"); err != nil {
		t.Errorf("sdNotify without a socket = %v, want nil (not under systemd)", err)
	}
}

func TestSdNotifyErrors(t *testing.T) {
	if err := sdNotify("vsock:2:1234", "READY=1"); !errors.Is(err, errNotifyUnsupported) {
		t.Errorf("vsock address: err = %v, want errNotifyUnsupported", err)
	}
	if err := sdNotify(filepath.Join(t.TempDir(), "absent.sock"), "READY=1"); err == nil {
		t.Error("missing socket: err = nil, want an error")
	}
}

func TestNotifySocketFromEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	if got := notifySocket(); got != "/run/systemd/notify" {
		t.Errorf("notifySocket() = %q", got)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if got := notifySocket(); got != "" {
		t.Errorf("notifySocket() = %q, want empty", got)
	}
}
