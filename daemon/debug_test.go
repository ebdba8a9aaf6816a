package daemon

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/routing"
)

// syncedDaemon is a test daemon on node-a of threeNodes, synced, with pods
// c1 (default/web-1) and c2 (default/web-2) attached.
func syncedDaemon(t *testing.T) *testDaemon {
	t.Helper()
	td := newTestDaemon(t, nil)
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"c1", "c2"} {
		req := cniReq("ADD", id)
		req.NetNS = filepath.Join(t.TempDir(), "netns-"+id)
		if err := os.WriteFile(req.NetNS, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		req.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-" + string(rune('1'+i)) + ";K8S_POD_INFRA_CONTAINER_ID=" + id
		if _, cerr := td.cni.Serve(req); cerr != nil {
			t.Fatal(cerr)
		}
	}
	return td
}

func TestPodsView(t *testing.T) {
	td := syncedDaemon(t)
	// c2's namespace disappears; a veth with no record nor address appears
	// (a pod attached by a podnetd that crashed before recording it).
	var c2 podRecord
	for _, r := range td.pods.list() {
		if r.ContainerID == "c2" {
			c2 = r
		}
	}
	os.Remove(c2.NetNS)
	td.cni.pods.remove("c3", "eth0")
	td.kernel.Pods["pnorphan"] = podWith("c3")

	pods, err := td.podsView()
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Pod{
		{ContainerID: "c3", IfName: "eth0", HostVeth: "pnorphan", Addresses: []string{},
			Problems: []string{"no address allocated", "no record of its CNI ADD (namespace and name unknown)"}},
		{ContainerID: "c1", IfName: "eth0", Namespace: "default", Name: "web-1", Addresses: []string{"10.244.0.2"}},
		{ContainerID: "c2", IfName: "eth0", Namespace: "default", Name: "web-2", Addresses: []string{"10.244.0.3"},
			Problems: []string{"network namespace " + c2.NetNS + " is gone"}},
	}
	opts := cmp.Options{cmpopts.IgnoreFields(api.Pod{}, "Created", "NetNS", "HostVeth")}
	if diff := cmp.Diff(want, pods, opts); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	if pods[1].HostVeth == "" || pods[1].Created.IsZero() || !strings.HasPrefix(pods[1].NetNS, os.TempDir()) {
		t.Errorf("c1 = %+v, want its veth, creation time and netns", pods[1])
	}

	// DEL removes the record; GC removes records of attachments not kept.
	if _, cerr := td.cni.Serve(cniReq("DEL", "c1")); cerr != nil {
		t.Fatal(cerr)
	}
	if _, cerr := td.cni.Serve(gcReq(t, "cni.dev/valid-attachments")); cerr != nil {
		t.Fatal(cerr)
	}
	if recs := td.pods.list(); len(recs) != 0 {
		t.Errorf("records after DEL and GC = %+v, want none", recs)
	}
	files, _ := filepath.Glob(filepath.Join(td.cfg.StateDir, "pods", "*"))
	if len(files) != 0 {
		t.Errorf("record files left: %v", files)
	}
}

func TestPodRecordsSurviveRestart(t *testing.T) {
	td := syncedDaemon(t)
	s, err := openPodStore(filepath.Join(td.cfg.StateDir, "pods"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(td.pods.list(), s.list()); diff != "" || len(s.list()) != 2 {
		t.Errorf("reloaded records (-before +after):\n%s", diff)
	}
	// A corrupt record is reported, the others kept.
	os.WriteFile(filepath.Join(td.cfg.StateDir, "pods", "bad.json"), []byte("{"), 0o600)
	s, err = openPodStore(filepath.Join(td.cfg.StateDir, "pods"))
	if err == nil || s == nil || len(s.list()) != 2 {
		t.Errorf("with a corrupt record: %v, %d records; want an error and 2 records", err, len(s.list()))
	}
}

func TestRoutesView(t *testing.T) {
	td := syncedDaemon(t)
	v, err := td.routesView()
	if err != nil {
		t.Fatal(err)
	}
	want := api.Routes{Routes: []api.Route{
		{Dst: "10.244.1.0/24", Node: "node-b", Via: "192.168.1.11", Kernel: "192.168.1.11", State: api.RouteOK},
		{Dst: "10.244.2.0/24", Node: "node-c", Via: "192.168.1.12", Kernel: "192.168.1.12", State: api.RouteOK},
	}}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	// Drift: one route gone, one through another gateway, one extra.
	td.kernel.Routes[prefix("10.244.2.0/24")] = addr("192.168.1.99")
	delete(td.kernel.Routes, prefix("10.244.1.0/24"))
	td.kernel.Routes[prefix("10.250.0.0/24")] = addr("192.168.1.50")
	v, err = td.routesView()
	if err != nil {
		t.Fatal(err)
	}
	want = api.Routes{Drift: 3, Routes: []api.Route{
		{Dst: "10.250.0.0/24", Kernel: "192.168.1.50", State: api.RouteExtra},
		{Dst: "10.244.1.0/24", Node: "node-b", Via: "192.168.1.11", State: api.RouteMissing},
		{Dst: "10.244.2.0/24", Node: "node-c", Via: "192.168.1.12", Kernel: "192.168.1.99", State: api.RouteWrong},
	}}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("routes with drift (-want +got):\n%s", diff)
	}
	// The next sync repairs it.
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	if v, _ := td.routesView(); v.Drift != 0 {
		t.Errorf("drift after a sync = %+v", v)
	}
}

// TestMalformedRequests: every bad request gets a 4xx JSON error and changes
// nothing.
func TestMalformedRequests(t *testing.T) {
	td := syncedDaemon(t)
	srv := rootServer(t, td.Daemon)
	before := td.Status()
	tests := []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/v1/nothing", http.StatusNotFound, "no such endpoint"},
		{"GET", "/v2/status", http.StatusNotFound, "no such endpoint"},
		{"DELETE", "/v1/status", http.StatusMethodNotAllowed, "takes GET"},
		{"GET", "/v1/cni", http.StatusMethodNotAllowed, "takes POST"},
		{"GET", "/v1/status?verbose=1", http.StatusBadRequest, "takes no query parameters"},
		{"GET", "/v1/trace?from=c1&to=10.244.1.5&extra=1", http.StatusBadRequest, `unknown parameter "extra"`},
		{"GET", "/v1/trace?from=c1&to=10.244.1.5&probe=maybe", http.StatusBadRequest, "probe: want true or false"},
		{"GET", "/v1/trace?to=10.244.1.5", http.StatusBadRequest, "--from is required"},
		{"GET", "/v1/trace?from=c1", http.StatusBadRequest, "--to is required"},
		{"GET", "/v1/trace?from=nosuchpod&to=10.244.1.5", http.StatusBadRequest, `no pod "nosuchpod"`},
		{"GET", "/v1/trace?from=c1&to=10.244.1.5:99999", http.StatusBadRequest, "want 1..65535"},
		{"GET", "/v1/trace?from=c1&to=10.244.1.5/icmp", http.StatusBadRequest, "want tcp, udp or sctp"},
		{"GET", "/v1/trace?from=c1&to=nosuchservice", http.StatusBadRequest, "no service"},
		{"GET", "/v1/trace?from=c1&to=fd00::1", http.StatusBadRequest, "no address of the destination's family"},
		{"GET", "/v1/trace?from=c1&to=" + strings.Repeat("a", 40000), http.StatusRequestHeaderFieldsTooLarge, ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %.60s: HTTP %d, want %d (%s)", tt.method, tt.path, resp.StatusCode, tt.status, body)
			continue
		}
		if tt.want == "" {
			continue
		}
		var e api.Error
		if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Msg+": "+e.Details, tt.want) {
			t.Errorf("%s %s: body %s, want a JSON error containing %q", tt.method, tt.path, body, tt.want)
		}
	}
	after := td.Status()
	if before.Syncs != after.Syncs || before.Allocations != after.Allocations {
		t.Errorf("bad requests changed the daemon: before %+v after %+v", before, after)
	}
}

// podWith is a fake kernel's attachment of containerID's eth0.
func podWith(containerID string) routing.Pod {
	return routing.Pod{ContainerID: containerID, IfName: "eth0", HostVeth: "pnorphan"}
}

// TestPodsViewHostPorts: a pod's hostPorts, from its record, show in its row.
func TestPodsViewHostPorts(t *testing.T) {
	td := syncedDaemon(t)
	for _, r := range td.pods.list() {
		if r.ContainerID == "c1" {
			r.PortMappings = []portMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "TCP"}, {HostPort: 53, ContainerPort: 5353, Protocol: "UDP", HostIP: "192.168.1.10"}}
			if err := td.pods.put(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	pods, err := td.podsView()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"*:8080/TCP → 80", "192.168.1.10:53/UDP → 5353"}
	if diff := cmp.Diff(want, pods[0].HostPorts); diff != "" || pods[0].ContainerID != "c1" {
		t.Errorf("c1's hostPorts (-want +got):\n%s", diff)
	}
}
