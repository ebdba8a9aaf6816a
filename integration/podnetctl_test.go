package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/podnet/podnet/daemon/api"
)

// TestPodnetctlStatus runs the real podnetctl against a lab node's daemon: a
// table, JSON, and a clear error once the daemon is down.
func TestPodnetctlStatus(t *testing.T) {
	l := newLab(t, 2)
	n := l.Nodes[0]
	ctl := filepath.Join(binDir, "podnetctl")
	out, err := exec.Command(ctl, "--socket", n.Socket(), "status").CombinedOutput()
	if err != nil {
		t.Fatalf("podnetctl status: %v\n%s", err, out)
	}
	for _, want := range []string{"node:", "node1", "ready:", "true", "10.244.1.0/24", "peers:"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("status table lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(ctl, "--socket", n.Socket(), "-o", "json", "status").Output()
	if err != nil {
		t.Fatal(err)
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if st.Node != "node1" || !st.Ready || st.Peers != 1 || st.Routes != 1 {
		t.Fatalf("status = %+v", st)
	}
	l.StopDaemon(n, syscall.SIGTERM)
	out, err = exec.Command(ctl, "--socket", n.Socket(), "status").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not running or not reachable at "+n.Socket()) {
		t.Fatalf("with daemon down: err=%v out=%s", err, out)
	}
}
