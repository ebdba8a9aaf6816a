package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/lab"
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

// TestPodnetctlCommands runs every podnetctl command, as a table and as JSON,
// against real podnetds in the sandbox: two pods on node1, one on node2, the
// web service over two of them.
func TestPodnetctlCommands(t *testing.T) {
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n1 := l.Nodes[0]
	var pods []*lab.Pod
	for _, spec := range []struct {
		node *lab.Node
		name string
	}{{n1, "a"}, {n1, "b"}, {l.Nodes[1], "c"}} {
		p, err := l.AddPod(ctx, spec.node, spec.name)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	web := lab.Service{Name: "web", VIP: lab.WebVIP, Port: lab.WebPort, TargetPort: lab.WebTargetPort, Endpoints: []*lab.Pod{pods[0], pods[2]}}
	for _, p := range web.Endpoints {
		if err := l.ServeService(p, web.TargetPort); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ApplyServices(ctx, web); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(binDir, "podnetctl")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ctl, append([]string{"--socket", n1.Socket()}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("podnetctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	runJSON := func(v any, args ...string) {
		t.Helper()
		out := run(append([]string{"-o", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("podnetctl -o json %v: %v\n%s", args, err, out)
		}
	}

	var ipam api.IPAM
	runJSON(&ipam, "ipam")
	if len(ipam.Ranges) != 1 || ipam.Ranges[0].Range != "10.244.1.0/24" || ipam.Ranges[0].Used != 2 || len(ipam.Allocations) != 2 {
		t.Errorf("ipam = %+v", ipam)
	}
	if out := run("ipam"); !strings.Contains(out, "10.244.1.0/24  10.244.1.1  253   2     251") {
		t.Errorf("ipam table:\n%s", out)
	}

	var podList []api.Pod
	runJSON(&podList, "pods")
	if len(podList) != 2 || podList[0].Name != "a" || podList[1].Name != "b" || podList[0].Namespace != "default" ||
		podList[0].NetNS != pods[0].NS.Path || len(podList[0].Problems) != 0 || podList[0].Addresses[0] != pods[0].IP.String() {
		t.Errorf("pods = %+v", podList)
	}
	if out := run("pods"); !strings.Contains(out, "default/a") || !strings.Contains(out, pods[1].IP.String()) {
		t.Errorf("pods table:\n%s", out)
	}

	var routes api.Routes
	runJSON(&routes, "routes")
	want := api.Route{Dst: "10.244.2.0/24", Node: "node2", Via: l.Nodes[1].Addr.String(), Kernel: l.Nodes[1].Addr.String(), State: api.RouteOK}
	if len(routes.Routes) != 1 || routes.Routes[0] != want || routes.Drift != 0 {
		t.Errorf("routes = %+v, want %+v", routes, want)
	}
	if out := run("routes"); !strings.Contains(out, "no drift") {
		t.Errorf("routes table:\n%s", out)
	}

	if out := run("services"); !strings.Contains(out, "default/web") || !strings.Contains(out, pods[2].IP.String()+":8080") {
		t.Errorf("services table:\n%s", out)
	}

	// The table as podnetd reads it over netlink is the table as nft lists it.
	nftText := run("nft")
	cmd := exec.CommandContext(ctx, "/usr/sbin/nft", "list", "table", "inet", "podnet")
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := n1.NS.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if nftText != stdout.String() || !strings.Contains(nftText, "10.96.0.10 . tcp . 80 : goto lb-v4-2") {
		t.Errorf("podnetctl nft:\n%s\nnft list:\n%s", nftText, stdout.String())
	}
	var nftView api.NFT
	runJSON(&nftView, "nft")
	if nftView.Table != "inet podnet" || len(nftView.Rules) == 0 || nftView.Rules[0].Handle == 0 {
		t.Errorf("nft json: table %q, %d rules", nftView.Table, len(nftView.Rules))
	}

	// Trace, with flags after the command: pod a → web, confirmed by nftrace.
	var tr api.Trace
	runJSON(&tr, "trace", "--from", "default/a", "--to", "web")
	if tr.Outcome != api.TraceDelivered || len(tr.Endpoints) != 2 || tr.Probe == nil || !tr.Probe.Agrees || tr.Probe.DNAT == "" {
		t.Errorf("trace = %+v, probe %+v", tr, tr.Probe)
	}
	if out := run("trace", "--from", "default/b", "--to", pods[2].IP.String()+":8080", "--no-probe"); !strings.Contains(out, "to node node2 via "+l.Nodes[1].Addr.String()) ||
		!strings.Contains(out, "probe: not sent (--no-probe)") {
		t.Errorf("trace table:\n%s", out)
	}
}

// TestSocketRefusesStrangers: podnetctl run by another user than root is
// refused, with a message that says so.
func TestSocketRefusesStrangers(t *testing.T) {
	l := newLab(t, 1)
	dir, err := os.MkdirTemp("", "podnetctl-") // t.TempDir's parent is root's only
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(filepath.Join(binDir, "podnetctl"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "podnetctl")
	if err := os.WriteFile(ctl, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ctl, "--socket", l.Nodes[0].Socket(), "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "access denied") || !strings.Contains(string(out), "run as root") {
		t.Errorf("podnetctl as nobody: err=%v\n%s", err, out)
	}
}

// TestMalformedRequestsToDaemon: bad requests to a real podnetd get a 4xx
// JSON error and change nothing (the allocation count and sync count stay).
func TestMalformedRequestsToDaemon(t *testing.T) {
	l := newLab(t, 1)
	n := l.Nodes[0]
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", n.Socket())
		}}}
	before, err := client.New(n.Socket(), 5*time.Second).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/cni", `{"command":"ADD",`, http.StatusBadRequest},
		{"POST", "/v1/cni", `{"command":"ADD","containerID":"x","ifName":"eth0","config":{}}`, http.StatusBadRequest},
		{"GET", "/v1/trace?from=nosuchpod&to=10.244.1.5", "", http.StatusBadRequest},
		{"GET", "/v1/routes?x=1", "", http.StatusBadRequest},
		{"GET", "/v1/nothing", "", http.StatusNotFound},
		{"PUT", "/v1/ipam", "", http.StatusMethodNotAllowed},
		{"GET", "/v1/status?" + strings.Repeat("x", 40000), "", http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, _ := http.NewRequest(tt.method, "http://podnetd"+tt.path, strings.NewReader(tt.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %.40s: %v", tt.method, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %.40s: HTTP %d, want %d: %s", tt.method, tt.path, resp.StatusCode, tt.status, body)
		}
	}
	after, err := client.New(n.Socket(), 5*time.Second).Status(context.Background())
	if err != nil || after.Allocations != before.Allocations || !after.Ready {
		t.Errorf("after bad requests: %+v, %v (before %+v)", after, err, before)
	}
}
