package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

// envAccessClient makes the test binary act as a client of the socket named
// by its value (see accessClientMain): the tests start it as another user.
const envAccessClient = "PODNET_TEST_ACCESS_CLIENT"

func init() {
	if socket := os.Getenv(envAccessClient); socket != "" {
		os.Exit(accessClientMain(socket))
	}
}

// accessResult is what the client process saw, one entry per call.
type accessResult struct {
	Status, CNI, Trace string // "ok" or the error
	Probe              string // the trace's probe verdict when it was ok
}

// accessClientMain calls GET /v1/status, POST /v1/cni and GET /v1/trace and
// prints what happened as JSON.
func accessClientMain(socket string) int {
	c := client.New(socket, 5*time.Second)
	ctx := context.Background()
	var r accessResult
	errText := func(err error) string {
		if err == nil {
			return "ok"
		}
		if errors.Is(err, api.ErrAccessDenied) {
			return "denied: " + err.Error()
		}
		return err.Error()
	}
	_, err := c.Status(ctx)
	r.Status = errText(err)
	_, err = c.CNI(ctx, api.CNIRequest{Command: "STATUS", Config: json.RawMessage(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet"}`)})
	r.CNI = errText(err)
	tr, err := c.Trace(ctx, api.TraceQuery{From: "10.244.0.99", To: "10.244.1.5:80"})
	r.Trace = errText(err)
	if err == nil && tr.Probe != nil {
		r.Probe = tr.Probe.Skipped
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	return 0
}

// runAs runs the access client as uid/gid with the supplementary groups.
func runAs(t *testing.T, socket string, uid, gid uint32, groups ...uint32) accessResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, readableTestBinary(t))
	cmd.Env = append(os.Environ(), envAccessClient+"="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("access client as %d: %v\n%s", uid, err, out)
	}
	var r accessResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("access client output %q: %v", out, err)
	}
	return r
}

// readableTestBinary copies the test binary where any user may run it (go
// test builds it in a directory only root can read).
func readableTestBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "podnet-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "access-client")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// serveSocket runs td's API on its real unix socket in a directory anyone may
// traverse, until the test ends.
func serveSocket(t *testing.T, td *testDaemon) {
	t.Helper()
	for dir := filepath.Dir(td.cfg.Socket); dir != "/"; dir = filepath.Dir(dir) {
		if strings.HasPrefix(dir, os.TempDir()+"/") {
			os.Chmod(dir, 0o755)
		}
	}
	ln, err := listen(td.cfg.Socket, td.socketGID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { td.serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSocketAccess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs clients as other users")
	}
	const nobody, group = 65534, 4242
	td := newTestDaemon(t, func(c *Config) { c.SocketGroup = fmt.Sprint(group) })
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	serveSocket(t, td)
	fi, err := os.Stat(td.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Gid != group {
		t.Errorf("socket mode %v gid %d, want 0660 and gid %d", fi.Mode().Perm(), st.Gid, group)
	}

	t.Run("stranger cannot open the socket", func(t *testing.T) {
		r := runAs(t, td.cfg.Socket, nobody, nobody)
		if !strings.HasPrefix(r.Status, "denied: ") || !strings.Contains(r.Status, "permission denied") {
			t.Errorf("status as nobody = %q, want access denied by the socket's mode", r.Status)
		}
	})
	t.Run("group member reads, but may not call CNI or probe", func(t *testing.T) {
		r := runAs(t, td.cfg.Socket, nobody, nobody, group)
		if r.Status != "ok" {
			t.Errorf("status as a member = %q, want ok", r.Status)
		}
		if !strings.HasPrefix(r.CNI, "denied: ") || !strings.Contains(r.CNI, "needs root") {
			t.Errorf("CNI as a member = %q, want denied: needs root", r.CNI)
		}
		if r.Trace != "ok" || !strings.Contains(r.Probe, "needs root") {
			t.Errorf("trace as a member = %q (probe %q), want ok with the probe skipped", r.Trace, r.Probe)
		}
	})
	t.Run("peer credentials refuse a stranger when the mode is loosened", func(t *testing.T) {
		if err := os.Chmod(td.cfg.Socket, 0o666); err != nil {
			t.Fatal(err)
		}
		r := runAs(t, td.cfg.Socket, nobody, nobody)
		for name, got := range map[string]string{"status": r.Status, "CNI": r.CNI, "trace": r.Trace} {
			if !strings.HasPrefix(got, "denied: ") || !strings.Contains(got, "uid 65534 is not allowed") {
				t.Errorf("%s as nobody = %q, want refused by SO_PEERCRED", name, got)
			}
		}
	})
	t.Run("root may do everything", func(t *testing.T) {
		r := runAs(t, td.cfg.Socket, 0, 0)
		if r.Status != "ok" || r.CNI != "ok" || r.Trace != "ok" {
			t.Errorf("as root: %+v, want all ok", r)
		}
	})
}

func TestAccessOf(t *testing.T) {
	tests := []struct {
		name  string
		p     peer
		group int
		want  access
	}{
		{"root", peer{uid: 0}, -1, accessRoot},
		{"stranger, no group", peer{uid: 1000, gid: 1000}, -1, accessNone},
		{"primary group", peer{uid: 1000, gid: 42}, 42, accessRead},
		{"supplementary group", peer{uid: 1000, gid: 1000, groups: []uint32{7, 42}}, 42, accessRead},
		{"other groups", peer{uid: 1000, gid: 1000, groups: []uint32{7}}, 42, accessNone},
		{"unreadable credentials", peer{err: errors.New("x")}, 42, accessNone},
	}
	for _, tt := range tests {
		if got := accessOf(tt.p, tt.group); got != tt.want {
			t.Errorf("%s: accessOf = %d, want %d", tt.name, got, tt.want)
		}
	}
}
